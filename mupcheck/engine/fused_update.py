"""The update of a fused group: each member's own optimizer, reproduced over stacked parameters.

torch's optimizers give one learning rate per parameter group, not one per slice of a tensor, so the
fused engine cannot step the members' optimizers on their stacked tensors. Instead:
- `schedule_tables` builds every member's own optimizer (mup's MuAdamW or MuSGD under muP, torch's under
  SP, or the model's own), moves it through its schedule with `set_step_lr`, and records each group's
  learning rate and weight decay per (step, member): muP's per-parameter scaling comes from mup itself;
- `update_rule` reads which rule those optimizers follow (AdamW, or SGD with momentum) and with which
  hyperparameters, and refuses what the batched update cannot reproduce (`FusedUnsupported`);
- `FlatParams` keeps the stacked parameters as views into one (members, N) storage tensor per optimizer
  group, so that `adamw_step` and `sgd_step`, torch's formulas over those storages, launch a dozen
  kernels per group rather than per parameter.
Equivalence with solo runs, in float64, is tested in tests/engine/test_fused.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mupcheck.engine.optim import build_optimizer, set_step_lr
from mupcheck.spec import RunConfig

__all__ = ["FlatParams", "FusedUnsupported", "UpdateRule", "adamw_step", "schedule_tables", "sgd_step",
           "update_rule"]


class FusedUnsupported(Exception):
    """The model cannot be trained as a batched model; train its runs one at a time."""


@dataclass(frozen=True)
class UpdateRule:
    """The optimizer every member uses, as the batched update reproduces it: AdamW (torch's, amsgrad off) or
    SGD with momentum (no dampening, no Nesterov), with its hyperparameters read from the members' own
    optimizers (mup's, torch's, or the model's own)."""

    kind: str  # "adamw" or "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: tuple[float, ...] = (1e-8,)  # per optimizer group (a depth rule gives the hidden blocks their own)
    momentum: float = 0.0


def update_rule(optimizer: torch.optim.Optimizer) -> UpdateRule:
    """What the batched update must do to match `optimizer`; FusedUnsupported for anything else."""
    groups = optimizer.param_groups
    if isinstance(optimizer, (torch.optim.AdamW, torch.optim.Adam)):
        # Adam without weight decay is AdamW without weight decay; with it, their decays differ.
        if not isinstance(optimizer, torch.optim.AdamW) and any(g["weight_decay"] for g in groups):
            raise FusedUnsupported("torch.optim.Adam with weight decay (L2 in the gradient) is not batched")
        rules = {(tuple(g["betas"]), g.get("amsgrad", False), g.get("maximize", False)) for g in groups}
        if len(rules) != 1 or next(iter(rules))[1:] != (False, False):
            raise FusedUnsupported("AdamW groups with different betas, amsgrad or maximize are not batched")
        (beta1, beta2), _, _ = next(iter(rules))
        return UpdateRule("adamw", (float(beta1), float(beta2)), tuple(float(g["eps"]) for g in groups))
    if isinstance(optimizer, torch.optim.SGD):
        sgd_rules = {(g["momentum"], g["dampening"], g["nesterov"], g.get("maximize", False)) for g in groups}
        if len(sgd_rules) != 1 or next(iter(sgd_rules))[1:] != (0, False, False):
            raise FusedUnsupported("SGD with dampening, Nesterov, maximize or per-group momentum is not batched")
        momentum, _, _, _ = next(iter(sgd_rules))
        return UpdateRule("sgd", momentum=float(momentum))
    raise FusedUnsupported(f"{type(optimizer).__name__} is not batched (AdamW, Adam and SGD are)")


def schedule_tables(models: list[nn.Module], configs: list[RunConfig], steps: int, device: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, dict[str, int], UpdateRule]:
    """Learning rate and weight decay per (step, member, optimizer group), read from each member's own
    optimizer (the solo engine's: mup's under muP, or the model's own) as `set_step_lr` moves it through its
    own schedule (rows past a member's last step stay zero); the group of each parameter (by name), the
    same for every member; and the update rule, the same for every member."""
    groupings: list[dict[str, int]] = []
    rules: set[UpdateRule] = set()
    lr_rows, wd_rows = [], []
    for model, cfg in zip(models, configs):
        optimizer = build_optimizer(model, cfg)
        rules.add(update_rule(optimizer))
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        index = {id(p): g for g, group in enumerate(optimizer.param_groups) for p in group["params"]}
        missing = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in index]
        if missing:
            raise FusedUnsupported(f"parameter {missing[0]!r} is in no optimizer group")
        groupings.append({name: index.get(id(p), 0) for name, p in model.named_parameters()})
        if groupings[-1] != groupings[0]:  # cannot happen for runs that differ only in lr, seed, tokens
            raise FusedUnsupported("members' optimizers group the parameters differently")
        lr, wd = np.zeros((steps, len(base_lrs))), np.zeros((steps, len(base_lrs)))
        for step in range(cfg.steps):
            set_step_lr(optimizer, base_lrs, cfg, step)
            lr[step] = [group["lr"] for group in optimizer.param_groups]
            wd[step] = [group["weight_decay"] for group in optimizer.param_groups]
        lr_rows.append(lr)
        wd_rows.append(wd)
    if len(rules) != 1:
        raise FusedUnsupported("members' optimizers differ in their update rule")
    return (torch.as_tensor(np.stack(lr_rows, 1), dtype=dtype, device=device),
            torch.as_tensor(np.stack(wd_rows, 1), dtype=dtype, device=device), groupings[0], rules.pop())


class FlatParams:
    """The members' trainable parameters, stored as one (M, N) tensor per optimizer group.

    Each parameter is a leaf tensor that shares its group storage's memory, so forward and backward see
    ordinary stacked parameters, while the update runs a dozen kernels per *group* (a handful of
    groups) instead of per parameter: launch overhead is what fused training exists to remove.
    """

    def __init__(self, stacked: dict[str, torch.Tensor], group_of: dict[str, int]):
        self.members = next(iter(stacked.values())).shape[0]
        trainable = [n for n, t in stacked.items() if t.requires_grad]
        self.groups = sorted({group_of[n] for n in trainable})  # optimizer groups that hold a trainable parameter
        self.names = [[n for n in trainable if group_of[n] == g] for g in self.groups]
        self.storage = [torch.cat([stacked[n].detach().reshape(self.members, -1) for n in names], dim=1)
                        for names in self.names]  # (M, N_g)
        self.params = {n: t.detach() for n, t in stacked.items() if not t.requires_grad}  # frozen: as they are
        for names, storage in zip(self.names, self.storage):
            offset = 0
            for n in names:
                shape, size = stacked[n].shape, stacked[n][0].numel()
                # detach(): a leaf that shares the storage's memory (an update of the storage is seen here)
                self.params[n] = storage[:, offset:offset + size].view(shape).detach().requires_grad_()
                offset += size

    @property
    def trainable_names(self) -> list[str]:
        return [n for names in self.names for n in names]

    @property
    def trainable(self) -> list[torch.Tensor]:
        return [self.params[n] for n in self.trainable_names]

    def select(self, index: torch.Tensor) -> FlatParams:
        """The same parameters for the members (rows) in `index` only."""
        rows = {n: t.index_select(0, index) for n, t in self.params.items()}
        for n in self.trainable_names:
            rows[n].requires_grad_()
        group_of = {n: g for g, names in zip(self.groups, self.names) for n in names}
        return FlatParams(rows, group_of)

    def flat_grads(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Gradients (in `trainable` order) laid out like the storage: one (M, N_g) tensor per group."""
        out, i = [], 0
        for names in self.names:
            out.append(torch.cat([g.reshape(self.members, -1) for g in grads[i:i + len(names)]], dim=1))
            i += len(names)
        return out


# --- the optimizers, over (M, ...) tensors: one per group storage -----------------------------------

def _member_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member vector (M,) shaped to broadcast over a stacked tensor (M, ...)."""
    return t.reshape((-1,) + (1,) * (like.ndim - 1))


def adamw_step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
           exp_avg_sqs: list[torch.Tensor], lr: torch.Tensor, wd: torch.Tensor,
           bias_correction: torch.Tensor, betas: tuple[float, float], eps: Sequence[float]) -> None:
    """torch.optim.AdamW (amsgrad off), one step, over stacked tensors: torch's formulas with
    `lr`, `wd` (n, G) per member and tensor, `eps` per tensor, and bias corrections (1 - beta1^t,
    sqrt(1 - beta2^t))."""
    beta1, beta2 = betas
    for i, (p, grad, exp_avg, exp_avg_sq) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        lr_p = _member_view(lr[:, i], p)
        p.mul_(1 - lr_p * _member_view(wd[:, i], p))
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / bias_correction[1]).add_(eps[i])
        p.sub_(lr_p / bias_correction[0] * exp_avg / denom)


def sgd_step(params: list[torch.Tensor], grads: list[torch.Tensor], momentum_buffers: list[torch.Tensor],
         lr: torch.Tensor, wd: torch.Tensor, momentum: float) -> None:
    """torch.optim.SGD with momentum (no dampening, no Nesterov) and coupled weight decay, one step,
    over stacked tensors. The buffers start at zero, so the first step sets them to the gradient."""
    for i, (p, grad, buf) in enumerate(zip(params, grads, momentum_buffers)):
        buf.mul_(momentum).add_(grad + _member_view(wd[:, i], p) * p)
        p.sub_(_member_view(lr[:, i], p) * buf)
