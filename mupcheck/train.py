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
from typing import Any, Callable

import torch
import torch.nn.functional as F
from mup import MuAdamW, MuSGD
from torch import nn

from mupcheck.data import TokenData, eval_batches, train_batch
from mupcheck.errors import ModelError
from mupcheck.grid import RunConfig
from mupcheck.models import build_model
from mupcheck.schedules import lr_multiplier

__all__ = ["train_run", "build_optimizer", "set_step_lr", "resolve_device", "evaluate", "DIVERGE_FACTOR"]

ADAM_BETAS = (0.9, 0.95)
SGD_MOMENTUM = 0.9
# A run whose running-mean train loss exceeds this multiple of its first loss is called diverged.
DIVERGE_FACTOR = 1.5
_EMA = 0.9  # running mean over roughly the last ten steps
_N_CHECKPOINTS = 4
_EVAL_BATCH = 32

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


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    with _autocast(device):
        logits = model(x)  # (B, T, V)
    if logits.shape[:2] != x.shape or logits.ndim != 3:
        raise ModelError(f"model output has shape {tuple(logits.shape)}; expected (B, T, V) = "
                         f"({x.shape[0]}, {x.shape[1]}, vocab) for token ids of shape {tuple(x.shape)}")
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


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
              progress: Progress | None = None) -> dict[str, Any]:
    """Train one run and return its result (status, losses, checkpoints, speed, repeats of data)."""
    device = resolve_device(device) if isinstance(device, str) else device
    model = build_model(cfg, data.vocab_size).to(device)
    optimizer = build_optimizer(model, cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    evals = eval_batches(data, cfg.eval_tokens, cfg.seq_len, _EVAL_BATCH)
    steps = cfg.steps
    checkpoint_steps = sorted({max(1, steps * (i + 1) // _N_CHECKPOINTS) for i in range(_N_CHECKPOINTS)})

    losses: list[float] = []
    checkpoints: list[dict[str, Any]] = []
    status, diverged_step, ema, first = "ok", None, 0.0, None
    train_time, eval_time = 0.0, 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        set_step_lr(optimizer, base_lrs, cfg, step)
        x, y = train_batch(data, step, cfg.seed, cfg.batch_size, cfg.seq_len)
        loss = _loss(model, x.to(device), y.to(device), device)
        value = loss.item()
        if first is None:
            first = value
        ema = _EMA * ema + (1 - _EMA) * value
        smoothed = ema / (1 - _EMA ** (step + 1))  # bias-corrected running mean
        if not math.isfinite(value) or smoothed > DIVERGE_FACTOR * first:
            status, diverged_step = "diverged", step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(value)
        train_time += time.perf_counter() - t0
        if step + 1 in checkpoint_steps:
            t1 = time.perf_counter()
            window = losses[-max(1, steps // 10):]
            checkpoints.append({"step": step + 1, "tokens": (step + 1) * cfg.tokens_per_step,
                                "train_loss": sum(window) / len(window),
                                "val_loss": evaluate(model, evals, device)})
            eval_time += time.perf_counter() - t1
        if progress is not None:
            progress(step + 1, steps)

    final = checkpoints[-1] if status == "ok" else None
    trained_steps = len(losses)
    return {
        "status": status,
        "loss": final["val_loss"] if final else None,
        "train_loss": final["train_loss"] if final else None,
        "initial_loss": first,
        "diverged_step": diverged_step,
        "steps": steps,
        "steps_trained": trained_steps,
        "checkpoints": checkpoints,
        "wall_time_s": train_time + eval_time,
        "tokens_per_s": trained_steps * cfg.tokens_per_step / train_time if train_time > 0 else None,
        "device": _device_name(device),
        "data_repeats": cfg.tokens / len(data.train),
        "weight_decay": cfg.coupled_weight_decay if cfg.weight_decay_mode != "independent" else cfg.weight_decay,
        "tau_steps": cfg.tau_steps if math.isfinite(cfg.tau_steps) else None,
        "tau_frac_of_run": cfg.tau_steps / steps if math.isfinite(cfg.tau_steps) else None,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} thread(s)"
