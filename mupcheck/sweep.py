"""Sweeps: train every run of a grid that the store does not hold yet, in one or several processes.

    summary = run_grid(load_grid("grids/smoke.toml"), Store.open(), workers=2)
    print(summary.line())

Every worker walks the whole run list (each from a different starting point) and asks the store
for each run; the store's per-run lock makes sure no run is trained twice, and a run another
worker holds is retried at the end, so a worker that dies leaves its run to the others. Finished
runs are on disk as soon as they finish: an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm import tqdm

from mupcheck.data import TokenData, load_data
from mupcheck.grid import Grid, RunConfig, format_tokens, run_configs
from mupcheck.lint import lint_grid
from mupcheck.store import RunContext, Store
from mupcheck.train import resolve_device, train_run

__all__ = ["Plan", "plan_grid", "run_grid", "SweepSummary", "repeated_data_warning"]

Event = tuple  # ("start", worker, label) | ("step", worker, step, steps) | ("done", worker, key, trained, status)


@dataclass(frozen=True, eq=False)
class Plan:
    """A grid resolved against its data and device: the runs and the key of each."""

    grid: Grid
    data: TokenData
    device: torch.device
    context: RunContext
    configs: tuple[RunConfig, ...]

    def key(self, cfg: RunConfig) -> str:
        return self.context.key(cfg)


def plan_grid(grid: Grid, device: str | None = None) -> Plan:
    """Load the grid's data, resolve the device and compute every run's store key."""
    data = load_data(grid.data, grid.grid_dir, grid.vocab_size)
    dev = resolve_device(device or grid.device)
    return Plan(grid, data, dev, RunContext.for_grid(grid, data.fingerprint, dev), tuple(run_configs(grid)))


@dataclass
class SweepSummary:
    """What a sweep did: for each run key, whether this sweep trained it and its status."""

    total: int
    outcomes: dict[str, tuple[bool, str]] = field(default_factory=dict)  # key -> (trained now, status)
    wall_time_s: float = 0.0
    interrupted: bool = False

    def record(self, key: str, trained: bool, status: str) -> bool:
        """Note a finished run; True if it was not known yet. A 'trained' report wins over 'found'."""
        new = key not in self.outcomes
        if new or trained:
            self.outcomes[key] = (trained or self.outcomes.get(key, (False, ""))[0], status)
        return new

    @property
    def trained(self) -> int:
        return sum(t for t, _ in self.outcomes.values())

    @property
    def reused(self) -> int:
        return len(self.outcomes) - self.trained

    @property
    def diverged(self) -> int:
        return sum(s == "diverged" for _, s in self.outcomes.values())

    def line(self) -> str:
        verb = "interrupted after" if self.interrupted else "done:"
        return (f"{verb} {len(self.outcomes)}/{self.total} runs ({self.trained} trained, {self.reused} reused, "
                f"{self.diverged} diverged) in {_hms(self.wall_time_s)}")


def repeated_data_warning(plan: Plan) -> str | None:
    """A loud message when a token budget exceeds the training split."""
    n = len(plan.data.train)
    worst = max(plan.grid.tokens)
    if worst <= n:
        return None
    return (f"WARNING: token budget {format_tokens(worst)} exceeds the training split of {plan.data.description} "
            f"({n:,} tokens): runs see their data up to {worst / n:.2f} times. Repeated data changes the "
            "experiment; each record stores its `data_repeats`.")


def run_grid(grid: Grid, store: Store, device: str | None = None, workers: int = 1,
             show_progress: bool = True) -> SweepSummary:
    """Train the missing runs of `grid` into `store`; return counts of trained, reused and diverged runs."""
    start = time.perf_counter()
    plan = plan_grid(grid, device)
    warning = repeated_data_warning(plan)
    if warning:
        print(warning, file=sys.stderr)
    for finding in lint_grid(grid, plan.data):
        print(f"WARNING: muP lint: {finding}", file=sys.stderr)
    summary = SweepSummary(total=len(plan.configs))
    for cfg in plan.configs:
        record = store.load(plan.key(cfg))
        if record is not None:
            summary.record(record["key"], False, record["result"]["status"])
    bar = _ProgressBar(summary, enabled=show_progress)
    try:
        if len(summary.outcomes) < summary.total:
            if workers <= 1:
                _work(plan, store.root, 0, bar.handle)
            else:
                _run_workers(grid, str(plan.device), store.root, workers, bar.handle)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.wall_time_s = time.perf_counter() - start
    return summary


# --- workers ---------------------------------------------------------------------------------

def _work(plan: Plan, store_root: os.PathLike, worker: int, emit: Callable[[Event], None],
          n_workers: int = 1) -> None:
    """Train every missing run this process can claim; then wait for, or take over, the others."""
    store = Store(store_root)
    configs = list(plan.configs)
    shift = worker * len(configs) // max(1, n_workers)
    configs = configs[shift:] + configs[:shift]  # workers start at different places: less lock contention

    def train(cfg: RunConfig) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            emit(("start", worker, cfg.label()))
            return train_run(cfg, plan.data, plan.device, progress=lambda s, n: emit(("step", worker, s, n)))
        return go

    deferred = []
    for cfg in configs:
        record, trained = store.get_or_train(cfg, plan.context, train(cfg), block=False)
        if record is None:
            deferred.append(cfg)  # another process is training it right now
        else:
            emit(("done", worker, record["key"], trained, record["result"]["status"]))
    for cfg in deferred:
        record, trained = store.get_or_train(cfg, plan.context, train(cfg), block=True)
        emit(("done", worker, record["key"], trained, record["result"]["status"]))


def _worker_main(grid: Grid, device: str, store_root: os.PathLike, worker: int, n_workers: int, threads: int,
                 events: Any, parent: int) -> None:
    torch.set_num_threads(threads)

    def emit(event: Event) -> None:
        # A parent killed with SIGKILL cannot stop its children; they notice here and stop too.
        if os.getppid() != parent:
            raise SystemExit(1)
        events.put(event)

    try:
        # Each worker loads the data itself: cheaper than pickling a corpus through a pipe.
        _work(plan_grid(grid, device), store_root, worker, emit, n_workers)
    except KeyboardInterrupt:
        pass  # the parent reports the interruption; finished runs are already stored
    finally:
        events.put(("exit", worker))


def _run_workers(grid: Grid, device: str, store_root: os.PathLike, workers: int,
                 handle: Callable[[Event], None]) -> None:
    # spawn, not fork: a forked child inherits torch's thread pools in an undefined state.
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker_main, args=(grid, device, store_root, i, workers, threads, events, os.getpid()), daemon=True)
             for i in range(workers)]
    for p in procs:
        p.start()
    running = set(range(workers))
    try:
        while running:
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                dead = {i for i in running if not procs[i].is_alive()}
                running -= dead  # a worker killed from outside: the others take over its runs
                continue
            if event[0] == "exit":
                running.discard(event[1])
            else:
                handle(event)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


class _ProgressBar:
    """Runs done/total with ETA, and what each worker is training now."""

    def __init__(self, summary: SweepSummary, enabled: bool):
        self.summary = summary
        self.current: dict[int, str] = {}
        self.last_refresh = 0.0
        self.bar = tqdm(total=summary.total, initial=len(summary.outcomes), unit="run", desc="runs",
                        disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    def handle(self, event: Event) -> None:
        kind, worker = event[0], event[1]
        if kind == "start":
            self.current[worker] = event[2]
            self._refresh(force=True)
        elif kind == "step":
            label = self.current.get(worker, "").split(" [")[0]
            self.current[worker] = f"{label} [{event[2]}/{event[3]}]"
            self._refresh()
        elif kind == "done":
            _, _, key, trained, status = event
            if self.summary.record(key, trained, status):
                self.bar.update(1)
            if trained:
                self.current.pop(worker, None)
            self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_refresh > 0.5:
            self.last_refresh = now
            self.bar.set_postfix_str(" | ".join(self.current[w] for w in sorted(self.current)), refresh=True)

    def close(self) -> None:
        self.bar.close()


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
