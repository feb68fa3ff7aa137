"""Sweeps on this machine: train every run of a grid that the store does not hold yet, in one or
several processes.

    summary = run_grid(load_grid("grids/smoke.toml"), Store.open(), workers=2)
    print(summary.line())

The runs the store lacks are grouped for fused training, with groups split when there are fewer than
devices to train them (`mupcheck.sweep.balance`). Every worker walks the whole list of groups (each from
a different starting point) and asks the store for each run; the store's per-run lock makes sure no run
is trained twice, and a run another worker holds is retried at the end, so a worker that dies leaves its
run to the others. Finished runs are on disk as soon as they finish: an interrupted sweep resumes where
it stopped.

Runs that differ only in learning rate, seed and token budget are trained together as one batched
model when the grid's `fuse` setting (or `fuse=`) allows more than one member; by default that is on
CUDA only; `compile` puts the batched model through torch.compile. With several workers on a machine
with several GPUs, worker i trains on GPU i (mod the number of GPUs).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mupcheck.checks.lint import lint_grid
from mupcheck.collect import MissingRunsError, collect_coarse
from mupcheck.engine.device import pin_threads, resolve_device, select_gpu
from mupcheck.engine.groups import fusion_groups
from mupcheck.errors import MupcheckError
from mupcheck.plan import Plan, auto_workers, plan_grid, refinement_configs, repeated_data_warning
from mupcheck.spec import Grid, RunConfig
from mupcheck.store import Store
from mupcheck.sweep.balance import balance, gpu_slots, local_slots
from mupcheck.sweep.progress import Event, ProgressBar, SweepSummary
from mupcheck.sweep.ray_backend import run_on_ray
from mupcheck.sweep.trainer import GroupTrainer

__all__ = ["AUTO_FUSE_CUDA", "Engine", "fuse_size", "run_grid"]

# Members per fused group on CUDA when the grid says `fuse = 0` (automatic): enough to hide launch
# overhead at proxy widths; groups that do not fit are split.
AUTO_FUSE_CUDA = 32


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
    backend: str = "local"  # "local" (processes on this machine) or "ray" (tasks on a Ray cluster)
    ray_address: str | None = None
    # A trainer's sweep on GPUs: each worker's CUDA_VISIBLE_DEVICES (`gpu_slots`); () inherits the environment.
    gpus: tuple[str, ...] = ()
    # Budgets that differ only in tokens train as one shared run where exact (`mupcheck.engine.shared`).
    share: bool = False

    @classmethod
    def for_grid(cls, grid: Grid, device: torch.device, fuse: int | None = None, compile: bool | None = None,
                 backend: str | None = None, ray_address: str | None = None, gpus: str | None = None) -> Engine:
        """The grid's settings, overridden by the command line's where given. A trainer's runs are never
        batched; `gpus` ("0,1", "all") gives its workers their GPUs, `runs_per_gpu` each."""
        if grid.trainer is not None:
            try:
                slots = gpu_slots(gpus, grid.trainer.runs_per_gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
            except ValueError as e:
                raise MupcheckError(str(e)) from None
            return cls(1, False, backend or grid.backend, ray_address, slots)  # the team's code: never shared
        if gpus:
            raise MupcheckError("--gpus gives GPUs to a [trainer]'s runs; mupcheck's own engine places runs itself "
                                "(--device, one GPU per worker)")
        return cls(fuse_size(grid, device, fuse), grid.compile if compile is None else compile,
                   backend or grid.backend, ray_address, share=grid.share_runs)

    def env_for(self, worker: int) -> dict[str, str]:
        """The environment a worker gives its trainer's runs: its GPU slot, if the sweep has slots."""
        return {"CUDA_VISIBLE_DEVICES": self.gpus[worker % len(self.gpus)]} if self.gpus else {}

    def describe(self) -> str:
        where = " as Ray tasks" if self.backend == "ray" else ""
        if self.gpus:
            return f"one trainer process per run, {len(self.gpus)} at a time on GPUs {','.join(self.gpus)}" + where
        shared = ", budgets of a rate and seed sharing one run where exact" if self.share else ""
        if self.fuse <= 1:
            return "one run at a time" + shared + where
        return (f"up to {self.fuse} runs (same shape; lr, seed, tokens differ) per batched model"
                + (", compiled" if self.compile else "") + shared + where)


def run_grid(grid: Grid, store: Store, device: str | None = None, workers: int = 1,
             show_progress: bool = True, fuse: int | None = None, compile: bool | None = None,
             worker: int | None = None, backend: str | None = None, ray_address: str | None = None,
             peers: int = 1, refine: bool = True, gpus: str | None = None) -> SweepSummary:
    """Train the missing runs of `grid` into `store`; return counts of trained, reused and diverged runs.
    With `refine` False, only the coarse runs (a grid's `[refine]` stage is left for a later call).

    `workers`: training processes (0: automatic, one per CPU core for a CPU sweep that is the only process
    training it, else one). `fuse` and `compile` override the grid's settings; `worker` (a pytest-xdist worker's
    index) pins the sweep to that worker's GPU, and `peers` says how many such processes share the sweep. `gpus`
    ("0,1", "all"): a [trainer]'s runs get one GPU each (`runs_per_gpu` share one), one worker per slot.
    """
    start = time.perf_counter()
    plan = plan_grid(grid, device, worker)
    if workers <= 0:
        workers = auto_workers(plan, peers == 1 and worker is None)
    # Groups are split for the devices that the sweep's processes use together (`balance`).
    share = _Share(worker or 0, peers, local_slots(resolve_device(device or grid.device), max(workers, peers)))
    engine = Engine.for_grid(grid, plan.device, fuse, compile, backend, ray_address, gpus)
    if engine.gpus and workers <= 1:
        workers = len(engine.gpus)
    if show_progress:
        print(f"mupcheck: training on {plan.device}, {engine.describe()}", file=sys.stderr)
    warning = repeated_data_warning(plan) if grid.trainer is None else None  # a trainer reads its own data
    if warning:
        print(warning, file=sys.stderr)
    for finding in lint_grid(grid, plan.data) if grid.trainer is None else ():  # no model of ours to lint
        print(f"WARNING: muP lint: {finding}", file=sys.stderr)
    summary = SweepSummary(total=len(plan.configs))
    bar = ProgressBar(summary, enabled=show_progress, costs=plan.costs())
    try:
        _train_missing(plan, store, summary, bar, workers, engine, device, share)
        # Refinement runs are planned from the coarse records, so they start once every coarse run is in.
        extra = []
        if refine and grid.refine is not None:
            try:
                extra = refinement_configs(grid, collect_coarse(plan, store))
            except MissingRunsError:  # runs that failed to train: refinement waits for them (a later sweep)
                print("mupcheck: the [refine] stage waits until every coarse run is in the store", file=sys.stderr)
        if extra:
            refined = dataclasses.replace(plan, configs=tuple(extra))
            bar.add_runs(refined.costs())
            _train_missing(refined, store, summary, bar, workers, engine, device, share)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.wall_time_s = time.perf_counter() - start
    return summary




@dataclass(frozen=True)
class _Share:
    """This process's part in a sweep that it shares with processes it did not start (pytest-xdist
    workers): its index and their number; and `slots`, how many groups the sweep trains at once (one per
    device in use), for which `balance` splits the groups."""

    index: int
    peers: int
    slots: int


def _train_missing(plan: Plan, store: Store, summary: SweepSummary, bar: ProgressBar, workers: int, engine: Engine,
                   device: str | None, share: _Share) -> None:
    """Count the plan's runs the store holds, then train the others (in this process, or in workers)."""
    keys = {cfg: plan.key(cfg) for cfg in plan.configs}
    for key in keys.values():
        record = store.load(key)
        if record is not None:
            summary.record(record.key, False, record.result.status)
    bar.refresh()
    missing = [c for c in plan.configs if keys[c] not in summary.outcomes]
    if not missing:
        return  # nothing to write: a complete store may be read-only
    store.check_writable()  # before anything trains, not after the first run
    if engine.backend == "ray":
        run_on_ray(plan, store, summary, bar.handle, engine.fuse, engine.compile, engine.ray_address, engine.share)
        return
    # Runs another process trains now (a peer's group, whose first runs may be stored already) are kept
    # out of this process's groups, which would otherwise overlap that group and break into small pieces;
    # they come last, to be waited for (or trained, if their process died).
    busy = {c for c in missing if store.held(keys[c])}
    held = [c for c in missing if c in busy]
    free = [c for c in missing if c not in busy]
    groups = (balance(fusion_groups(free, engine.fuse, engine.share), share.slots, plan.cost)
              + fusion_groups(held, engine.fuse, engine.share))
    if workers <= 1:
        _work(plan, store.root, share.index, bar.handle, groups, share.peers, engine)
    else:
        _run_workers(plan.grid, device, store.root, workers, engine, bar.handle, groups)


# --- workers ---------------------------------------------------------------------------------

def _work(plan: Plan, store_root: os.PathLike, worker: int, emit: Callable[[Event], None],
          groups: list[list[RunConfig]], n_workers: int = 1, engine: Engine = Engine()) -> None:
    """Train every run of `groups` this process can claim (each group batched when it has several
    runs); then wait for, or take over, the runs other processes held."""
    store = Store(store_root)
    pin_threads(plan.device)
    shift = worker * len(groups) // max(1, n_workers)
    groups = groups[shift:] + groups[:shift]  # workers start at different places: less lock contention
    if plan.grid.trainer is None:  # a trainer's runs are its own processes; this one needs no GPU context
        select_gpu(plan.device)
    trainer = GroupTrainer(plan, store, worker, emit, engine.compile, engine.env_for(worker), engine.share)
    deferred = []
    for group in groups:
        deferred += trainer.train_group(group)
    for cfg in deferred:
        trainer.train_alone(cfg)


def _worker_main(grid: Grid, device: str | None, store_root: os.PathLike, worker: int, n_workers: int,
                 engine: Engine, events: Any, parent: int, groups: list[list[RunConfig]]) -> None:
    def emit(event: Event) -> None:
        # A parent killed with SIGKILL cannot stop its children; they notice here and stop too.
        if os.getppid() != parent:
            raise SystemExit(1)
        events.put(event)

    try:
        # Each worker loads the data itself: cheaper than pickling a corpus through a pipe.
        configs = tuple(cfg for group in groups for cfg in group)
        plan = dataclasses.replace(plan_grid(grid, device, worker), configs=configs)
        _work(plan, store_root, worker, emit, groups, n_workers, engine)
    except KeyboardInterrupt:
        pass  # the parent reports the interruption; finished runs are already stored
    except MupcheckError as e:
        # A full disk, a model that cannot be built: the parent stops the sweep with this one line (the other
        # workers would only meet it again); finished runs are already stored.
        events.put(("error", worker, str(e)))
    finally:
        events.put(("exit", worker))


def _run_workers(grid: Grid, device: str | None, store_root: os.PathLike, workers: int, engine: Engine,
                 handle: Callable[[Event], None], groups: list[list[RunConfig]]) -> None:
    # spawn, not fork: a forked child inherits torch's thread pools in an undefined state.
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, daemon=True,
                         args=(grid, device, store_root, i, workers, engine, events, os.getpid(),
                               groups))
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
            elif event[0] == "error":
                raise MupcheckError(event[2])
            else:
                handle(event)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
