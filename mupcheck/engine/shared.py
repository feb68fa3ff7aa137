"""One run per rate and seed for a whole duration study: shorter budgets read off it, or branched off it.

    chain = share_chains(configs)[0]          # mupcheck.engine.groups: budgets of one rate and seed, longest last
    results = train_shared(chain, data, device="cpu", state_dir=Path("states/abc"))
    train_shared(chain, data, "cpu", on_result=save)   # also save(i, result) as each budget finishes

The run to the longest budget (the trunk) trains once. A budget whose whole schedule is a prefix of the
trunk's (constant after a warmup fixed in tokens) observes the trunk's losses, is evaluated on the same
validation batches at its own checkpoints, and ends at its last step. A budget whose schedule leaves the
trunk's (warmup-stable-decay: where its decay starts) branches off: the trunk's state (model, optimizer,
the budgets' logs) is saved, the budget's own steps run from it, and the trunk is restored and goes on.
Every budget gets the result `train_run` would have produced alone, bit for bit on CPU in float32 (the same
arithmetic in the same order; tests/engine/test_shared.py), marked with what it was read from
(`RunResult.shared`). A divergence on the trunk before a budget leaves it is that budget's divergence too.

Resume: with a `state_dir`, the trunk's state is written there at every point where a budget leaves it, one
file kept at a time; a chain trained again after a kill starts from the latest state that every budget still
missing has not left yet, so a kill during a decay branch redoes only that branch, and a kill on the trunk
only the steps since the last budget left it. The folder is removed when the chain is done.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mupcheck.engine.data import TokenData, eval_batches, train_batch
from mupcheck.engine.device import device_name, resolve_device
from mupcheck.engine.groups import branch_step
from mupcheck.engine.models import build_model
from mupcheck.engine.optim import build_optimizer, set_step_lr
from mupcheck.engine.runlog import RunLog
from mupcheck.engine.saved_state import read_state, remove_state, write_state
from mupcheck.engine.solo import EVAL_BATCH, Progress, _loss, evaluate
from mupcheck.result import RunResult, SharedInfo
from mupcheck.spec import RunConfig

__all__ = ["OnResult", "train_shared"]

OnResult = Callable[[int, RunResult], None]  # (index of the budget in the chain, its result)


def train_shared(configs: Sequence[RunConfig], data: TokenData, device: str | torch.device = "cpu",
                 progress: Progress | None = None, dtype: torch.dtype = torch.float32,
                 on_result: OnResult | None = None, state_dir: Path | None = None) -> list[RunResult]:
    """Train the budgets of one shared run (`share_chains`: they differ only in tokens, the longest last, each
    shorter one able to branch off it) as one trunk; return one `train_run`-style result per config, in order.

    `on_result(i, result)` receives budget i's result as soon as it is final; `state_dir` keeps the trunk's
    state where budgets leave it, so that an interrupted chain resumes there.
    """
    configs = list(configs)
    trunk = max(configs, key=lambda c: c.tokens)
    leave: list[int] = []
    for cfg in configs:
        step = branch_step(cfg, trunk) if cfg is not trunk else trunk.steps
        if step is None:
            raise ValueError(f"train_shared: {cfg.label()} cannot branch off the run to {trunk.tokens} tokens "
                             "(see groups.share_chains)")
        leave.append(step)
    run = _SharedRun(configs, leave, data, resolve_device(device), dtype, on_result, state_dir)
    return run.train(progress)


@dataclasses.dataclass
class _Member:
    """One budget of the chain: its config, where it leaves the trunk, its log and its result."""

    cfg: RunConfig
    leaves_at: int  # the trunk step at which it leaves: its own steps (a prefix), or its decay's first step
    log: RunLog
    result: RunResult | None = None

    @property
    def is_prefix(self) -> bool:
        return self.leaves_at == self.cfg.steps


class _SharedRun:
    def __init__(self, configs: list[RunConfig], leave: list[int], data: TokenData, device: torch.device,
                 dtype: torch.dtype, on_result: OnResult | None, state_dir: Path | None):
        self.configs, self.data, self.device, self.dtype = configs, data, device, dtype
        self.on_result, self.state_dir = on_result, state_dir
        self.trunk_cfg = max(configs, key=lambda c: c.tokens)
        self.members = [_Member(cfg, at, RunLog(cfg)) for cfg, at in zip(configs, leave)]
        self.model = build_model(self.trunk_cfg, data.vocab_size).to(device=device, dtype=dtype)
        self.optimizer = build_optimizer(self.model, self.trunk_cfg)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.evals = eval_batches(data, self.trunk_cfg.eval_tokens, self.trunk_cfg.seq_len, EVAL_BATCH)
        self.label = device_name(device)

    # --- the loop ------------------------------------------------------------------------------------

    def train(self, progress: Progress | None) -> list[RunResult]:
        start = self._resume()
        on_trunk = [m for m in self.members if m.result is None and m.leaves_at >= start]
        steps = self.trunk_cfg.steps
        for step in range(start, steps):
            branching = [m for m in on_trunk if m.leaves_at == step and not m.is_prefix]
            if branching:
                state = self._save(step, on_trunk)
                for m in branching:
                    self._branch(m, step, progress)
                    self._restore(torch.load(io.BytesIO(state), map_location=self.device, weights_only=False),
                                  [m for m in on_trunk if m.result is None])
                on_trunk = [m for m in on_trunk if m not in branching]
            if not self._step(step, self.trunk_cfg, [m.log for m in on_trunk]):
                break  # every budget still on the trunk diverged here, as each would have alone
            ending = [m for m in on_trunk if m.is_prefix and m.cfg.steps == step + 1]
            for m in ending:
                self._finish(m)
            on_trunk = [m for m in on_trunk if m not in ending]
            if ending and on_trunk:
                self._save(step + 1, on_trunk)  # where a kill from here on resumes
            if progress is not None:
                progress(step + 1, steps)
        for m in on_trunk:  # the trunk's own budget, and any that diverged with it
            self._finish(m)
        self._clean()
        return [m.result for m in self.members if m.result is not None]

    def _step(self, step: int, cfg: RunConfig, logs: list[RunLog]) -> bool:
        """One training step of the model under `cfg`'s schedule, observed by every log in `logs`; False
        if they diverge (they observe the same loss, so they diverge together)."""
        t0 = time.perf_counter()
        set_step_lr(self.optimizer, self.base_lrs, cfg, step)
        x, y = train_batch(self.data, step, cfg.seed, cfg.batch_size, cfg.seq_len)
        loss = _loss(self.model, x.to(self.device), y.to(self.device), self.device, cfg.model)
        value = loss.item()
        if not all([log.observe(step, value) for log in logs]):
            return False
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        elapsed = time.perf_counter() - t0
        for log in logs:  # each budget's own time is what it would have taken alone
            log.train_time += elapsed
        due = [log for log in logs if log.is_checkpoint(step)]
        if due:
            t1 = time.perf_counter()
            val_loss = evaluate(self.model, self.evals, self.device)
            elapsed = time.perf_counter() - t1
            for log in due:
                log.checkpoint(step, val_loss)
                log.eval_time += elapsed
        return True

    def _branch(self, m: _Member, start: int, progress: Progress | None) -> None:
        """Budget `m`'s own steps from the trunk's state at `start` to its end (the model and optimizer are the
        trunk's, restored by the caller afterwards)."""
        steps = m.cfg.steps
        for step in range(start, steps):
            if not self._step(step, m.cfg, [m.log]):
                break
            if progress is not None:
                progress(step + 1, steps)
        self._finish(m)

    def _finish(self, m: _Member) -> None:
        trunk = self.trunk_cfg
        if m.cfg is trunk:
            info = SharedInfo("trunk", trunk.tokens, trunk.steps, len(self.members))
        else:
            info = SharedInfo("prefix" if m.is_prefix else "branch", trunk.tokens, m.leaves_at, len(self.members))
        m.result = dataclasses.replace(m.log.result(self.data, self.label), shared=info)
        if self.on_result is not None:
            self.on_result(self.members.index(m), m.result)

    # --- the trunk's state: in memory, and on disk for resuming ------------------------------------

    def _save(self, step: int, on_trunk: list[_Member]) -> bytes:
        """The trunk's state before `step` (model, optimizer, the logs of the budgets still on it), as bytes;
        also written to the state folder, replacing the one before."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "logs": {m.cfg.tokens: _log_state(m.log) for m in on_trunk}}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        if self.state_dir is not None:
            write_state(self.state_dir, step, state)
        return buffer.getvalue()

    def _restore(self, state: dict[str, Any], on_trunk: list[_Member]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for m in on_trunk:
            _set_log_state(m.log, state["logs"][m.cfg.tokens])

    def _resume(self) -> int:
        """The trunk step to start from: that of the saved state, when one is there that every budget of this
        chain can start from (none has left the trunk before it); else 0."""
        found = read_state(self.state_dir, self.device, "the shared run") if self.state_dir is not None else None
        if found is None:
            return 0
        path, state = found
        step = int(state["step"])
        if not all(m.leaves_at >= step and m.cfg.tokens in state.get("logs", {}) for m in self.members):
            return 0
        self._restore(state, self.members)
        print(f"mupcheck: {self.trunk_cfg.label()}: resuming the shared run at step {step} ({path})",
              file=sys.stderr)
        return step

    def _clean(self) -> None:
        if self.state_dir is not None:
            remove_state(self.state_dir)


def _log_state(log: RunLog) -> dict[str, Any]:
    return {k: v for k, v in vars(log).items() if k != "cfg"}


def _set_log_state(log: RunLog, state: dict[str, Any]) -> None:
    for k, v in state.items():
        setattr(log, k, list(v) if isinstance(v, list) else v)

