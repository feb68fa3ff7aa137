"""What one run records while it trains, shared by the solo and the batched engines.

A run stops at the first non-finite loss, or when the bias-corrected running mean of its training
loss exceeds DIVERGE_FACTOR times its first loss ("diverged"); it is evaluated on the fixed
validation batches at N_CHECKPOINTS evenly spaced steps.
"""

from __future__ import annotations

import math

from mupcheck.engine.data import TokenData
from mupcheck.result import Checkpoint, RunResult, Status
from mupcheck.spec import RunConfig

__all__ = ["DIVERGE_FACTOR", "N_CHECKPOINTS", "RunLog"]

# A run whose running-mean train loss exceeds this multiple of its first loss is called diverged.
DIVERGE_FACTOR = 1.5
_EMA = 0.9  # running mean over roughly the last ten steps
N_CHECKPOINTS = 4


class RunLog:
    """A run's losses, checkpoints, divergence and time, turned into its `RunResult` at the end."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.losses: list[float] = []
        self.checkpoints: list[Checkpoint] = []
        self.status: Status = "ok"
        self.diverged_step: int | None = None
        self.first: float | None = None
        self.ema = 0.0
        self.train_time = self.eval_time = 0.0
        steps = cfg.steps
        self.checkpoint_steps = sorted({max(1, steps * (i + 1) // N_CHECKPOINTS) for i in range(N_CHECKPOINTS)})

    def observe(self, step: int, value: float) -> bool:
        """Record step `step`'s loss; False (and status "diverged") if the run must stop here."""
        if self.first is None:
            self.first = value
        self.ema = _EMA * self.ema + (1 - _EMA) * value
        smoothed = self.ema / (1 - _EMA ** (step + 1))  # bias-corrected running mean
        if not math.isfinite(value) or smoothed > DIVERGE_FACTOR * self.first:
            self.status, self.diverged_step = "diverged", step
            return False
        self.losses.append(value)
        return True

    def is_checkpoint(self, step: int) -> bool:
        return step + 1 in self.checkpoint_steps

    def checkpoint(self, step: int, val_loss: float) -> None:
        window = self.losses[-max(1, self.cfg.steps // 10):]
        self.checkpoints.append(Checkpoint(step + 1, (step + 1) * self.cfg.tokens_per_step,
                                           sum(window) / len(window), val_loss))

    def result(self, data: TokenData, device_name: str) -> RunResult:
        cfg = self.cfg
        final = self.checkpoints[-1] if self.status == "ok" else None
        trained_steps = len(self.losses)
        finite_tau = math.isfinite(cfg.tau_steps)
        return RunResult(
            status=self.status,
            loss=final.val_loss if final else None,
            train_loss=final.train_loss if final else None,
            initial_loss=self.first,
            diverged_step=self.diverged_step,
            steps=cfg.steps,
            steps_trained=trained_steps,
            checkpoints=tuple(self.checkpoints),
            wall_time_s=self.train_time + self.eval_time,
            tokens_per_s=trained_steps * cfg.tokens_per_step / self.train_time if self.train_time > 0 else None,
            device=device_name,
            data_repeats=cfg.tokens / len(data.train),
            weight_decay=cfg.coupled_weight_decay if cfg.weight_decay_mode != "independent" else cfg.weight_decay,
            tau_steps=cfg.tau_steps if finite_tau else None,
            tau_frac_of_run=cfg.tau_steps / cfg.steps if finite_tau else None,
        )
