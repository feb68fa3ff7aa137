"""Shared fixtures: tiny grids on synthetic data, so CPU tests take seconds.

torch._dynamo is imported here, once: pytester's in-process runs restore sys.modules afterwards, and a
dynamo imported lazily inside one of them (an optimizer step imports it) would be imported again by the
next and fail registering its torch library twice.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401
from helpers import write_grid

from mupcheck.engine.runlog import RunLog

# Ray starts its workers at niceness 15. Beside two CPU-bound processes of normal priority (issue 26's
# stress run) they got about 1% of a core and the Ray tests crawled for tens of minutes. Every Ray cluster
# the tests start (ray.init here, `ray start` and `mupcheck run --backend ray` in subprocesses) inherits this.
os.environ.setdefault("RAY_worker_niceness", "0")


@pytest.fixture
def tiny_grid(tmp_path: Path) -> Path:
    return write_grid(tmp_path)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`user_module(name, source)` writes a user-model module importable from tmp_path; each test
    imports it afresh, and it is forgotten after the test."""
    names = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop(name, None)
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def step_losses(monkeypatch: pytest.MonkeyPatch) -> dict[tuple, float]:
    """Every (run config, step) -> training loss seen by the divergence test, for solo and batched runs alike."""
    seen: dict[tuple, float] = {}
    observe = RunLog.observe

    def spy(self, step, value):
        seen[(self.cfg, step)] = value
        return observe(self, step, value)

    monkeypatch.setattr(RunLog, "observe", spy)
    return seen


@pytest.fixture
def one_ray_test_at_a_time():
    """An exclusive lock across xdist workers, held for the test: Ray tests start clusters and kill their
    workers on cue, and two of them at once on a 2-core machine starve each other. (pytest-xdist's
    `xdist_group` would keep them on one worker, but under pytest 9 it groups nothing: its node-id suffix is
    ignored.) The lock is released by the kernel if the worker dies."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "mupcheck-ray-tests.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests compare numbers across processes; a fixed thread count keeps CPU reductions identical.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
