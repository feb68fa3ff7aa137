"""A duration sweep killed in the middle of a shared run resumes it from the state it saved, and stores the
same numbers as the budgets trained alone (issue 44)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_until

from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid
from mupcheck.store import Store
from mupcheck.sweep.local import run_grid

TESTS = str(Path(__file__).resolve().parents[1])

GRID = """\
name = "resume"
model = "gpt"
parametrization = ["mup"]
widths = [16]
depth = 1
head_dim = 8
tokens = [2048, 8192, 131072]
batch_size = 2
seq_len = 16
lr_log2 = [-7]
seeds = [0]
data = "synthetic"
eval_tokens = 64
device = "cpu"
schedule = "wsd"
warmup_tokens = 256
"""


def _records(store: Path, grid: Path) -> dict:
    """tokens -> the stored result (None: not stored)."""
    plan = plan_grid(load_grid(grid))
    records = {c.tokens: Store(store).load(plan.key(c)) for c in plan.configs}
    return {tokens: r.result if r is not None else None for tokens, r in records.items()}


def test_a_killed_sweep_resumes_its_shared_run_and_stores_what_the_budgets_give_alone(tmp_path):
    grid = tmp_path / "resume.toml"
    grid.write_text(GRID)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "mupcheck", "run", str(grid), "--store", str(store), "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The shared run saves its state where the shortest budget's decay branches off (its first state), then
    # trains on toward 131072 tokens (4096 steps): killed then, it has work left.
    states = store / "shared-runs"
    saved = wait_until(lambda: any(states.glob("*/step-*.pt")), alive=lambda: proc.poll() is None)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert saved, "the sweep ended before it saved a state"
    assert _records(store, grid)[131072] is None
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the shared run at step" in resumed.stderr
    assert not states.exists()  # removed once every budget is stored
    alone_grid = tmp_path / "alone.toml"
    alone_grid.write_text(GRID + "share_runs = false\n")
    run_grid(load_grid(alone_grid), Store(tmp_path / "alone"), show_progress=False)
    shared, alone = _records(store, grid), _records(tmp_path / "alone", alone_grid)
    assert set(shared) == set(alone) == {2048, 8192, 131072}
    for tokens in shared:
        assert shared[tokens].checkpoints == alone[tokens].checkpoints  # bit for bit
        assert shared[tokens].shared is not None and alone[tokens].shared is None
