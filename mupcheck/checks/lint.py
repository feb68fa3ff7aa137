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

import numpy as np
import torch
from mup import MuReadout
from torch import nn

from mupcheck.engine.data import TokenData, train_batch
from mupcheck.engine.models import build_model, model_logits
from mupcheck.engine.optim import build_optimizer
from mupcheck.spec import Grid, LintSettings, arm_config

__all__ = ["LintFinding", "apply_ignores", "lint", "lint_grid", "lint_model", "lint_optimizer"]


@dataclass(frozen=True)
class LintFinding:
    code: str
    message: str
    fix: str
    warning: bool = False  # shown, but does not fail the lint
    silenced: str | None = None  # the grid's reason for ignoring it ([lint] ignore)

    @property
    def fails(self) -> bool:
        return not self.warning and self.silenced is None

    def __str__(self) -> str:
        if self.silenced is not None:
            return f"[{self.code}] silenced by the grid: {self.silenced} (finding: {self.message})"
        label = f"[{self.code}] warning:" if self.warning else f"[{self.code}]"
        return f"{label} {self.message}\n    fix: {self.fix}"


def _names(items: list[str], limit: int = 6) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def lint_model(model: nn.Module, static_readout: bool = True) -> list[LintFinding]:
    """Checks of one model's base shapes and (with `static_readout`, when no measurement is at hand) its
    readout's type."""
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
    if readouts and static_readout:
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


def lint(models: Mapping[int, nn.Module], optimizer: torch.optim.Optimizer | None = None,
         batch: torch.Tensor | None = None, parametrization: str = "mup",
         base_width: int | None = None) -> list[LintFinding]:
    """All findings for a model built at several widths (and, optionally, the widest one's optimizer).

    With `batch` (token ids), whether the readout carries muP's 1/width multiplier is measured, not guessed
    from its type: a readout whose output keeps its size at init as width grows is flagged, whatever its
    class (a hand-written `nn.Linear` head with a 1/width multiplier in `forward` passes). Under
    "custom" the model applies muP itself: mup's base shapes and optimizer groups are not asked for.
    """
    findings: list[LintFinding] = []
    if parametrization == "mup":
        seen: set[str] = set()
        for width in sorted(models):
            for f in lint_model(models[width], static_readout=batch is None):
                if f.code not in seen:  # one finding per problem, not one per width
                    seen.add(f.code)
                    findings.append(f)
        findings += _unit_multipliers(models)
        if optimizer is not None:
            findings += lint_optimizer(optimizer)
    if batch is not None:
        findings += _flat_readouts(models, batch)
    if base_width is not None:
        findings += _base_width_mismatch(models, base_width)
    return findings


# An output-like quantity that does not shrink at least this fast (log2 size per doubling of width) at init
# keeps its size: the readout lacks muP's 1/width multiplier (correct muP measured about -0.5).
READOUT_INIT_SLOPE = -0.25


def _flat_readouts(models: Mapping[int, nn.Module], batch: torch.Tensor) -> list[LintFinding]:
    """Measured at init: the centred size of the model's logits (what the softmax sees) against width. A
    readout with muP's 1/width multiplier makes it shrink, wherever the multiplier sits (MuReadout, or a
    hand-written head scaled in forward); a plain readout keeps it. Zero logits (a zero-initialised readout)
    say nothing and are not judged."""
    widths = sorted(models)
    sizes = np.array([_logit_size(models[w], batch) for w in widths])
    if len(widths) < 2 or not (sizes > 0).all():
        return []
    slope = float(np.polyfit(np.log2(widths), np.log2(sizes), 1)[0])
    if slope <= READOUT_INIT_SLOPE:
        return []
    measured = (f"the model's logits keep their size at init as width grows (slope {slope:+.2f} per doubling "
                f"over widths {', '.join(map(str, widths))}); muP makes them shrink (about -0.5) with a 1/width "
                "readout multiplier")
    if any(isinstance(m, MuReadout) for m in models[widths[-1]].modules()):
        # The head is mup's already: its weights are what keeps the logits' size (issue 26: mutransformers'
        # GPT-2 must re-initialise after set_base_shapes, and said "use mup.MuReadout" of a MuReadout).
        return [LintFinding(
            "plain-readout", measured + "; the readout is already a MuReadout, so its weights are initialised as "
                                        "in standard parametrization",
            "re-initialise the model after set_base_shapes (mup's init functions read the width multipliers set "
            "there; mutransformers: call model.apply(model._init_weights) after set_base_shapes), and make the "
            "factory do it, since mupcheck sets base shapes but never re-initialises")]
    return [LintFinding(
        "plain-readout", measured,
        "divide the readout's output by the width multiplier (width / base_width): mup.MuReadout (or "
        "MuSharedReadout for tied embeddings) does it, or a hand-written head can in forward")]


@torch.no_grad()
def _logit_size(model: nn.Module, batch: torch.Tensor) -> float:
    """Mean |logits - their mean over the vocabulary| on one batch, in eval mode."""
    training = model.training
    model.eval()
    try:
        logits = model_logits(model, batch, torch.roll(batch, -1, dims=-1)).float()
    finally:
        model.train(training)
    return float((logits - logits.mean(dim=-1, keepdim=True)).abs().mean())


_BASE_WIDTH_ATTRS = ("base_width", "mup_base_width", "base_d_model", "mup_base_dim")


def _base_width_mismatch(models: Mapping[int, nn.Module], base_width: int) -> list[LintFinding]:
    """A model that says which base width its own muP assumes, and the grid assumes another."""
    model = models[max(models)]
    owners = [model, getattr(model, "config", None)]
    for owner in owners:
        for attr in _BASE_WIDTH_ATTRS:
            value = getattr(owner, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value != base_width:
                return [LintFinding(
                    "base-width-mismatch",
                    f"the model's own `{attr}` is {value} but the grid's base_width is {base_width}: the grid's "
                    "base shapes (and any lr scaling derived from them) differ from the model's own",
                    f"set base_width = {value} in the grid, or build the model with the grid's base width",
                    warning=True)]
    return []


def apply_ignores(findings: list[LintFinding], settings: LintSettings | None) -> list[LintFinding]:
    """Mark findings the grid silences (`[lint] ignore = {code = "reason"}`), keeping the reason."""
    ignore = dict(settings.ignore) if settings else {}
    return [replace(f, silenced=ignore[f.code]) if f.code in ignore else f for f in findings]


def lint_grid(grid: Grid, data: TokenData) -> list[LintFinding]:
    """Lint the grid's muP arm ("mup" or "custom") at every width of the grid (run before every sweep)."""
    arm = grid.mup_arm
    if arm is None:
        return []
    cfg = arm_config(grid, arm)  # a swept key at its grid setting
    models = {w: build_model(replace(cfg, width=w), data.vocab_size) for w in grid.widths}
    batch, _ = train_batch(data, step=0, seed=0, batch_size=min(cfg.batch_size, 4), seq_len=cfg.seq_len)
    findings = lint(models, build_optimizer(models[grid.widths[-1]], cfg), batch, arm, grid.base_width)
    return apply_ignores(findings, grid.lint)
