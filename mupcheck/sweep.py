"""Sweeps: train every run of a grid that the store does not hold yet, in one or several processes.

    summary = run_grid(load_grid("grids/smoke.toml"), Store.open(), workers=2)
    print(summary.line())

Every worker walks the whole run list (each from a different starting point) and asks the store
for each run; the store's per-run lock makes sure no run is trained twice, and a run another
worker holds is retried at the end, so a worker that dies leaves its run to the others. Finished
runs are on disk as soon as they finish: an interrupted sweep resumes where it stopped.

Runs that differ only in learning rate, seed and token budget are trained together as one batched
model (`mupcheck.fused`) when the grid's `fuse` setting (or `fuse=`) allows more than one member;
by default that is on CUDA only; `compile` puts the batched model through torch.compile. A model
that cannot be batched falls back to one run at a time, with a message; a group that does not fit
in GPU memory is split in halves until it does. With several workers on a machine with several
GPUs, worker i trains on GPU i (mod the number of GPUs).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from mupcheck.data import TokenData, load_data
from mupcheck.fused import FusedOutOfMemory, FusedUnsupported, fusion_groups, group_label, train_fused
from mupcheck.grid import Grid, RunConfig, format_tokens, run_configs
from mupcheck.lint import lint_grid
from mupcheck.store import RunContext, Store
from mupcheck.train import resolve_device, train_run

__all__ = ["Plan", "plan_grid", "run_grid", "SweepSummary", "repeated_data_warning", "Engine", "fuse_size",
           "pin_device", "select_gpu", "AUTO_FUSE_CUDA"]

# Members per fused group on CUDA when the grid says `fuse = 0` (automatic): enough to hide launch
# overhead at proxy widths; groups that do not fit are split.
AUTO_FUSE_CUDA = 32

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


def plan_grid(grid: Grid, device: str | None = None, worker: int | None = None) -> Plan:
    """Load the grid's data, resolve the device (pinned to one GPU for `worker`, see `pin_device`)
    and compute every run's store key."""
    data = load_data(grid.data, grid.grid_dir, grid.vocab_size)
    dev = resolve_device(device or grid.device)
    if worker is not None:
        dev = pin_device(dev, worker)
    return Plan(grid, data, dev, RunContext.for_grid(grid, data.fingerprint, dev), tuple(run_configs(grid)))


def pin_device(device: torch.device, worker: int) -> torch.device:
    """Worker i's GPU: cuda:(i mod GPUs) when the device is plain "cuda" and there are several GPUs;
    an explicit cuda:N, a single GPU or the CPU are left as they are."""
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", worker % count) if count > 1 else device


def select_gpu(device: torch.device) -> None:
    """Make a pinned worker's GPU the current one, for anything allocated without a device.
    Plain "cuda" (no index) keeps the current GPU: torch.cuda.set_device refuses it."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def fuse_size(grid: Grid, device: torch.device, override: int | None = None) -> int:
    """How many runs train as one batched model: `override`, else the grid's `fuse`, where 0 means
    AUTO_FUSE_CUDA on CUDA and 1 elsewhere (on CPU a batched model is slower than a loop)."""
    n = grid.fuse if override is None else override
    if n == 0:
        n = AUTO_FUSE_CUDA if device.type == "cuda" else 1
    return max(1, n)


@dataclass(frozen=True)
class Engine:
    """How a sweep trains: up to `fuse` runs per batched model, `compile` through torch.compile."""

    fuse: int = 1
    compile: bool = False

    @classmethod
    def for_grid(cls, grid: Grid, device: torch.device, fuse: int | None = None,
                 compile: bool | None = None) -> Engine:
        """The grid's settings, overridden by the command line's where given."""
        return cls(fuse_size(grid, device, fuse), grid.compile if compile is None else compile)

    def describe(self) -> str:
        if self.fuse <= 1:
            return "one run at a time"
        return (f"up to {self.fuse} runs (same shape; lr, seed, tokens differ) per batched model"
                + (", compiled" if self.compile else ""))


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
             show_progress: bool = True, fuse: int | None = None, compile: bool | None = None,
             worker: int | None = None) -> SweepSummary:
    """Train the missing runs of `grid` into `store`; return counts of trained, reused and diverged runs.

    `fuse` and `compile` override the grid's settings; `worker` (a pytest-xdist worker's index) pins
    the sweep to that worker's GPU.
    """
    start = time.perf_counter()
    plan = plan_grid(grid, device, worker)
    engine = Engine.for_grid(grid, plan.device, fuse, compile)
    if show_progress:
        print(f"mupcheck: training on {plan.device}, {engine.describe()}", file=sys.stderr)
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
                _work(plan, store.root, 0, bar.handle, engine=engine)
            else:
                _run_workers(grid, device, store.root, workers, engine, bar.handle)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.wall_time_s = time.perf_counter() - start
    return summary


# --- workers ---------------------------------------------------------------------------------

def _work(plan: Plan, store_root: os.PathLike, worker: int, emit: Callable[[Event], None],
          n_workers: int = 1, engine: Engine = Engine()) -> None:
    """Train every missing run this process can claim (in fused groups when engine.fuse > 1); then
    wait for, or take over, the runs other processes held."""
    store = Store(store_root)
    groups = fusion_groups(plan.configs, engine.fuse)
    shift = worker * len(groups) // max(1, n_workers)
    groups = groups[shift:] + groups[:shift]  # workers start at different places: less lock contention
    select_gpu(plan.device)
    trainer = _Trainer(plan, store, worker, emit, engine.compile)
    deferred = []
    for group in groups:
        deferred += trainer.train_group(group)
    for cfg in deferred:
        record, trained = store.get_or_train(cfg, plan.context, trainer.solo(cfg), block=True)
        assert record is not None  # block=True waits for the lock instead of giving up
        trainer.done(record, trained)


class _Trainer:
    """Trains groups of runs for one worker: fused where it can, one at a time where it must."""

    def __init__(self, plan: Plan, store: Store, worker: int, emit: Callable[[Event], None],
                 compile: bool = False):
        self.plan, self.store, self.worker, self.emit = plan, store, worker, emit
        self.compile = compile
        self.fallback_said = False

    def _progress(self, step: int, steps: int) -> None:
        self.emit(("step", self.worker, step, steps))

    def solo(self, cfg: RunConfig) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            self.emit(("start", self.worker, cfg.label()))
            return train_run(cfg, self.plan.data, self.plan.device, progress=self._progress)
        return go

    def train_group(self, group: list[RunConfig]) -> list[RunConfig]:
        """Train the runs of `group` that nobody has stored or claimed; return those others hold."""
        held_elsewhere, mine = [], []
        with ExitStack() as claims:
            for cfg in group:
                key = self.plan.key(cfg)
                record = self.store.load(key)
                if record is None and claims.enter_context(self.store.claim(key, block=False)):
                    record = self.store.load(key)  # finished by another process before we claimed it?
                    if record is None:
                        mine.append(cfg)
                        continue
                if record is None:
                    held_elsewhere.append(cfg)
                else:
                    self.done(record, trained=False)
            self._train_claimed(mine)
        return held_elsewhere

    def _train_claimed(self, configs: list[RunConfig]) -> None:
        """Train claimed runs: fused; else split (out of memory), uncompiled, or one at a time."""
        if len(configs) <= 1:
            for cfg in configs:
                self._store(cfg, self.solo(cfg)())
            return
        self.emit(("start", self.worker, group_label(configs)))
        try:
            results = train_fused(configs, self.plan.data, self.plan.device, progress=self._progress,
                                  compile=self.compile)
        except (FusedOutOfMemory, FusedUnsupported) as e:
            results, failure = None, e
        if results is not None:
            for cfg, result in zip(configs, results):
                self._store(cfg, result)
            return
        # Out of the except block, the failed attempt's tensors can be freed before the next try.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if isinstance(failure, FusedOutOfMemory):
            half = len(configs) // 2
            print(f"mupcheck: {failure}; splitting into groups of {half} and {len(configs) - half}",
                  file=sys.stderr)
            self._train_claimed(configs[:half])
            self._train_claimed(configs[half:])
        elif self.compile:
            print(f"mupcheck: torch.compile failed on the batched model ({failure}); training without it",
                  file=sys.stderr)
            self.compile = False
            self._train_claimed(configs)
        else:
            if not self.fallback_said:
                print(f"mupcheck: model {configs[0].model!r} cannot be trained as a batched model ({failure}); "
                      "training its runs one at a time", file=sys.stderr)
                self.fallback_said = True
            for cfg in configs:
                self._store(cfg, self.solo(cfg)())

    def _store(self, cfg: RunConfig, result: dict[str, Any]) -> None:
        self.done(self.store.save_result(cfg, self.plan.context, result), trained=True)

    def done(self, record: dict[str, Any], trained: bool) -> None:
        """Report a finished run (trained now, or found in the store) to the progress display."""
        self.emit(("done", self.worker, record["key"], trained, record["result"]["status"]))


def _worker_main(grid: Grid, device: str | None, store_root: os.PathLike, worker: int, n_workers: int,
                 engine: Engine, threads: int, events: Any, parent: int) -> None:
    torch.set_num_threads(threads)

    def emit(event: Event) -> None:
        # A parent killed with SIGKILL cannot stop its children; they notice here and stop too.
        if os.getppid() != parent:
            raise SystemExit(1)
        events.put(event)

    try:
        # Each worker loads the data itself: cheaper than pickling a corpus through a pipe.
        _work(plan_grid(grid, device, worker), store_root, worker, emit, n_workers, engine)
    except KeyboardInterrupt:
        pass  # the parent reports the interruption; finished runs are already stored
    finally:
        events.put(("exit", worker))


def _run_workers(grid: Grid, device: str | None, store_root: os.PathLike, workers: int, engine: Engine,
                 handle: Callable[[Event], None]) -> None:
    # spawn, not fork: a forked child inherits torch's thread pools in an undefined state.
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker_main, daemon=True,
                         args=(grid, device, store_root, i, workers, engine, threads, events, os.getpid()))
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
