"""muP lint: static checks of a model and its optimizer for the usual ways muP gets lost.

    findings = lint(models_by_width, optimizer=opt)       # [] when nothing is wrong
    for f in findings: print(f)                           # "[no-infshape] ... fix: ..."

Each finding names the problem, the parameters or modules concerned, and the fix. The checks
come from mup 1.0.0's own assertions and from mistakes reported in its issue tracker
(microsoft/mup#25 and #41: a model whose base shapes equal its own shapes is SP, even under a mup
optimizer):
- `no-infshape`: parameters without `infshape` (set_base_shapes never called, or lost by
  `copy.deepcopy`, which mup 1.0.0 does not carry over);
- `unit-multipliers`: every width multiplier is 1 at every width (the base model was built at the
  target width, or `base=None` was passed);
- `plain-readout`: an `nn.Linear` from a width dimension to a finite one that is not `MuReadout`;
- `not-mup-optimizer`: matrix-like parameters with width multiplier != 1 share one learning rate
  with vector-like ones (torch's AdamW instead of MuAdamW, or a scheduler that set every group's
  lr to one value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from mup import MuReadout
from torch import nn

from mupcheck.engine.data import TokenData
from mupcheck.engine.models import build_model
from mupcheck.engine.optim import build_optimizer
from mupcheck.spec import Grid, run_configs

__all__ = ["LintFinding", "lint", "lint_model", "lint_optimizer", "lint_grid"]


@dataclass(frozen=True)
class LintFinding:
    code: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}\n    fix: {self.fix}"


def _names(items: list[str], limit: int = 6) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def lint_model(model: nn.Module) -> list[LintFinding]:
    """Checks of one model's base shapes and readout."""
    missing = [n for n, p in model.named_parameters() if not hasattr(p, "infshape")]
    if missing:
        everything = len(missing) == len(list(model.parameters()))
        return [LintFinding(
            "no-infshape",
            f"{'no parameter has' if everything else f'{len(missing)} parameter(s) have'} `infshape` "
            f"({_names(missing)}): mup cannot scale them",
            "call mup.set_base_shapes(model, base_model, delta=delta_model) after building the model; "
            "after copy.deepcopy(model) (which drops p.infshape in mup 1.0.0) call it again with "
            "rescale_params=False")]
    findings = []
    readouts = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not isinstance(module, MuReadout):
            fan_out, fan_in = module.weight.infshape  # type: ignore[attr-defined]  # set by mup
            if fan_in.isinf() and not fan_out.isinf():
                readouts.append(name)
    if readouts:
        findings.append(LintFinding(
            "plain-readout",
            f"nn.Linear layer(s) {_names(readouts)} map a width dimension to a finite one (a readout) "
            "without muP's 1/width output multiplier",
            "replace them with mup.MuReadout (or MuSharedReadout for tied embeddings)"))
    return findings


def _unit_multipliers(models: Mapping[int, nn.Module]) -> list[LintFinding]:
    widths = sorted(models)
    shaped = [m for m in models.values() if all(hasattr(p, "infshape") for p in m.parameters())]
    if len(widths) < 2 or len(shaped) < len(widths):
        return []
    if all(p.infshape.width_mult() == 1 for m in shaped for p in m.parameters()):  # type: ignore[attr-defined]
        return [LintFinding(
            "unit-multipliers",
            f"every width multiplier is 1 at every width ({', '.join(map(str, widths))}): the base shapes "
            "were taken from the model itself, which is standard parametrization under another name "
            "(microsoft/mup#41)",
            "build the base model at the base width, e.g. set_base_shapes(model, build(base_width), "
            "delta=build(2 * base_width)); never base=None or the target model")]
    return []


def lint_optimizer(optimizer: torch.optim.Optimizer) -> list[LintFinding]:
    """Does the optimizer carry muP's per-group learning rates?"""
    scaled, lrs = [], set()
    for group in optimizer.param_groups:
        lrs.add(group["lr"])
        for p in group["params"]:
            shape = getattr(p, "infshape", None)
            if shape is not None and shape.ninf() == 2 and shape.width_mult() != 1:
                scaled.append(p)
    if scaled and len(lrs) == 1:
        return [LintFinding(
            "not-mup-optimizer",
            f"{len(scaled)} matrix-like parameter(s) have width multiplier != 1 but every parameter group "
            f"has the same learning rate ({lrs.pop():g}): muP's per-layer learning-rate scaling is missing",
            "use mup.MuAdamW / MuAdam / MuSGD; a scheduler must scale each group's own lr "
            "(group['lr'] = group['initial_lr'] * factor), never set one lr for all groups")]
    return []


def lint(models: Mapping[int, nn.Module], optimizer: torch.optim.Optimizer | None = None) -> list[LintFinding]:
    """All findings for a model built at several widths (and, optionally, the widest one's optimizer)."""
    findings: list[LintFinding] = []
    seen: set[str] = set()
    for width in sorted(models):
        for f in lint_model(models[width]):
            if f.code not in seen:  # one finding per problem, not one per width
                seen.add(f.code)
                findings.append(f)
    findings += _unit_multipliers(models)
    if optimizer is not None:
        findings += lint_optimizer(optimizer)
    return findings


def lint_grid(grid: Grid, data: TokenData) -> list[LintFinding]:
    """Lint the grid's muP model at every width of the grid (run before every sweep)."""
    if "mup" not in grid.parametrization:
        return []
    cfg = next(c for c in run_configs(grid) if c.parametrization == "mup")
    models = {w: build_model(replace(cfg, width=w), data.vocab_size) for w in grid.widths}
    return lint(models, build_optimizer(models[grid.widths[-1]], cfg))
