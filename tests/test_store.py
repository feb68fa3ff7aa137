"""The result store: keys, atomic records, corrupt records, resume after kill, concurrent writers."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys

import pytest
import torch
from helpers import fake_result, wait_until, write_grid

from mupcheck.plan import RunContext, plan_grid
from mupcheck.provenance import run_provenance
from mupcheck.spec import load_grid, run_configs
from mupcheck.store import CorruptRecordWarning, Store
from mupcheck.sweep.local import run_grid


def _ctx(**kw):
    base = dict(data_fingerprint="d", model_source="m", engine_source="e", device_type="cpu", mupcheck_version="0")
    return RunContext(**{**base, **kw})


def test_key_changes_with_everything_that_changes_a_result(tiny_grid):
    cfg = run_configs(load_grid(tiny_grid))[0]
    keys = {
        _ctx().key(cfg),
        _ctx().key(dataclasses.replace(cfg, lr_log2=-7.0)),
        _ctx(data_fingerprint="other").key(cfg),
        _ctx(model_source="other").key(cfg),
        _ctx(engine_source="other").key(cfg),
        _ctx(device_type="cuda").key(cfg),
        _ctx(mupcheck_version="1").key(cfg),
    }
    assert len(keys) == 7
    assert _ctx().key(cfg) == _ctx().key(dataclasses.replace(cfg))


def _train_counter(calls):
    def train():
        calls.append(1)
        return fake_result()
    return train


def test_save_is_atomic_and_readable(tmp_path, tiny_grid):
    store, cfg, calls = Store(tmp_path), run_configs(load_grid(tiny_grid))[0], []
    record, trained = store.get_or_train(_ctx().key(cfg), _ctx().key_material(cfg), _train_counter(calls))
    assert trained and calls == [1]
    again, trained = store.get_or_train(_ctx().key(cfg), _ctx().key_material(cfg), _train_counter(calls))
    assert not trained and calls == [1] and again == record
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [f"{record.key}.json"]  # no temp files left
    on_disk = json.loads(store.path(record.key).read_text())
    assert on_disk["key_material"]["config"]["lr_log2"] == cfg.lr_log2
    assert on_disk["provenance"]["torch"] == torch.__version__


def test_records_name_the_loaded_torch_build(monkeypatch):
    """torch's CUDA wheels on PyPI say '2.11.0' in their metadata; the loaded module says '2.11.0+cu130'."""
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    assert run_provenance()["torch"] == "2.11.0+cu130"


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"key": "wrong"}', "\xff\xfe"])
def test_corrupt_record_is_reported_moved_aside_and_rerun(tmp_path, tiny_grid, damage):
    store, cfg, calls = Store(tmp_path), run_configs(load_grid(tiny_grid))[0], []
    record, _ = store.get_or_train(_ctx().key(cfg), _ctx().key_material(cfg), _train_counter(calls))
    path = store.path(record.key)
    path.write_bytes(damage.encode("latin-1"))
    with pytest.warns(CorruptRecordWarning, match=re.escape(str(path))):
        _, trained = store.get_or_train(_ctx().key(cfg), _ctx().key_material(cfg), _train_counter(calls))
    assert trained and len(calls) == 2
    assert path.with_name(path.name + ".corrupt").read_bytes() == damage.encode("latin-1")  # kept for inspection


def test_claim_is_exclusive(tmp_path):
    store = Store(tmp_path)
    with store.claim("k", block=False) as first:
        assert first
        # flock is per open file description: a second open in this process contends like another process
        with store.claim("k", block=False) as second:
            assert not second


def test_sweep_resumes_and_reuses(tmp_path, tiny_grid):
    store = Store(tmp_path / "store")
    grid = load_grid(tiny_grid)
    first = run_grid(grid, store, show_progress=False)
    assert (first.trained, first.reused) == (8, 0)
    second = run_grid(grid, store, show_progress=False)
    assert (second.trained, second.reused) == (0, 8)
    plan = plan_grid(grid)
    store.path(plan.key(plan.configs[3])).unlink()
    third = run_grid(grid, store, show_progress=False)
    assert (third.trained, third.reused) == (1, 7)


def test_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    grid = load_grid(write_grid(tmp_path, extra="warmup = 0.0\n").as_posix())
    grid = dataclasses.replace(grid, lr_log2=(-8.0, 3.0))
    summary = run_grid(grid, Store(tmp_path / "s"), show_progress=False)
    assert summary.trained == 8 and summary.diverged >= 2  # lr 2^3 with Adam diverges for every cell
    statuses = [r.result.status for r in Store(tmp_path / "s").records()]
    assert statuses.count("ok") >= 4


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "mupcheck", "run", *args, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _trained(out: str) -> int:
    return int(re.search(r"\((\d+) trained", out).group(1))


def _slow_grid(tmp_path):
    # 8 runs of 64 steps each: long enough for a kill to land mid-sweep
    return write_grid(tmp_path, name="slow.toml", extra="").read_text().replace("tokens = [2048]", "tokens = [8192]")


def test_two_concurrent_sweeps_train_each_run_once(tmp_path):
    grid = tmp_path / "slow.toml"
    grid.write_text(_slow_grid(tmp_path))
    store = str(tmp_path / "store")
    procs = [_cli([str(grid), "--store", store]) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(_trained(out) for out, _ in outs) == 8
    assert len(list((tmp_path / "store" / "runs").glob("*.json"))) == 8


def test_workers_option_shares_the_sweep(tmp_path, tiny_grid):
    proc = _cli([str(tiny_grid), "--store", str(tmp_path / "s"), "--workers", "2"])
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "8/8 runs (8 trained, 0 reused, 0 diverged)" in out


def test_kill_9_then_rerun_redoes_only_unfinished_runs(tmp_path):
    grid = tmp_path / "slow.toml"
    grid.write_text(_slow_grid(tmp_path))
    runs = tmp_path / "store" / "runs"
    proc = _cli([str(grid), "--store", str(tmp_path / "store")])
    # Killed once two records are in: an event, however long the machine takes to get there.
    assert wait_until(lambda: len(list(runs.glob("*.json"))) >= 2, alive=lambda: proc.poll() is None)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    finished = {p: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert 2 <= len(finished) < 8
    rerun = _cli([str(grid), "--store", str(tmp_path / "store")])
    out, err = rerun.communicate()
    assert rerun.returncode == 0, err
    assert _trained(out) == 8 - len(finished)
    assert all(p.stat().st_mtime_ns == m for p, m in finished.items())  # finished runs untouched
    assert len(list(runs.glob("*.json"))) == 8


def test_store_location_flag_env_default(tmp_path, monkeypatch):
    from mupcheck.store import default_store_root

    monkeypatch.delenv("MUPCHECK_STORE", raising=False)
    assert default_store_root() == __import__("pathlib").Path(".mupcheck")
    monkeypatch.setenv("MUPCHECK_STORE", str(tmp_path / "env"))
    assert default_store_root() == tmp_path / "env"
    assert default_store_root(tmp_path / "flag") == tmp_path / "flag"  # --store wins


def test_budget_beyond_the_training_split_is_announced(tmp_path):
    import numpy as np

    from mupcheck.plan import repeated_data_warning

    data = tmp_path / "small"
    data.mkdir()
    np.save(data / "train.npy", np.arange(1500) % 256)
    np.save(data / "val.npy", np.arange(500) % 256)
    text = write_grid(tmp_path).read_text().replace('data = "synthetic"', f'data = "{data}"')
    (tmp_path / "small.toml").write_text(text)
    plan = plan_grid(load_grid(tmp_path / "small.toml"))
    message = repeated_data_warning(plan)
    assert message.startswith("WARNING: token budget 2K exceeds the training split")
    assert "runs see their data up to 1.37 times" in message
    summary = run_grid(load_grid(tmp_path / "small.toml"), Store(tmp_path / "s"), show_progress=False)
    assert summary.trained == 8
    assert all(r.result.data_repeats > 1 for r in Store(tmp_path / "s").records())
