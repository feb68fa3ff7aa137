"""Sweeps on a Ray cluster: one Ray task per fused group (or per run), results written by the driver.

    mupcheck run grids/X.toml --backend ray                       # a local cluster, started for the run
    mupcheck run grids/X.toml --backend ray --ray-address auto    # the cluster `ray start` runs here
    RAY_ADDRESS=ray://head:10001 pytest grids/X.toml --mupcheck-backend ray

Ray core tasks, not Ray Tune: mupcheck owns the grid, the optimum and the verdicts; Ray places the work and
retries it. The driver (this process) plans the grid, claims in the store every run it lacks (the store's
locks keep a second driver from training them too), and submits one task per fusion group. A task carries
the grid and its run configs, loads the data itself on its worker, trains with the same engine as a local
sweep, and sends each run's result as soon as the run is finished (a batched group's shorter runs long
before the group ends) to a mailbox actor; the driver takes them from there and writes each into the store.
So no shared filesystem is needed, and the store's guarantees hold: atomic records, nothing trained twice,
and a driver killed and restarted resumes, training only what is not in the store.

Nothing the sweep needs lives only on a worker node: the mailbox is pinned to the driver's own node (Ray
would place it on any node, and a sweep whose mailbox sat on a node that died crashed with
ActorUnavailableError, losing the results in it: issue 28). A worker node that dies takes its tasks with
it; Ray retries them elsewhere, and the retries train what the mailbox does not hold.

Placement: a task asks for one GPU when the grid trains on CUDA (Ray sets its CUDA_VISIBLE_DEVICES) and for
one CPU otherwise; when the cluster has more of those than the grid has fusion groups, the costliest groups
are split so that none idles (`mupcheck.sweep.balance`). Fault tolerance: a task whose worker or node dies
is retried (`MAX_RETRIES`), and the retry trains only the runs its earlier attempts had not finished; the
retries are counted and reported. A task that keeps failing, or raises, is recorded with its error under
`failures/` in the store for each run it had not finished, and the sweep goes on; those runs stay missing,
so verdicts never pretend to have them. Ctrl-C cancels the tasks in flight and stores the runs they had
finished.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from mupcheck.engine.device import pin_threads
from mupcheck.engine.groups import fusion_groups
from mupcheck.errors import MupcheckError
from mupcheck.plan import Plan, plan_grid
from mupcheck.provenance import utc_now
from mupcheck.result import RunResult
from mupcheck.spec import Grid, RunConfig
from mupcheck.store import Store
from mupcheck.sweep.balance import balance
from mupcheck.sweep.progress import Event, SweepSummary
from mupcheck.sweep.trainer import GroupRunner

__all__ = ["MAX_RETRIES", "RAY_ADDRESS_ENV", "import_ray", "run_on_ray"]

RAY_ADDRESS_ENV = "RAY_ADDRESS"
MAX_RETRIES = 3  # attempts after the first, for a task whose worker process or node died


def import_ray() -> Any:
    """The `ray` module, or a one-line MupcheckError saying how to get it."""
    try:
        # Optional (pip install 'mupcheck[ray]'), and about 1 s to import: only when the Ray backend is asked for.
        import ray
    except ImportError:
        raise MupcheckError("backend \"ray\" needs Ray, which is not installed: pip install 'mupcheck[ray]'") from None
    return ray


def connect(address: str | None) -> Any:
    """Join the cluster at `address` (else $RAY_ADDRESS), or start a local one for this process; reuse a
    connection this process already has."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    # Workers import user model factories the way this process does: from the working directory.
    paths = os.pathsep.join([os.getcwd(), *[p for p in sys.path if p]])
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": paths}})
    except ConnectionError as e:
        raise MupcheckError(f"cannot reach the Ray cluster at {address}: {e}") from None
    return ray


def _train_task(grid: Grid, configs: list[RunConfig], device: str, compile: bool, mailbox: Any,
                group_id: int, share: bool = False) -> int:
    """On a Ray worker: train the runs of one group that no earlier attempt finished, with the local engine,
    sending each result to `mailbox` as the run finishes; return how many this attempt trained."""
    ray = import_ray()
    # Recorded before any work, and waited for: a killed attempt still counts.
    finished = set(ray.get(mailbox.begin.remote(group_id, os.getpid())))
    plan = plan_grid(grid, device)
    pin_threads(plan.device)  # one thread, as every CPU run trains: the same numbers as a local sweep
    index = {cfg: i for i, cfg in enumerate(configs)}

    def send(cfg: RunConfig, result: RunResult) -> None:
        # Waited for: once this returns, the run is safe from this worker's death.
        ray.get(mailbox.put.remote(group_id, index[cfg], result.to_dict()))

    todo = [cfg for i, cfg in enumerate(configs) if i not in finished]
    # A shared run's state stays on this node (a retry here resumes it; elsewhere it starts over).
    GroupRunner(plan, send, compile=compile, share=share).run(todo)
    return len(todo)


class _Mailbox:
    """A Ray actor: the runs the tasks finished, held until the driver takes them, and the attempts of each
    task (retries are attempts beyond the first)."""

    def __init__(self) -> None:
        self.attempts: dict[int, list[int]] = {}
        self.finished: dict[int, set[int]] = {}  # group -> indices of its finished runs
        self.inbox: list[tuple[int, int, dict[str, Any]]] = []

    def begin(self, group_id: int, pid: int) -> list[int]:
        """An attempt starts: count it; return the runs of its group that earlier attempts finished."""
        self.attempts.setdefault(group_id, []).append(pid)
        return sorted(self.finished.get(group_id, ()))

    def put(self, group_id: int, index: int, result: dict[str, Any]) -> None:
        self.finished.setdefault(group_id, set()).add(index)
        self.inbox.append((group_id, index, result))

    def take(self) -> list[tuple[int, int, dict[str, Any]]]:
        inbox, self.inbox = self.inbox, []
        return inbox

    def all(self) -> dict[int, list[int]]:
        return self.attempts


def run_on_ray(plan: Plan, store: Store, summary: SweepSummary, handle: Callable[[Event], None], fuse: int,
               compile: bool, address: str | None, share: bool = False,
               attempts_out: dict[int, list[int]] | None = None) -> None:
    """Train the plan's runs that the store lacks as Ray tasks; store each result as it arrives."""
    ray = connect(address)
    by_key = {plan.key(cfg): cfg for cfg in plan.configs}
    with store.claim_missing(by_key) as claim:
        for record in claim.found.values():
            handle(("done", 0, record.key, False, record.result.status))
        groups = balance(fusion_groups([by_key[k] for k in claim.mine], fuse, share), _slots(ray, plan.device),
                         plan.cost)
        if groups:
            _run_groups(ray, plan, store, groups, handle, compile, attempts_out, share)
    for key in claim.held:  # another driver or worker holds them: wait for its results
        with store.claim(key, block=True):
            waited = store.load(key)
        if waited is not None:
            handle(("done", 0, waited.key, False, waited.result.status))


def _on_this_node(ray: Any) -> Any:
    """A scheduling strategy that keeps an actor on the driver's node: it dies only with the driver."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def _slots(ray: Any, device: torch.device) -> int:
    """Tasks the cluster runs at once: its GPUs for a CUDA grid (one each), else its CPUs."""
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if device.type == "cuda" else "CPU", 1)))


def _run_groups(ray: Any, plan: Plan, store: Store, groups: list[list[RunConfig]], handle: Callable[[Event], None],
                compile: bool, attempts_out: dict[int, list[int]] | None, share: bool = False) -> None:
    cuda = plan.device.type == "cuda"
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_train_task).options(
        num_gpus=1 if cuda else 0, num_cpus=1)
    mailbox = ray.remote(_Mailbox).options(num_cpus=0, scheduling_strategy=_on_this_node(ray)).remote()
    device = "cuda" if cuda else str(plan.device)
    pending = {task.remote(plan.grid, group, device, compile, mailbox, i, share): i for i, group in enumerate(groups)}
    stored: dict[int, set[int]] = {i: set() for i in range(len(groups))}  # group -> its runs in the store
    handle(("start", 0, f"{len(groups)} task(s) on Ray ({'one GPU' if cuda else 'one CPU'} each)"))

    def take_mail() -> None:
        for i, index, result in ray.get(mailbox.take.remote()):
            record = store.save_result(plan.key(groups[i][index]), plan.key_material(groups[i][index]),
                                       RunResult.from_dict(result))
            stored[i].add(index)
            handle(("done", 0, record.key, True, record.result.status))

    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            take_mail()  # every run finished so far, including those of the tasks just ended
            for ref in ready:
                i = pending.pop(ref)
                _collect(ray, ref, [c for j, c in enumerate(groups[i]) if j not in stored[i]], plan, store, handle)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        take_mail()  # what the cancelled tasks had finished
        raise
    finally:
        attempts = ray.get(mailbox.all.remote())
        retries = sum(max(0, len(pids) - 1) for pids in attempts.values())
        if retries:
            print(f"mupcheck: Ray retried {retries} task attempt(s) whose worker died", file=sys.stderr)
        if attempts_out is not None:
            attempts_out.update(attempts)


def _collect(ray: Any, ref: Any, unfinished: list[RunConfig], plan: Plan, store: Store,
             handle: Callable[[Event], None]) -> None:
    """A task has ended; its finished runs are stored. If it failed, record the failure for each run it did
    not finish."""
    try:
        ray.get(ref)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as e:
        message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        for cfg in unfinished:
            store.record_failure(plan.key(cfg), {"run": cfg.label(), "error": message, "backend": "ray",
                                                 "date": utc_now()})
            handle(("failed", 0, plan.key(cfg), message))
        print(f"mupcheck: a Ray task failed with {len(unfinished)} run(s) unfinished ({message}); recorded under "
              f"{store.root / 'failures'}, the sweep goes on", file=sys.stderr)
        return
    if unfinished:  # a task that returned has sent every run it trained; this would be a bug, not lost runs
        raise RuntimeError(f"a Ray task returned without {len(unfinished)} of its runs")
