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
from mupcheck.spec import BUILTIN_OPTIMIZERS, RunConfig, import_factory, setting_default

__all__ = ["ADAM_BETA1", "ADAM_EPS", "SGD_MOMENTUM", "build_optimizer", "depth_param_groups", "set_step_lr"]

ADAM_BETA1 = 0.9
ADAM_EPS: float = setting_default("adam_eps")  # torch.optim.AdamW's default, and a grid's unless it sets adam_eps
SGD_MOMENTUM = 0.9


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """The model's own optimizer when the grid names one (`make_optimizer(model, lr, weight_decay)`); else
    mup's optimizers under muP (per-group scaling from base shapes), torch's under SP and custom."""
    if cfg.optimizer not in BUILTIN_OPTIMIZERS:
        return _own_optimizer(model, cfg)
    kw: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.coupled_weight_decay}
    mup = cfg.parametrization == "mup"
    params = depth_param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return (MuAdamW if mup else torch.optim.AdamW)(params, betas=(ADAM_BETA1, cfg.adam_beta2), eps=cfg.adam_eps,
                                                       **kw)
    return (MuSGD if mup else torch.optim.SGD)(params, momentum=SGD_MOMENTUM, **kw)


def depth_param_groups(model: nn.Module, cfg: RunConfig) -> Any:
    """The model's parameters, in two groups under a depth rule (CompleteP's Table 1, Dey et al., arXiv
    2505.01618, for Adam): the hidden (residual-block) parameters, LayerNorm gains included, train at
    lr * m^(alpha - 1) with epsilon * m^-alpha, where m = depth / base_depth; embeddings, the final norm and
    the readout keep the base rate. mup's optimizers then divide each group's rate by its width multiplier
    as usual. Without a depth rule, the parameters as one group (exactly what ran before the rule existed).
    The paper derives these rates for AdamW; under SGD only the residual multiplier applies."""
    if not cfg.depth_alpha or cfg.depth_multiplier == 1.0 or cfg.optimizer != "adamw":
        return model.parameters()
    hidden_of = getattr(model, "hidden_parameters", None)
    if hidden_of is None:
        raise ModelError(f"model {cfg.model!r}: a depth rule (depth_alpha) needs the built-in models")
    hidden = hidden_of()
    ids = {id(p) for p in hidden}
    m, alpha = cfg.depth_multiplier, cfg.depth_alpha
    return [{"params": [p for p in model.parameters() if id(p) not in ids]},
            {"params": hidden, "lr": cfg.lr * m ** (alpha - 1), "eps": cfg.adam_eps * m ** -alpha}]


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
