"""One training run: a `RunConfig` in, a result dict out (stored by `mupcheck.store`).

    result = train_run(cfg, load_data(cfg.data), device="cpu")
    result["status"], result["loss"]      # "ok" | "diverged", final validation loss (None if diverged)

The run trains for `cfg.steps = tokens // (batch_size * seq_len)` steps with the grid's schedule,
evaluates the fixed validation batches at four checkpoints, and stops early when the loss is
non-finite or its running mean rises far above its starting value ("diverged"). Weight decay is
coupled (torch's), independent of the learning rate, or set by the AdamW timescale rule; each record
stores the effective timescale tau (in steps and as a fraction of the run). On CUDA the
forward pass runs under bf16 autocast; on CPU it is float32 and deterministic for a given seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from mup import MuAdamW, MuSGD
from torch import nn

from mupcheck.data import TokenData, eval_batches, train_batch
from mupcheck.errors import ModelError
from mupcheck.grid import RunConfig
from mupcheck.models import build_model
from mupcheck.schedules import lr_multiplier

__all__ = ["train_run", "RunLog", "build_optimizer", "set_step_lr", "resolve_device", "evaluate", "autocast",
           "device_name", "DIVERGE_FACTOR"]

ADAM_BETAS = (0.9, 0.95)
SGD_MOMENTUM = 0.9
# A run whose running-mean train loss exceeds this multiple of its first loss is called diverged.
DIVERGE_FACTOR = 1.5
_EMA = 0.9  # running mean over roughly the last ten steps
N_CHECKPOINTS = 4
EVAL_BATCH = 32

Progress = Callable[[int, int], None]


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but torch sees no CUDA device")
    return dev


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """mup's optimizers under muP (per-group scaling from base shapes), torch's under SP."""
    kw: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.coupled_weight_decay}
    mup = cfg.parametrization == "mup"
    if cfg.optimizer == "adamw":
        return (MuAdamW if mup else torch.optim.AdamW)(model.parameters(), betas=ADAM_BETAS, **kw)
    return (MuSGD if mup else torch.optim.SGD)(model.parameters(), momentum=SGD_MOMENTUM, **kw)


def set_step_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], cfg: RunConfig, step: int) -> None:
    """Scale every group's own base lr (muP's per-group rates survive) by the schedule at `step`."""
    factor = lr_multiplier(cfg.schedule, step, cfg.steps, cfg.warmup_frac, cfg.min_lr_frac, cfg.decay_frac)
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
        if cfg.weight_decay_mode == "independent":
            # torch decays by lr * weight_decay; dividing by this step's lr makes the decay wd itself.
            group["weight_decay"] = cfg.weight_decay / group["lr"] if group["lr"] > 0 else 0.0


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        logits = model(x)  # (B, T, V)
    if logits.shape[:2] != x.shape or logits.ndim != 3:
        raise ModelError(f"model output has shape {tuple(logits.shape)}; expected (B, T, V) = "
                         f"({x.shape[0]}, {x.shape[1]}, vocab) for token ids of shape {tuple(x.shape)}")
    # Half-precision logits are scored in float32; float64 (equivalence tests) stays float64.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


@torch.no_grad()
def evaluate(model: nn.Module, batches: list, device: torch.device) -> float:
    """Mean token-level cross-entropy over fixed batches."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        total += _loss(model, x, y, device).item() * y.numel()
        count += y.numel()
    model.train()
    return total / count


def train_run(cfg: RunConfig, data: TokenData, device: str | torch.device = "cpu",
              progress: Progress | None = None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Train one run and return its result (status, losses, checkpoints, speed, repeats of data).

    `dtype` is the parameter dtype; float64 exists for the fused engine's equivalence tests.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    model = build_model(cfg, data.vocab_size).to(device=device, dtype=dtype)
    optimizer = build_optimizer(model, cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    evals = eval_batches(data, cfg.eval_tokens, cfg.seq_len, EVAL_BATCH)
    log = RunLog(cfg)
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        set_step_lr(optimizer, base_lrs, cfg, step)
        x, y = train_batch(data, step, cfg.seed, cfg.batch_size, cfg.seq_len)
        loss = _loss(model, x.to(device), y.to(device), device)
        if not log.observe(step, loss.item()):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.train_time += time.perf_counter() - t0
        if log.is_checkpoint(step):
            t1 = time.perf_counter()
            log.checkpoint(step, evaluate(model, evals, device))
            log.eval_time += time.perf_counter() - t1
        if progress is not None:
            progress(step + 1, cfg.steps)
    return log.result(data, device_name(device))


class RunLog:
    """What one run records while it trains, shared by the solo and the fused engine.

    `observe` applies the divergence test to each step's loss before that step's update: a run
    stops at the first non-finite loss, or when the bias-corrected running mean of its loss
    exceeds DIVERGE_FACTOR times its first loss.
    """

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.losses: list[float] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.status = "ok"
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
        self.checkpoints.append({"step": step + 1, "tokens": (step + 1) * self.cfg.tokens_per_step,
                                 "train_loss": sum(window) / len(window), "val_loss": val_loss})

    def result(self, data: TokenData, device_name: str) -> dict[str, Any]:
        cfg = self.cfg
        final = self.checkpoints[-1] if self.status == "ok" else None
        trained_steps = len(self.losses)
        finite_tau = math.isfinite(cfg.tau_steps)
        return {
            "status": self.status,
            "loss": final["val_loss"] if final else None,
            "train_loss": final["train_loss"] if final else None,
            "initial_loss": self.first,
            "diverged_step": self.diverged_step,
            "steps": cfg.steps,
            "steps_trained": trained_steps,
            "checkpoints": self.checkpoints,
            "wall_time_s": self.train_time + self.eval_time,
            "tokens_per_s": trained_steps * cfg.tokens_per_step / self.train_time if self.train_time > 0 else None,
            "device": device_name,
            "data_repeats": cfg.tokens / len(data.train),
            "weight_decay": cfg.coupled_weight_decay if cfg.weight_decay_mode != "independent" else cfg.weight_decay,
            "tau_steps": cfg.tau_steps if finite_tau else None,
            "tau_frac_of_run": cfg.tau_steps / cfg.steps if finite_tau else None,
            "engine": "solo",
        }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} thread(s)"
