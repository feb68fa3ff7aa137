"""Transfer assertions: does a cell's optimal learning rate carry over to another cell?

    optima = find_optima(df)
    for comp in plan_comparisons(grid):              # what to compare, known before any training
        verdict = judge(comp, optima, grid.transfer)
        verdict.outcome, verdict.message()           # "transfers" | "breaks" | "inconclusive"
    assert_transfer(df, axis="tokens", parametrization="mup")   # from a user's own test

Along width, each width is compared with the reference width (`[transfer] reference_width`, else the
base width if the grid has it, else the smallest) at the same token count; along tokens, each budget
with the shortest at the same width. The shift of the optimum has a 95% interval over the seeds both
cells share (paired). The band is the set of shifts that cost at most `max_regret` of loss in the other
cell, from its fitted curvature on each side (or +-`tolerance_log2` when the grid fixes it). The
comparison transfers when the interval lies inside the band, breaks when it lies outside, and is
inconclusive otherwise, with one seed, or with a censored cell. The regret at the transferred rate is
reported from a real run where the other cell has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mupcheck.analysis.collect import CellOptimum, find_optima
from mupcheck.analysis.curves import t_interval
from mupcheck.analysis.drift import fit_drift
from mupcheck.fmt import format_tokens
from mupcheck.spec import AXES, Grid, TransferSettings

__all__ = ["Comparison", "Verdict", "plan_comparisons", "comparisons_for", "judge", "assert_transfer",
           "TransferError", "is_expected_break", "WiderVerdict", "wider_is_better", "reference_value",
           "rule_beta", "rule_comparisons"]


class TransferError(AssertionError):
    """The optimal learning rate did not transfer; the message shows both cells and the curves."""


def _fmt(axis: str, value: int) -> str:
    return format_tokens(value) if axis == "tokens" else str(value)


@dataclass(frozen=True)
class Comparison:
    """Reference cell vs other cell along one axis, the other axis held fixed."""

    axis: str  # "width" or "tokens": the axis that changes
    parametrization: str
    fixed: int  # the value of the other axis
    ref: int  # reference value along `axis`
    other: int

    @property
    def fixed_axis(self) -> str:
        return "tokens" if self.axis == "width" else "width"

    def cell(self, value: int) -> tuple[str, int, int]:
        width, tokens = (value, self.fixed) if self.axis == "width" else (self.fixed, value)
        return (self.parametrization, width, tokens)

    @property
    def test_id(self) -> str:
        """Reads like the finding: width[mup tokens=1M 32->256]."""
        return (f"{self.axis}[{self.parametrization} {self.fixed_axis}={_fmt(self.fixed_axis, self.fixed)} "
                f"{_fmt(self.axis, self.ref)}->{_fmt(self.axis, self.other)}]")

    @property
    def label(self) -> str:
        """'width 32 -> 256 at tokens 1M', without the parametrization."""
        return (f"{self.axis} {_fmt(self.axis, self.ref)} -> {_fmt(self.axis, self.other)} at "
                f"{self.fixed_axis} {_fmt(self.fixed_axis, self.fixed)}")

    def title(self) -> str:
        return f"{self.label} ({self.parametrization})"


def reference_value(grid: Grid, axis: str) -> int:
    """The reference cell's value along `axis`: `[transfer] reference_width`, else the base width if the
    grid has it, else the smallest width; the shortest token budget."""
    if axis == "width":
        if grid.transfer.reference_width is not None:
            return grid.transfer.reference_width
        return grid.base_width if grid.base_width in grid.widths else grid.widths[0]
    return grid.tokens[0]


def comparisons_for(axis: str, parametrizations: tuple[str, ...], values: tuple[int, ...],
                    fixed_values: tuple[int, ...], ref: int) -> list[Comparison]:
    return [Comparison(axis, par, fixed, ref, v)
            for par in parametrizations for fixed in fixed_values for v in values if v != ref]


def plan_comparisons(grid: Grid) -> list[Comparison]:
    """Every comparison a grid asks for: along each axis it varies, for each parametrization."""
    axes = {"width": (grid.widths, grid.tokens), "tokens": (grid.tokens, grid.widths)}
    out: list[Comparison] = []
    for axis in AXES:
        values, fixed = axes[axis]
        if len(values) > 1:
            out += comparisons_for(axis, grid.parametrization, values, fixed, reference_value(grid, axis))
    return out


def is_expected_break(comp: Comparison, settings: TransferSettings) -> bool:
    """`expect_break` entries are an axis ("tokens") or a parametrization and an axis ("sp:width")."""
    return comp.axis in settings.expect_break or f"{comp.parametrization}:{comp.axis}" in settings.expect_break


Outcome = Literal["transfers", "breaks", "inconclusive"]
# The power rule's beta is fitted on this many shortest budgets by default: two budgets an octave apart
# gave betas from -0.001 to 0.681 where all cells gave 0.015 to 0.388 (issue 13).
RULE_FIT_BUDGETS = 3
# A band wider than this (a flat curve: no regret anywhere near) is capped: the measured range is finite.
MAX_BAND_LOG2 = 3.0


@dataclass(frozen=True)
class Verdict:
    """One comparison, decided from its noise: the shift of the optimum with its interval over seeds,
    against the band of shifts that cost at most `max_regret` in the other cell."""

    comparison: Comparison
    ref: CellOptimum
    other: CellOptimum
    shift: float  # other optimum - transferred optimum, log2 (NaN if either is missing)
    interval: tuple[float, float] | None  # 95% interval of the shift, paired over shared seeds
    band: tuple[float, float]  # shifts whose regret stays within max_regret: (-delta_right, +delta_left)
    band_source: str  # "regret" (from the other cell's curvature) or "fixed" (tolerance_log2)
    regret: float  # relative extra loss in the other cell at the transferred lr (NaN: unknown)
    regret_source: str  # "measured", "fitted", "interpolated" or why it is unknown
    max_regret: float
    outcome: Outcome
    reason: str  # why this outcome, in a phrase
    beta: float = 0.0  # drift rule along tokens: transferred = ref - beta * log2(T_other / T_ref)

    @property
    def transferred(self) -> float:
        """The learning rate (log2) carried over from the reference cell, rule applied."""
        return self.ref.lr_log2 - _drift(self.comparison, self.beta)

    @property
    def passed(self) -> bool:
        return self.outcome == "transfers"

    def summary(self) -> str:
        c = self.comparison
        if math.isfinite(self.shift):
            shift = f"optimum moved {self.shift:+.2f} log2"
            if self.beta:
                shift = (f"with the power rule (beta {self.beta:.3f}: transferred lr 2^{self.transferred:.2f}) the "
                         f"optimum is off by {self.shift:+.2f} log2")
            if self.interval:
                shift += f" (95% interval {self.interval[0]:+.2f} .. {self.interval[1]:+.2f})"
        else:
            shift = "no optimum to compare"
        why = (f"at most {100 * self.max_regret:g}% regret" if self.band_source == "regret" else "tolerance_log2")
        band = f"allowed {self.band[0]:+.2f} .. {self.band[1]:+.2f} log2 ({why})"
        regret = (f"regret {100 * self.regret:.2f}% ({self.regret_source})" if math.isfinite(self.regret)
                  else f"regret unknown ({self.regret_source})")
        return f"{c.title()}: {self.outcome.upper()}: {shift}; {band}; {regret}; {self.reason}"

    def message(self) -> str:
        """Both cells, both optima with intervals, the shift, the band, the regret, and the curves behind them."""
        c = self.comparison
        name_ref = f"{c.axis}={_fmt(c.axis, c.ref)}"
        name_other = f"{c.axis}={_fmt(c.axis, c.other)}"
        lines = [self.summary(),
                 f"  reference {name_ref:>14}: {self.ref.describe()}",
                 f"  other     {name_other:>14}: {self.other.describe()}",
                 f"  {'lr_log2':>8}  {'loss ' + name_ref:>20}  {'loss ' + name_other:>20}"]
        ref_curve = dict(zip(self.ref.lrs, self.ref.losses))
        other_curve = dict(zip(self.other.lrs, self.other.losses))
        for x in sorted(set(ref_curve) | set(other_curve)):
            mark = ("  <- ref optimum" if x == self.ref.grid_lr_log2 else "") + \
                   ("  <- other optimum" if x == self.other.grid_lr_log2 else "")
            lines.append(f"  {x:>8g}  {_loss_str(ref_curve.get(x)):>20}  {_loss_str(other_curve.get(x)):>20}{mark}")
        lines += [f"  note: {flag}" for flag in self.ref.flags + self.other.flags]
        return "\n".join(lines)


def _loss_str(x: float | None) -> str:
    if x is None:
        return "-"
    return "diverged" if math.isinf(x) else f"{x:.4f}"


def _drift(comp: Comparison, beta: float) -> float:
    return beta * math.log2(comp.other / comp.ref) if comp.axis == "tokens" and beta else 0.0


def regret_band(other: CellOptimum, settings: TransferSettings) -> tuple[tuple[float, float], str]:
    """The shifts (other optimum - transferred lr) that cost at most `max_regret` in the other cell: a
    positive shift puts the transferred lr below the optimum, on the curve's left side, so its limit is
    sqrt(max_regret * L* / a_left); or +-tolerance_log2 when the grid fixes it."""
    if settings.tolerance_log2 is not None:
        return (-settings.tolerance_log2, settings.tolerance_log2), "fixed"
    fit = other.fit

    def limit(a: float) -> float:
        if not math.isfinite(a):
            return math.nan
        return MAX_BAND_LOG2 if a <= 0 else min(MAX_BAND_LOG2, math.sqrt(settings.max_regret * other.loss / a))

    return (-limit(fit.a_right), limit(fit.a_left)), "regret"


def judge(comp: Comparison, optima: dict[tuple[str, int, int], CellOptimum],
          settings: TransferSettings = TransferSettings(), beta: float = 0.0) -> Verdict:
    """Compare the two cells of `comp`: transfers if the shift's interval lies inside the regret band,
    breaks if it lies outside, inconclusive otherwise (or without an interval, or with a censored cell).

    With `beta`, a tokens comparison transfers lr*(ref) * (T_other / T_ref)^-beta instead of lr*(ref).
    """
    ref, other = optima[comp.cell(comp.ref)], optima[comp.cell(comp.other)]
    band, band_source = regret_band(other, settings)
    drift = _drift(comp, beta)
    shift, interval, regret, regret_source = math.nan, None, math.nan, "no optimum"
    if ref.found and other.found:
        transferred = ref.lr_log2 - drift
        # Rounded: fits leave 1e-15 noise, which would print as "-0.00".
        shift = round(other.lr_log2 - transferred, 9) + 0.0
        interval = _paired_interval(ref, other, drift)
        at, regret_source = other.loss_at(transferred)
        # A fitted loss is read against the curve's own minimum (the band's yardstick), a run's against
        # the best run: a fit lying above the best run would otherwise add its misfit to the regret.
        floor = other.fit.loss if regret_source == "fitted" else other.loss
        if math.isfinite(at):
            regret = max(0.0, (at - floor) / other.loss)
        elif at == math.inf:
            regret = math.inf
    outcome, reason = _decide(ref, other, interval, band)
    return Verdict(comp, ref, other, shift, interval, band, band_source, regret, regret_source,
                   settings.max_regret, outcome, reason, beta)


def _paired_interval(ref: CellOptimum, other: CellOptimum, drift: float) -> tuple[float, float] | None:
    """95% interval of the shift over the seeds both cells share: seed s fixes init and data order in both,
    so its two optima are paired and their difference is what varies from seed to seed."""
    a, b = dict(ref.seed_optima), dict(other.seed_optima)
    diffs = [b[s] - (a[s] - drift) for s in sorted(set(a) & set(b))]
    return t_interval(diffs)


def _decide(ref: CellOptimum, other: CellOptimum, interval: tuple[float, float] | None,
            band: tuple[float, float]) -> tuple[Outcome, str]:
    for name, cell in (("reference", ref), ("other", other)):
        if not np.isfinite(cell.losses).any():
            return "inconclusive", f"every learning rate of the {name} cell diverged: extend lr_log2 lower"
        if cell.censored:
            side = "lower" if cell.censored == "low" else "upper"
            return "inconclusive", f"the {name} cell's optimum is censored on the {side} edge: extend lr_log2"
        if not cell.found:
            return "inconclusive", f"too few converged rates in the {name} cell to locate its optimum"
    if not all(math.isfinite(x) for x in band):
        return "inconclusive", "the other cell's curve has no curvature to set the band (a diverged neighbour)"
    if interval is None:
        n = min(ref.n_seeds, other.n_seeds)
        why = "one seed: the shift's noise is unknown" if n < 2 else "a seed's own optimum is censored"
        return "inconclusive", f"{why}; add seeds"
    lo, hi = interval
    if band[0] <= lo and hi <= band[1]:
        return "transfers", "the shift's interval lies inside the band"
    if hi < band[0] or lo > band[1]:
        return "breaks", "the shift's interval lies outside the band"
    return "inconclusive", "the shift's interval straddles the band's edge; add seeds (or refine the rates)"


def assert_transfer(df: pd.DataFrame, axis: str = "width", parametrization: str = "mup",
                    max_regret: float = 0.005, tolerance_log2: float | None = None,
                    reference: int | None = None) -> list[Verdict]:
    """Assert that the optimum transfers along `axis` for every cell of a collected frame.

    Raises TransferError listing every comparison that breaks or cannot be decided (inconclusive is not
    a pass); returns all verdicts when every one transfers.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    fixed_axis = "tokens" if axis == "width" else "width"
    sub = df[df["parametrization"] == parametrization]
    if sub.empty:
        raise ValueError(f"no runs with parametrization {parametrization!r}")
    values = tuple(sorted(int(v) for v in sub[axis].unique()))
    ref = reference if reference is not None else values[0]
    settings = TransferSettings(tolerance_log2=tolerance_log2, max_regret=max_regret)
    optima = find_optima(sub)
    fixed = tuple(sorted(int(v) for v in sub[fixed_axis].unique()))
    verdicts = [judge(c, optima, settings) for c in comparisons_for(axis, (parametrization,), values, fixed, ref)]
    failed = [v for v in verdicts if not v.passed]
    if failed:
        counts = ", ".join(f"{sum(v.outcome == o for v in failed)} {o}" for o in ("breaks", "inconclusive")
                           if any(v.outcome == o for v in failed))
        raise TransferError(f"{len(failed)} of {len(verdicts)} comparisons do not transfer ({counts}):\n\n"
                            + "\n\n".join(v.message() for v in failed))
    return verdicts


@dataclass(frozen=True)
class WiderVerdict:
    """'Wider is better': at one learning rate, the loss must not rise with width beyond a tolerance."""

    parametrization: str
    tokens: int
    lr_log2: float
    widths: tuple[int, ...]
    losses: tuple[float, ...]
    tolerance: float

    @property
    def worst_rise(self) -> float:
        """Largest relative rise of the loss from one width to the next (inf if a wider run diverged)."""
        rises = [(b - a) / a if math.isfinite(b) else math.inf
                 for a, b in zip(self.losses, self.losses[1:]) if math.isfinite(a)]
        return max(rises, default=0.0)

    @property
    def passed(self) -> bool:
        return self.worst_rise <= self.tolerance

    @property
    def test_id(self) -> str:
        return f"wider[{self.parametrization} tokens={format_tokens(self.tokens)}]"

    def message(self) -> str:
        status = "wider is better" if self.passed else "WIDER IS WORSE"
        if not math.isfinite(self.worst_rise):
            change = "a wider run diverged"
        elif self.worst_rise <= 0:
            change = f"the loss falls at every widening (the smallest fall {100 * -self.worst_rise:.2f}%)"
        else:
            change = f"largest rise of the loss from one width to the next {100 * self.worst_rise:+.2f}%"
        lines = [f"{self.parametrization} tokens={format_tokens(self.tokens)} at lr 2^{self.lr_log2:g}: {status}: "
                 f"{change} (tolerance {100 * self.tolerance:g}%)"]
        lines += [f"  width {w:>6}: loss {_loss_str(x)}" for w, x in zip(self.widths, self.losses)]
        if not self.passed and self.parametrization == "mup":
            lines.append("  hint: under muP a wider model trained with the same hyperparameters should not be worse; "
                         "run `mupcheck coord-check` on this model")
        return "\n".join(lines)


def wider_is_better(optima: dict[tuple[str, int, int], CellOptimum], parametrization: str, tokens: int,
                    widths: tuple[int, ...], reference_width: int, tolerance: float = 0.01) -> WiderVerdict:
    """Seed-mean losses across widths at the reference width's best learning rate among those every width
    measured (refinement adds different rates to different cells)."""
    ref = optima[(parametrization, reference_width, tokens)]
    cells = [optima[(parametrization, w, tokens)] for w in widths]
    shared = sorted(set.intersection(*(set(c.lrs) for c in cells)))
    curves = [dict(zip(c.lrs, c.losses)) for c in cells]
    ref_curve = dict(zip(ref.lrs, ref.losses))
    if not ref.found or not shared or not any(math.isfinite(ref_curve[x]) for x in shared):
        return WiderVerdict(parametrization, tokens, math.nan, tuple(widths), tuple(math.inf for _ in widths),
                            tolerance)
    x = min(shared, key=lambda lr: ref_curve[lr])
    return WiderVerdict(parametrization, tokens, x, tuple(widths), tuple(c[x] for c in curves), tolerance)


def rule_beta(df: pd.DataFrame, grid: Grid, parametrization: str) -> tuple[float, str]:
    """The power rule's beta (given, or fitted on the grid's fit budgets) and where it came from."""
    t = grid.transfer
    if t.lr_rule_beta is not None:
        return t.lr_rule_beta, f"beta {t.lr_rule_beta:g} from the grid"
    fit_tokens = set(t.lr_rule_fit_tokens or grid.tokens[:RULE_FIT_BUDGETS])
    fit = fit_drift(df, parametrization, tokens=fit_tokens)
    if fit is None:
        raise ValueError("cannot fit beta: no width has two converged token budgets among lr_rule_fit_tokens")
    where = ", ".join(format_tokens(x) for x in sorted(fit_tokens))
    return fit.beta, f"beta {fit.beta:.3f} fitted on tokens {where}"


def rule_comparisons(grid: Grid) -> list[Comparison]:
    """Tokens comparisons the power rule is checked on: those whose other cell was not used to fit it."""
    t = grid.transfer
    if t.lr_rule != "power" or len(grid.tokens) < 2:
        return []
    fit_tokens = set() if t.lr_rule_beta is not None else set(t.lr_rule_fit_tokens or grid.tokens[:RULE_FIT_BUDGETS])
    return [c for c in plan_comparisons(grid) if c.axis == "tokens" and c.other not in fit_tokens]
