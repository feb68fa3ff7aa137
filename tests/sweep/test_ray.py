"""The Ray backend on a local cluster: the same records and verdicts as a local sweep, a killed worker
retried without losing or duplicating a run, a killed driver resumed. Marked `ray`; skipped without Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import wait_until, write_grid

from mupcheck.errors import MupcheckError
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid
from mupcheck.store import Store
from mupcheck.sweep import ray_backend
from mupcheck.sweep.local import run_grid
from mupcheck.sweep.progress import SweepSummary

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_ray_test_at_a_time")]

TESTS = str(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (two CPUs), as a laptop or a test would start it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}})
    yield
    ray.shutdown()


def test_the_clusters_workers_run_at_normal_priority(cluster):
    """conftest sets RAY_worker_niceness=0: at Ray's default (15) the workers starved beside two CPU-bound
    processes and the Ray tests crawled (issue 26)."""
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == 0


def _losses(store: Store, plan) -> dict[str, float | None]:
    return {plan.key(c): store.load(plan.key(c)).result.loss for c in plan.configs}


def test_ray_sweep_stores_what_a_local_sweep_stores(cluster, tmp_path):
    grid = load_grid(write_grid(tmp_path))
    local, remote = Store(tmp_path / "local"), Store(tmp_path / "ray")
    assert run_grid(grid, local, show_progress=False).trained == 8
    summary = run_grid(grid, remote, show_progress=False, backend="ray")
    assert summary.trained == 8 and not summary.failed
    plan = plan_grid(grid)
    a, b = _losses(local, plan), _losses(remote, plan)
    assert a.keys() == b.keys() and all(b[k] == pytest.approx(a[k], rel=1e-5) for k in a)
    outcomes = [[o.outcome for o in GridSuite(plan, s).outcomes()] for s in (local, remote)]
    assert outcomes[0] == outcomes[1]
    again = run_grid(grid, remote, show_progress=False, backend="ray")  # nothing left to do
    assert again.trained == 0 and again.reused == 8


def test_a_trainer_grid_runs_on_ray_as_it_runs_here(cluster, tmp_path):
    """Issue 43: the team's own training script as the grid's trainer, each run a process of its own in a Ray
    task: the same losses as a sweep on this machine (CPU, deterministic)."""
    from test_command_trainer import _grid, _losses

    path = _grid(tmp_path / "g")
    local, remote = Store(tmp_path / "local"), Store(tmp_path / "ray")
    assert run_grid(load_grid(path), local, device="cpu", show_progress=False).trained == 4
    summary = run_grid(load_grid(path), remote, device="cpu", show_progress=False, backend="ray")
    assert summary.trained == 4 and not summary.failed
    assert _losses(path, local) == _losses(path, remote) and None not in _losses(path, remote).values()


def test_local_and_ray_sweeps_from_the_command_line_agree_key_for_key(tmp_path):
    """`mupcheck run` (one process per core) and `mupcheck run --backend ray` (one CPU per task) store the same
    numbers under the same keys: every CPU run trains on one thread (issue 28: 111 of the smoke grid's 144
    losses differed under the same keys, by up to 0.099, when local runs used two threads). Rates up to 2^-3,
    near instability, where any difference in the arithmetic grows."""
    path = write_grid(tmp_path)
    path.write_text(path.read_text().replace("lr_log2 = [-8, -6]", "lr_log2 = [-8, -6, -4, -3]"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
    for args in (["--store", str(tmp_path / "local")], ["--store", str(tmp_path / "ray"), "--backend", "ray"]):
        done = subprocess.run([sys.executable, "-m", "mupcheck", "run", str(path), "--no-progress", *args],
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
    local, remote = ({r.key: r.result for r in Store(tmp_path / name).records()} for name in ("local", "ray"))
    assert local.keys() == remote.keys() and len(local) == 16
    for key, result in local.items():
        assert (result.status, result.loss, result.train_loss) == (remote[key].status, remote[key].loss,
                                                                   remote[key].train_loss), key
        assert result.device == remote[key].device == "cpu: 1 thread(s)"


def test_a_group_is_split_over_the_clusters_devices(cluster, tmp_path):
    """Eight runs that form one batched group, on a cluster of two CPUs: two tasks of four runs."""
    path = write_grid(tmp_path, parametrization='["mup"]')
    path.write_text(path.read_text().replace("widths = [16, 32]", "widths = [16]")
                    .replace("lr_log2 = [-8, -6]", "lr_log2 = [-9, -8, -7, -6, -5, -4, -3, -2]"))
    grid, store = load_grid(path), Store(tmp_path / "store")
    assert run_grid(grid, store, fuse=8, show_progress=False, backend="ray").trained == 8
    plan = plan_grid(grid)
    results = [store.load(plan.key(c)).result for c in plan.configs]
    assert {r.engine for r in results} == {"fused"} and {r.fused.members for r in results} == {4}


# A run long enough that a kill after half a CPU-second of its task lands while it trains, on any machine:
# 2048 steps, about 3 s on one free core of this project's machine (the short runs of a group finish first).
LONG = 8 * 32768


def _slow_grid(tmp_path: Path, tokens: int = 32768) -> Path:
    """Four runs of a second or more each (32768 tokens: about 1 s on one free core): time to kill one."""
    path = write_grid(tmp_path, name="slow.toml")
    path.write_text(path.read_text().replace("tokens = [2048]", f"tokens = [{tokens}]")
                    .replace('parametrization = ["mup", "sp"]', 'parametrization = ["mup"]'))
    return path


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system), from /proc; -1 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> set[int]:
    """Every process below `root`, by the parent links in /proc: the Ray workers of the cluster this test process
    started, and never those of another session on the same machine (a second test run, a user's cluster)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we read
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _training(pid: int) -> bool:
    """Whether a Ray worker is executing our task now (Ray titles a busy worker after its task)."""
    try:
        return "ray::_train_task" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def _kill_a_worker_mid_task(sweep: threading.Thread) -> int:
    """SIGKILL a Ray worker that has trained for half a CPU-second and is still in its task; its pid. Checked just
    before the kill: on a loaded machine a task can finish while we wait, and killing an idle worker would
    retry nothing (CI once saw exactly that with a fixed wait). Waits on the worker's CPU time, not on the
    clock, for as long as the sweep runs."""
    while sweep.is_alive():
        ours = _descendants(os.getpid())
        found = subprocess.run(["pgrep", "-f", "ray::_train_task"], capture_output=True, text=True).stdout.split()
        for pid in (p for p in map(int, found) if p in ours):
            start = _cpu_seconds(pid)
            wait_until(lambda pid=pid, start=start: not _training(pid) or _cpu_seconds(pid) >= start + 0.5,
                       alive=sweep.is_alive)
            if _training(pid):
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.1)
    raise AssertionError("the sweep ended before a Ray worker was seen mid-task")


def _sweep_in_thread(plan, store: Store, fuse: int) -> tuple[threading.Thread, SweepSummary, dict[int, list[int]]]:
    """A Ray sweep started in a thread (the test kills a worker meanwhile): the thread, the summary it
    fills, and the attempts of each task (worker pids)."""
    summary, attempts = SweepSummary(total=len(plan.configs)), {}
    thread = threading.Thread(target=ray_backend.run_on_ray, args=(
        plan, store, summary, lambda e: summary.record(e[2], e[3], e[4]) if e[0] == "done" else None, fuse, False,
        None), kwargs={"attempts_out": attempts})
    thread.start()
    return thread, summary, attempts


def test_a_killed_worker_is_retried_and_no_run_is_lost_or_trained_twice(cluster, tmp_path, capsys):
    grid = load_grid(_slow_grid(tmp_path, tokens=LONG))
    store = Store(tmp_path / "store")
    thread, summary, attempts = _sweep_in_thread(plan_grid(grid), store, fuse=1)
    victim = _kill_a_worker_mid_task(thread)
    thread.join()
    assert summary.trained == 4 and not summary.failed
    assert len(list(store.runs_dir.glob("*.json"))) == 4  # every run once
    assert sum(len(p) for p in attempts.values()) == 5  # four tasks, one retried
    assert any(pids[0] == victim and len(pids) == 2 for pids in attempts.values())  # the retried one is ours
    assert "Ray retried 1 task attempt(s) whose worker died" in capsys.readouterr().err


def test_a_retried_group_trains_only_the_runs_it_had_not_finished(cluster, tmp_path):
    """A batched group sends each run as it finishes. Two groups of a short (16 steps) and a long run
    (1024 steps); once both short runs are stored, a worker is killed: its retry trains its long run alone,
    and the short run it had finished is neither lost nor trained again."""
    path = _slow_grid(tmp_path)
    path.write_text(path.read_text().replace("widths = [16, 32]", "widths = [16]")
                    .replace("tokens = [32768]", f"tokens = [2048, {LONG}]"))
    plan, store = plan_grid(load_grid(path)), Store(tmp_path / "store")
    thread, summary, attempts = _sweep_in_thread(plan, store, fuse=8)
    assert wait_until(lambda: len(list(store.runs_dir.glob("*.json"))) >= 2, alive=thread.is_alive)
    short = {p: p.stat().st_mtime_ns for p in store.runs_dir.glob("*.json")}
    victim = _kill_a_worker_mid_task(thread)
    thread.join()
    assert summary.trained == 4 and not summary.failed
    assert len(short) == 2 and all(p.stat().st_mtime_ns == t for p, t in short.items())  # not trained again
    assert sorted(len(pids) for pids in attempts.values()) == [1, 2]
    assert any(pids[0] == victim for pids in attempts.values())
    results = {c.tokens: [] for c in plan.configs}
    for c in plan.configs:
        results[c.tokens].append(store.load(plan.key(c)).result)
    assert all(r.engine == "fused" and r.fused.members == 2 for r in results[2048])
    assert sorted(r.engine for r in results[LONG]) == ["fused", "solo"]  # the retry's run, alone


def test_a_task_that_fails_is_recorded_with_its_error_and_the_sweep_goes_on(cluster, tmp_path, capsys):
    """The data folder is there when the driver plans and gone when the workers load it: every task raises
    (not retried: an error in the task is not a dead worker), every run's failure is recorded with the
    error, no run is stored, and the sweep returns instead of stopping at the first failure."""
    import json

    import numpy as np

    data = tmp_path / "tokens"
    data.mkdir()
    for name in ("train", "val"):
        np.save(data / f"{name}.npy", np.random.default_rng(0).integers(0, 64, 20000))
    path = write_grid(tmp_path, extra=f'data = "{data}"\n')
    path.write_text(path.read_text().replace('data = "synthetic"\n', ""))
    plan = plan_grid(load_grid(path))
    data.rename(tmp_path / "gone")
    store, events, attempts = Store(tmp_path / "store"), [], {}
    summary = SweepSummary(total=len(plan.configs))
    ray_backend.run_on_ray(plan, store, summary, events.append, 1, False, None, attempts_out=attempts)
    failed = [e for e in events if e[0] == "failed"]
    assert len(failed) == len(plan.configs) == 8 and not list(store.runs_dir.glob("*.json"))
    records = [json.loads(p.read_text()) for p in (store.root / "failures").glob("*.json")]
    assert len(records) == 8 and all("does not exist" in r["error"] and r["backend"] == "ray" for r in records)
    assert sum(len(p) for p in attempts.values()) == 8  # one attempt per task: exceptions are not retried
    assert "the sweep goes on" in capsys.readouterr().err


def test_a_killed_driver_resumes_where_it_stopped(tmp_path):
    grid, store = _slow_grid(tmp_path), tmp_path / "store"
    cmd = [sys.executable, "-m", "mupcheck", "run", str(grid), "--backend", "ray", "--store", str(store),
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = store / "runs"
    assert wait_until(lambda: len(list(runs.glob("*.json"))) >= 1, alive=lambda: proc.poll() is None)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
    proc.communicate()
    finished = len(list(runs.glob("*.json")))
    assert 1 <= finished < 4
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert f"({4 - finished} trained, {finished} reused" in again.stdout
    assert len(list(runs.glob("*.json"))) == 4


def test_without_ray_the_backend_is_one_clear_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(MupcheckError, match=r"needs Ray, which is not installed: pip install 'mupcheck\[ray\]'"):
        ray_backend.import_ray()
