"""Optimizers of the built-in training: mup's under muP, torch's under SP, stepped through a schedule.

    optimizer = build_optimizer(model, cfg)            # MuAdamW/MuSGD (muP) or AdamW/SGD (SP)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    set_step_lr(optimizer, base_lrs, cfg, step)        # every group's own rate times the schedule

Every group keeps its own base rate, so muP's per-group scaling survives the schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from mup import MuAdamW, MuSGD
from torch import nn

from mupcheck.engine.schedules import lr_multiplier
from mupcheck.errors import ModelError
from mupcheck.spec import BUILTIN_OPTIMIZERS, RunConfig, import_factory

__all__ = ["ADAM_BETAS", "ADAM_EPS", "SGD_MOMENTUM", "build_optimizer", "set_step_lr"]

ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8  # torch.optim.AdamW's default
SGD_MOMENTUM = 0.9


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """The model's own optimizer when the grid names one (`make_optimizer(model, lr, weight_decay)`); else
    mup's optimizers under muP (per-group scaling from base shapes), torch's under SP and custom."""
    if cfg.optimizer not in BUILTIN_OPTIMIZERS:
        return _own_optimizer(model, cfg)
    kw: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.coupled_weight_decay}
    mup = cfg.parametrization == "mup"
    if cfg.optimizer == "adamw":
        return (MuAdamW if mup else torch.optim.AdamW)(model.parameters(), betas=ADAM_BETAS, eps=ADAM_EPS, **kw)
    return (MuSGD if mup else torch.optim.SGD)(model.parameters(), momentum=SGD_MOMENTUM, **kw)


def _own_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    try:
        make_optimizer = import_factory(cfg.optimizer)
        optimizer = make_optimizer(model, cfg.lr, cfg.coupled_weight_decay)
    except ModelError as e:
        raise ModelError(f"optimizer {cfg.optimizer!r}: {e}") from None
    except Exception as e:  # the user's code may raise anything
        raise ModelError(f"optimizer {cfg.optimizer!r}: make_optimizer(model, lr, weight_decay) raised "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ModelError(f"optimizer {cfg.optimizer!r}: make_optimizer returned {type(optimizer).__name__}, not a "
                         "torch.optim.Optimizer")
    return optimizer


def set_step_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], cfg: RunConfig, step: int) -> None:
    """Scale every group's own base lr (muP's per-group rates survive) by the schedule at `step`."""
    factor = lr_multiplier(cfg.schedule, step, cfg.steps, cfg.warmup_frac, cfg.min_lr_frac, cfg.decay_frac)
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
        if cfg.weight_decay_mode == "independent":
            # torch decays by lr * weight_decay; dividing by this step's lr makes the decay wd itself.
            group["weight_decay"] = cfg.weight_decay / group["lr"] if group["lr"] > 0 else 0.0
