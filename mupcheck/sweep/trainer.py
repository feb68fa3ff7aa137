"""Training the runs of one fusion group for one worker: batched where it can, one at a time where it must.

The store is asked first: runs already stored are reported as found, runs another process holds are
left for later, and the rest are claimed and trained together. A batched group that does not fit in
GPU memory is split in halves; one whose compilation fails is retried without torch.compile; a model
that cannot be batched trains its runs one at a time. Budgets of one rate and seed that can share a run
(`mupcheck.engine.groups.share_chains`) train as one (`mupcheck.engine.shared`), its resumable state kept
under the store's `shared-runs/` until the last of them is stored.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from mupcheck.engine.command import TrainerFailed, train_command
from mupcheck.engine.fused import FusedCanaryFailed, FusedOutOfMemory, FusedUnsupported, train_fused
from mupcheck.engine.groups import group_label, share_chains
from mupcheck.engine.shared import train_shared
from mupcheck.engine.solo import train_run
from mupcheck.errors import MupcheckError
from mupcheck.plan import Plan
from mupcheck.result import RunRecord, RunResult
from mupcheck.spec import RunConfig
from mupcheck.store import Store
from mupcheck.sweep.progress import Event

__all__ = ["STOP_AFTER_FAILURES", "GroupRunner", "GroupTrainer"]

# A trainer that fails on this many runs in a row before any finishes stops the sweep (its first error).
STOP_AFTER_FAILURES = 3


class GroupRunner:
    """Trains a list of runs on one device: batched; else split (out of memory), uncompiled, or one at a
    time. Knows nothing of the store: every finished run goes to `deliver`, so a sweep on this machine stores
    it at once and a Ray task sends it back to its driver."""

    def __init__(self, plan: Plan, deliver: Callable[[RunConfig, RunResult], None], worker: int = 0,
                 emit: Callable[[Event], None] | None = None, compile: bool = False,
                 fail: Callable[[RunConfig, TrainerFailed], None] | None = None, run_root: Path | None = None,
                 env: dict[str, str] | None = None, share: bool = False, state_root: Path | None = None):
        """`fail`: what to do with a run the team's trainer did not finish (None: raise); `run_root`: where a
        trainer's runs get their folders ({run_dir}); `env`: variables for a trainer's runs (a GPU slot);
        `share`: budgets of one rate and seed train as one run where exact, its state under `state_root`."""
        self.plan, self.deliver, self.worker = plan, deliver, worker
        self.share = share and plan.grid.trainer is None
        self.state_root = (state_root if state_root is not None
                           else Path(tempfile.gettempdir()) / "mupcheck-shared-runs")
        self.emit: Callable[[Event], None] = emit or (lambda event: None)
        self.compile = compile
        self.fallback_said = False
        self.fail, self.env = fail, env or {}
        self.run_root = run_root if run_root is not None else Path(tempfile.gettempdir()) / "mupcheck-trainer-runs"

    def _progress(self, step: int, steps: int) -> None:
        self.emit(("step", self.worker, step, steps))

    def solo(self, cfg: RunConfig) -> Callable[[], RunResult]:
        def go() -> RunResult:
            key = self.plan.key(cfg)
            self.emit(("start", self.worker, cfg.label(), (key,)))
            if self.plan.grid.trainer is not None:
                return train_command(cfg, self.plan.grid, self.run_root / key, self._progress, self.env)
            return train_run(cfg, self.plan.data, self.plan.device, progress=self._progress)
        return go

    def one(self, cfg: RunConfig) -> None:
        """Train one run and deliver it; a run the team's trainer did not finish goes to `fail`."""
        try:
            result = self.solo(cfg)()
        except TrainerFailed as e:
            if self.fail is None:
                raise
            self.fail(cfg, e)
            return
        self.deliver(cfg, result)

    def run(self, configs: list[RunConfig]) -> None:
        """Train `configs` (runs that differ only in lr, seed and tokens), delivering each result."""
        if self.plan.grid.trainer is not None:  # the team's own code: one process per run, never batched
            for cfg in configs:
                self.one(cfg)
            return
        if len(configs) <= 1:
            for cfg in configs:
                self.deliver(cfg, self.solo(cfg)())
            return
        chains = share_chains(configs) if self.share else []
        if len(chains) == 1:
            self.shared(chains[0])
            return
        self.emit(("start", self.worker, group_label(configs), tuple(self.plan.key(c) for c in configs)))
        failure, configs = self._batched(configs)
        if failure is None or not configs:
            return
        gc.collect()  # the failed attempt's tensors, freed before the next try
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if isinstance(failure, FusedOutOfMemory):
            half = len(configs) // 2
            print(f"mupcheck: {failure}; splitting into groups of {half} and {len(configs) - half}",
                  file=sys.stderr)
            self.run(configs[:half])
            self.run(configs[half:])
        elif self.compile:
            what = "failed its canary" if isinstance(failure, FusedCanaryFailed) else "failed"
            print(f"mupcheck: torch.compile of the batched model {what} ({failure}); training without it",
                  file=sys.stderr)
            self.compile = False
            self.run(configs)
        elif isinstance(failure, FusedCanaryFailed):
            print(f"mupcheck: WARNING: canary: {failure}; training these {len(configs)} runs one at a time",
                  file=sys.stderr)
            note = f"trained one at a time because the batched group failed its canary: {failure}"
            for cfg in configs:
                self.deliver(cfg, dataclasses.replace(self.solo(cfg)(), notes=(note,)))
        else:
            if not self.fallback_said:
                print(f"mupcheck: model {configs[0].model!r} cannot be trained as a batched model ({failure}); "
                      "training its runs one at a time", file=sys.stderr)
                self.fallback_said = True
            for cfg in configs:
                self.deliver(cfg, self.solo(cfg)())

    def shared(self, chain: list[RunConfig]) -> None:
        """Train the budgets of one rate and seed as one run (`share_chains`), delivering each as it ends."""
        trunk = chain[-1]
        self.emit(("start", self.worker, f"{group_label(chain)} shared", tuple(self.plan.key(c) for c in chain)))
        train_shared(chain, self.plan.data, self.plan.device, progress=self._progress,
                     on_result=lambda i, result: self.deliver(chain[i], result),
                     state_dir=self.state_root / self.plan.key(trunk))

    def _batched(self, configs: list[RunConfig]) -> tuple[Exception | None, list[RunConfig]]:
        """Train `configs` as one batched model, delivering each run as it finishes. On a failure the
        sweep can recover from, return it with the runs not delivered (only those are trained again)."""
        handed: set[int] = set()

        def hand_over(i: int, result: RunResult) -> None:
            handed.add(i)
            self.deliver(configs[i], result)

        try:
            train_fused(configs, self.plan.data, self.plan.device, progress=self._progress,
                        compile=self.compile, on_result=hand_over, share=self.share,
                        state_root=self.state_root / "batched" if self.share else None)
        except (FusedOutOfMemory, FusedUnsupported, FusedCanaryFailed) as e:
            if handed:
                print(f"mupcheck: {len(handed)} of the group's {len(configs)} runs had finished and are kept",
                      file=sys.stderr)
            return _without_frames(e), [cfg for i, cfg in enumerate(configs) if i not in handed]
        return None, []


def _without_frames(error: Exception) -> Exception:
    """`error` without its traceback, nor those of the exceptions it chains: they hold the failed attempt's
    frames, and through them all its tensors, which the next attempt (half the group) needs the memory of."""
    seen: set[int] = set()
    chain: list[BaseException | None] = [error]
    while chain:
        e = chain.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            e.__traceback__ = None
            chain += [e.__cause__, e.__context__]
    return error


class GroupTrainer:
    """Trains groups of runs for one worker on this machine: claims them in the store, trains them with a
    `GroupRunner`, stores each result as it finishes, and reports each finished run through `emit`."""

    def __init__(self, plan: Plan, store: Store, worker: int, emit: Callable[[Event], None], compile: bool = False,
                 env: dict[str, str] | None = None, share: bool = False):
        self.plan, self.store, self.worker, self.emit = plan, store, worker, emit
        self.runner = GroupRunner(plan, self._store, worker, emit, compile, fail=self._failed,
                                  run_root=store.root / "trainer-runs", env=env, share=share,
                                  state_root=store.root / "shared-runs")
        self.finished, self.failures = 0, 0

    def train_group(self, group: list[RunConfig]) -> list[RunConfig]:
        """Train the runs of `group` that nobody has stored or claimed; return those others hold."""
        by_key = {self.plan.key(cfg): cfg for cfg in group}
        with self.store.claim_missing(by_key) as claim:
            for record in claim.found.values():
                self.done(record, trained=False)
            self.runner.run([by_key[k] for k in claim.mine])
        return [by_key[k] for k in claim.held]

    def train_alone(self, cfg: RunConfig) -> None:
        """Train (or wait for, and take) one run that another process held."""
        try:
            record, trained = self.store.get_or_train(self.plan.key(cfg), self.plan.key_material(cfg),
                                                      self.runner.solo(cfg), block=True)
        except TrainerFailed as e:
            self._failed(cfg, e)
            return
        assert record is not None  # block=True waits for the lock instead of giving up
        self.done(record, trained)

    def _store(self, cfg: RunConfig, result: RunResult) -> None:
        record = self.store.save_result(self.plan.key(cfg), self.plan.key_material(cfg), result)
        self.finished += 1
        self.done(record, trained=True)

    def _failed(self, cfg: RunConfig, error: TrainerFailed) -> None:
        """A run the team's trainer did not finish: said in one line, kept in the store's failures/ with the last
        lines of its output (the report shows them), and left missing, so that a later sweep tries it again. A
        trainer that fails on its first STOP_AFTER_FAILURES runs, none finished, stops the sweep with the first
        error: hundreds of identical failures say nothing more."""
        key = self.plan.key(cfg)
        self.store.record_failure(key, {"run": cfg.label(), "error": str(error), "log": list(error.log[-10:]),
                                        "backend": "trainer"})
        print(f"mupcheck: {cfg.label()}: the trainer failed: {error}", file=sys.stderr)
        self.emit(("failed", self.worker, key, str(error)))
        self.failures += 1
        if not self.finished and self.failures >= STOP_AFTER_FAILURES:
            raise MupcheckError(f"the trainer failed on each of its first {self.failures} runs, and none finished: "
                                f"{cfg.label()}: {error} (every failure is in {self.store.root / 'failures'})")

    def done(self, record: RunRecord, trained: bool) -> None:
        """Report a finished run (trained now, or found in the store) to the progress display."""
        self.emit(("done", self.worker, record.key, trained, record.result.status))
