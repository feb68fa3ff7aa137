"""Transfer assertions: does a cell's optimal learning rate carry over to another cell?

    optima = find_optima(df)
    for comp in plan_comparisons(grid):              # what to compare (mupcheck.analysis.comparison)
        verdict = judge(comp, optima, grid.transfer)
        verdict.outcome, verdict.message()           # "transfers" | "breaks" | "inconclusive"
    assert_transfer(df, axis="tokens", parametrization="mup")   # from a user's own test

Along width, each width is compared with the reference width (`[transfer] reference_width`, else the
base width if the grid has it, else the smallest) at the same token count; along tokens, each budget
with the shortest at the same width. Two pieces of evidence decide:

- the **shift** of the optimum, paired over the seeds whose optimum was found in both cells (a seed
  fixes init and data order in both), with its 95% interval, against the **band**: the shifts that cost
  at most `max_regret` of loss in the other cell (`mupcheck.analysis.regret`: from its curvature on each
  side of its optimum, never wider than its runs support, or +-`tolerance_log2` when the grid fixes it).
  With fewer than two paired seeds (one seed per cell, or seeds the cells do not share) the shift is the
  difference of the cells' means, and its interval comes from each cell's noise in the sweep's noise model
  (`mupcheck.analysis.noise`), which the verdict names; a coarse fit's resolution (`curves.widen`) widens a
  paired interval, and is part of the noise model's;
- the **regret** at the transferred rate (`mupcheck.analysis.regret.paired_regret`): each seed's loss there
  over that seed's own smooth curve at the other cell's optimum (the intercept of a fit over its runs near
  the optimum, x0 held there: never the run read at the transferred rate, so it cannot be zero by
  construction), minus 1; measured from a run there (or interpolated between two close ones) with its 95%
  interval over seeds, or from the loss noise with one seed; read off the fitted curve only inside the
  span of rates that fit used; past it, a lower bound from the run between the optimum and the transferred
  rate (*at least*).

A comparison **breaks** when the transferred rate diverged in every seed of the other cell that ran it
(wherever that cell's optimum lies), when the measured regret's interval, or a lower bound's, lies above
`max_regret` (whatever the shift says), or when the shift's interval lies outside the band. It
**transfers** when the shift's interval lies inside the band and no measured regret reaches past
`max_regret`. Anything else is **inconclusive**, with the reason that stopped it. A decisive verdict whose
deciding bound lies within BORDERLINE_LOG2 of the band's edge or BORDERLINE_REGRET of `max_regret` is
marked *borderline*; its outcome stands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mupcheck.analysis.comparison import (
    RULE_FIT_BUDGETS,
    Comparison,
    axis_value,
    batch_fit_sizes,
    comparisons_for,
    drift_of,
    reference_value,
    split_rest,
)
from mupcheck.analysis.curves import t_interval, widen
from mupcheck.analysis.drift import axis_law, fit_drift
from mupcheck.analysis.noise import Noise, NoiseModel, noise_model
from mupcheck.analysis.optima import CellOptimum, find_optima
from mupcheck.analysis.regret import MAX_BAND_LOG2, Band, Regret, one_seed_regret, paired_regret, regret_band
from mupcheck.fmt import format_loss, format_tokens
from mupcheck.spec import AXES, LR_BATCH_RULES, Cell, Grid, TransferSettings

__all__ = ["BORDERLINE_LOG2", "BORDERLINE_REGRET", "MAX_BAND_LOG2", "Band", "Outcome", "Regret", "TransferError",
           "Verdict", "assert_transfer", "batch_rule_exponent", "combined_half_width", "judge", "paired_regret",
           "regret_band", "rule_beta"]


class TransferError(AssertionError):
    """The optimal learning rate did not transfer; the message shows both cells and the curves."""


Outcome = Literal["transfers", "breaks", "inconclusive"]


# A decisive verdict whose deciding bound lies this close to its threshold is marked borderline: the outcome
# stands, but a reviewer should know that a little more data could move it (issue 41).
BORDERLINE_REGRET = 0.0002  # 0.02 percentage points of regret
BORDERLINE_LOG2 = 0.05  # of the band's edge


@dataclass(frozen=True)
class Verdict:
    """One comparison, decided from its noise: the shift of the optimum with its interval over seeds
    against the band of shifts that cost at most `max_regret` in the other cell, and the measured regret."""

    comparison: Comparison
    ref: CellOptimum
    other: CellOptimum
    shift: float  # other optimum - transferred optimum, log2, mean over the paired seeds (NaN if none)
    interval: tuple[float, float] | None  # 95% interval of the shift, over the same seeds
    bands: Band  # the shifts whose regret stays within max_regret (mupcheck.analysis.regret)
    regret_at: Regret  # in the other cell at the transferred rate
    max_regret: float
    outcome: Outcome
    reason: str  # why this outcome, in a phrase
    beta: float = 0.0  # a rule's exponent (see drift_of): along tokens, transferred = ref - beta * log2(T / T_ref)
    noise: str = "paired seeds"  # where the shift's interval came from: paired seeds, or the noise model's source
    borderline: str = ""  # why a decisive outcome is borderline (its deciding bound near its threshold); "" if not

    @property
    def band(self) -> tuple[float, float]:
        """The shifts known to cost at most max_regret: (-delta_right, +delta_left)."""
        return self.bands.inner

    @property
    def band_source(self) -> str:
        return self.bands.source

    @property
    def regret(self) -> float:
        return self.regret_at.value

    @property
    def regret_source(self) -> str:
        return self.regret_at.source

    @property
    def regret_interval(self) -> tuple[float, float] | None:
        return self.regret_at.interval

    @property
    def transferred(self) -> float:
        """The learning rate (log2) carried over from the reference cell, rule applied."""
        return self.ref.optimum_log2 - drift_of(self.comparison, self.beta)

    @property
    def passed(self) -> bool:
        return self.outcome == "transfers"

    def summary(self) -> str:
        c = self.comparison
        if math.isfinite(self.shift):
            shift = f"optimum moved {self.shift:+.2f} log2"
            if self.beta:
                rule = (f"the power rule (beta {self.beta:.3f}" if c.axis == "tokens" else
                        f"the batch rule (exponent {self.beta:.3f}")
                shift = (f"with {rule}: transferred lr 2^{self.transferred:.2f}) the optimum is off by "
                         f"{self.shift:+.2f} log2")
            if self.interval:
                noise = "" if self.noise == "paired seeds" else f"; noise: {self.noise}"
                shift += f" (95% interval {self.interval[0]:+.2f} .. {self.interval[1]:+.2f}{noise})"
        else:
            shift = "no optimum to compare"
        why = (f"at most {100 * self.max_regret:g}% regret" if self.band_source == "regret" else "tolerance_log2")
        band = (f"allowed {self.bands.text()} log2 ({why})" if all(map(math.isfinite, self.band)) else "no band")
        edge = f" (BORDERLINE: {self.borderline})" if self.borderline else ""
        return (f"{c.title()}: {self.outcome.upper()}{edge}: {shift}; {band}; regret {self.regret_at.text()}; "
                f"{self.reason}")

    def message(self) -> str:
        """Both cells, both optima with intervals, the shift, the band, the regret, and the curves behind them."""
        c = self.comparison
        name_ref = f"{c.axis}={axis_value(c.axis, c.ref)}"
        name_other = f"{c.axis}={axis_value(c.axis, c.other)}"
        lines = [self.summary(),
                 f"  reference {name_ref:>14}: {self.ref.describe()}",
                 f"  other     {name_other:>14}: {self.other.describe()}",
                 f"  {'lr_log2':>8}  {'loss ' + name_ref:>20}  {'loss ' + name_other:>20}"]
        ref_curve = dict(zip(self.ref.xs, self.ref.losses))
        other_curve = dict(zip(self.other.xs, self.other.losses))
        for x in sorted(set(ref_curve) | set(other_curve)):
            mark = ("  <- ref optimum" if x == self.ref.best_measured_log2 else "") + \
                   ("  <- other optimum" if x == self.other.best_measured_log2 else "")
            lines.append(f"  {x:>8g}  {format_loss(ref_curve.get(x)):>20}  {format_loss(other_curve.get(x)):>20}{mark}")
        lines += [f"  note: {flag}" for flag in self.ref.flags + self.other.flags]
        return "\n".join(lines)


def judge(comp: Comparison, optima: dict[Cell, CellOptimum],
          settings: TransferSettings = TransferSettings(), beta: float = 0.0,
          noise: NoiseModel | None = None) -> Verdict:
    """Compare the two cells of `comp` (see the module docstring for the rule).

    With `beta`, a tokens comparison transfers lr*(ref) * (T_other / T_ref)^-beta instead of lr*(ref), a
    batch-size comparison lr*(ref) * (B_other / B_ref)^beta. `noise`: the sweep's noise model (for comparisons
    that cannot pair two seeds); by default, the one the two cells give on their own.
    """
    ref, other = optima[comp.cell(comp.ref)], optima[comp.cell(comp.other)]
    if noise is None:
        noise = noise_model({comp.cell(comp.ref): ref, comp.cell(comp.other): other}, comp.parametrization)
    band = regret_band(other, settings)
    drift = drift_of(comp, beta)
    shift, interval, source = math.nan, None, ""
    regret = Regret(math.nan, None, (), "no optimum", math.nan)
    if ref.found:
        regret = paired_regret(other, ref.optimum_log2 - drift, noise.loss_of(other))
        if other.found:
            shift, interval, source = _shift(ref, other, drift, noise)
            if regret.from_runs and len(regret.finite) == 1 and regret.interval is not None:
                regret = one_seed_regret(regret, shift, interval, other)
    decision = _decide(ref, other, interval, band, regret, settings.max_regret)
    return Verdict(comp, ref, other, shift, interval, band, regret, settings.max_regret, decision.outcome,
                   decision.reason, beta, source, decision.borderline)


def _shift(ref: CellOptimum, other: CellOptimum, drift: float,
           noise: NoiseModel) -> tuple[float, tuple[float, float] | None, str]:
    """(shift, its 95% interval, where the interval's noise came from). Paired over the seeds whose optimum was
    found in both cells, where there are two or more: seed s fixes init and data order in both, so its two optima
    are paired and their difference is what varies from seed to seed; point and interval rest on the same seeds.
    Otherwise the difference of the cells' means, each with its cell's noise of one seed's optimum (the noise
    model's, with what the cell's rates can resolve in quadrature). A coarse fit's resolution widens the paired
    interval (a systematic error the seeds share); the noise model's already holds it."""
    a, b = dict(ref.seed_optima), dict(other.seed_optima)
    diffs = [b[s] - (a[s] - drift) for s in sorted(set(a) & set(b)) if math.isfinite(a[s]) and math.isfinite(b[s])]
    resolution = math.hypot(ref.resolution, other.resolution)
    if len(diffs) >= 2:
        # Rounded: fits leave 1e-15 noise, which would print as "-0.00".
        return round(float(np.mean(diffs)), 9) + 0.0, widen(t_interval(diffs), resolution), "paired seeds"
    ra, rb = ref.found_optima, other.found_optima
    shift = round(float(np.mean(rb) - (np.mean(ra) - drift)), 9) + 0.0
    na, nb = noise.optimum_of(ref), noise.optimum_of(other)
    if na is None or nb is None:
        return shift, None, ""
    # The cells' noise already holds their rates' resolution (NoiseModel.optimum_of): not added again.
    half = combined_half_width((na, len(ra)), (nb, len(rb)))
    return shift, (shift - half, shift + half), na.source if na.source == nb.source else f"{na.source}, {nb.source}"


def combined_half_width(*terms: tuple[Noise, int]) -> float:
    """The 95% half-width of a sum of means, each of `n` values with SD `noise.sd`: Student's t at the smallest
    degrees of freedom among them (conservative where they differ)."""
    sd = math.sqrt(sum(n.sd**2 / k for n, k in terms))
    worst = min(terms, key=lambda t: t[0].df)[0]
    return worst.quantile() * sd


@dataclass(frozen=True)
class _Decision:
    outcome: Outcome
    reason: str
    borderline: str = ""


def _decide(ref: CellOptimum, other: CellOptimum, interval: tuple[float, float] | None,
            band: Band, regret: Regret, max_regret: float) -> _Decision:
    for name, cell in (("reference", ref), ("other", other)):
        if not np.isfinite(cell.losses).any():
            return _Decision("inconclusive", f"every learning rate of the {name} cell diverged: extend lr_log2 lower")
    measured = regret.from_runs and regret.per_seed
    if measured and all(map(math.isinf, regret.per_seed)):
        n = len(regret.per_seed)
        return _Decision("breaks", f"the transferred rate diverged in {'the' if n == 1 else f'every one of the {n}'} "
                                   "seed(s) of the other cell that ran it")
    if regret.lower_bound and regret.value == math.inf and all(map(math.isinf, regret.per_seed)):
        return _Decision("breaks", f"a rate between the transferred rate and the other cell's optimum (2^"
                                   f"{regret.read_at:.2f}) diverged in every seed that ran it")
    for name, cell in (("reference", ref), ("other", other)):
        if cell.censored:
            side = "lower" if cell.censored == "low" else "upper"
            return _Decision("inconclusive", f"the {name} cell's optimum is censored on the {side} edge: extend "
                                             "lr_log2")
        if not cell.found:
            return _Decision("inconclusive", f"the {name} cell's optimum is not located: fewer than half of its seeds' "
                                             "optima were found (pinned or censored); refine the rates near it")
    if (measured or regret.lower_bound) and regret.interval and regret.interval[0] > max_regret:
        near = _near(regret.interval[0] - max_regret, BORDERLINE_REGRET,
                     f"the regret's lower end {100 * regret.interval[0]:.3f}% is within 0.02 points of max_regret")
        if near and interval is not None and _outside(interval, band.outer) >= BORDERLINE_LOG2:
            near = ""  # the shift's interval breaks it too, clear of the band's edge: two pieces of evidence agree
        if regret.lower_bound:
            return _Decision("breaks", f"the regret at the transferred rate is at least the regret of the run at 2^"
                                       f"{regret.read_at:.2f}, between it and the other cell's optimum, whose "
                                       "interval lies above max_regret", near)
        if regret.value == math.inf:
            return _Decision("breaks", "the transferred rate diverged in some seeds of the other cell, and the others' "
                                       "measured regret's interval lies above max_regret", near)
        return _Decision("breaks", "the measured regret's interval lies above max_regret", near)
    if interval is None:
        a = {s for s, x in ref.seed_optima if math.isfinite(x)}
        b = {s for s, x in other.seed_optima if math.isfinite(x)}
        if not a & b and len(a) + len(b) > 2:
            return _Decision("inconclusive", f"the two cells share no seed with an optimum in both (seeds "
                                             f"{', '.join(map(str, sorted(a)))} and {', '.join(map(str, sorted(b)))}), "
                                             "so the shift cannot be paired; an unpaired one needs the noise of one "
                                             "seed's optimum: two seeds located in some cell, or a [noise] table "
                                             "(optimum_sd_log2)")
        return _Decision("inconclusive", "one seed in a cell, and no noise estimate for it: add seeds, state the noise "
                                         "in a [noise] table (optimum_sd_log2), or sweep more cells for a law's "
                                         "residuals")
    if not all(math.isfinite(x) for x in band.inner):
        return _Decision("inconclusive", "the other cell's curve has too few usable rates on one side of its optimum "
                                         "to set the band; refine the rates there")
    return _decide_band(interval, band, regret, max_regret, bool(measured))


def _decide_band(interval: tuple[float, float], band: Band, regret: Regret, max_regret: float,
                 measured: bool) -> _Decision:
    """The shift's interval against the band (inner: known cheap; outer: known costly), and the regret."""
    lo, hi = interval
    (inner_lo, inner_hi), (outer_lo, outer_hi) = band.inner, band.outer
    reaches = measured and (regret.interval is None or regret.interval[1] > max_regret or regret.value == math.inf)
    reaches = reaches or (regret.lower_bound and regret.value > max_regret)
    if inner_lo <= lo and hi <= inner_hi:
        if reaches:
            what = (f"the transferred rate diverged or was unusable in {sum(map(math.isinf, regret.per_seed))} "
                    "seed(s)" if any(map(math.isinf, regret.per_seed)) else
                    f"the regret is at least {100 * regret.value:.2f}%" if regret.lower_bound else
                    "the measured regret has no interval (one seed, and no loss noise estimate)"
                    if regret.interval is None else
                    f"the measured regret's interval reaches {100 * regret.interval[1]:.2f}%, past max_regret")
            return _Decision("inconclusive", f"the shift's interval lies inside the band, but {what}; add seeds")
        near = "; ".join(filter(None, (
            _near(min(lo - inner_lo, inner_hi - hi), BORDERLINE_LOG2,
                  f"the shift's interval ends {min(lo - inner_lo, inner_hi - hi):.2f} log2 inside the band's edge"),
            _near(max_regret - regret.interval[1], BORDERLINE_REGRET,
                  f"the measured regret's upper end {100 * regret.interval[1]:.3f}% is within 0.02 points of "
                  "max_regret") if measured and regret.interval else "")))
        return _Decision("transfers", "the shift's interval lies inside the band" + (
            " and the measured regret's interval stays within max_regret" if measured else ""), near)
    if hi < outer_lo or lo > outer_hi:
        if measured and not reaches:
            return _Decision("inconclusive", "the shift's interval lies outside the band read off the fitted "
                                             "curvature, but the measured regret's interval stays within max_regret: "
                                             "the curve is flatter there than its fit; refine the rates")
        gap = outer_lo - hi if hi < outer_lo else lo - outer_hi
        return _Decision("breaks", "the shift's interval lies outside the band",
                         _near(gap, BORDERLINE_LOG2, f"the shift's interval ends {gap:.2f} log2 past the band's edge"))
    if (lo < inner_lo and inner_lo != outer_lo) or (hi > inner_hi and inner_hi != outer_hi):
        return _Decision("inconclusive", "the other cell's runs bound the band's edge on that side without locating "
                                         f"it (between {band.text()}): refine the rates there, or add seeds")
    edge = inner_lo if lo < inner_lo else inner_hi
    also = ""
    if measured and regret.interval is not None and regret.interval[0] <= max_regret < regret.interval[1]:
        also = (f"; the measured regret ({100 * regret.interval[0]:.2f} .. {100 * regret.interval[1]:.2f}%) "
                f"straddles max_regret too")
    return _Decision("inconclusive", f"the shift's interval ({lo:+.2f} .. {hi:+.2f}) straddles the band's edge at "
                                     f"{edge:+.2f}{also}: add seeds (or refine the rates)")


def _outside(interval: tuple[float, float], band: tuple[float, float]) -> float:
    """How far (log2) the interval lies outside the band; negative where they overlap."""
    return max(band[0] - interval[1], interval[0] - band[1])


def _near(gap: float, within: float, text: str) -> str:
    return text if 0 <= gap < within else ""


def assert_transfer(df: pd.DataFrame, axis: str = "width", parametrization: str = "mup",
                    max_regret: float = 0.005, tolerance_log2: float | None = None,
                    reference: int | None = None) -> list[Verdict]:
    """Assert that the optimum transfers along `axis` for every cell of a collected frame.

    Raises TransferError listing every comparison that breaks or cannot be decided (inconclusive is not
    a pass); returns all verdicts when every one transfers.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    sub = df[df["parametrization"] == parametrization]
    if sub.empty:
        raise ValueError(f"no runs with parametrization {parametrization!r}")

    def values(a: str) -> tuple[int, ...]:
        return tuple(sorted(int(v) for v in sub[a].unique())) if a in sub else (0,)

    fixed_axis = "tokens" if axis == "width" else "width"
    ref = reference if reference is not None else values(axis)[0]
    slices, held = split_rest([a for a in AXES if a not in (axis, fixed_axis)], values)
    settings = TransferSettings(tolerance_log2=tolerance_log2, max_regret=max_regret)
    optima = find_optima(sub)
    noise = noise_model(optima, parametrization)
    comps = comparisons_for(axis, (parametrization,), values(axis), values(fixed_axis), ref, slices, held)
    verdicts = [judge(c, optima, settings, noise=noise) for c in comps
                if c.cell(c.ref) in optima and c.cell(c.other) in optima]
    failed = [v for v in verdicts if not v.passed]
    if failed:
        counts = ", ".join(f"{sum(v.outcome == o for v in failed)} {o}" for o in ("breaks", "inconclusive")
                           if any(v.outcome == o for v in failed))
        raise TransferError(f"{len(failed)} of {len(verdicts)} comparisons do not transfer ({counts}):\n\n"
                            + "\n\n".join(v.message() for v in failed))
    return verdicts


def rule_beta(df: pd.DataFrame, grid: Grid, parametrization: str) -> tuple[float, str]:
    """The power rule's beta (given, or fitted on the grid's fit budgets) and where it came from; at the
    grid's reference depth and batch size."""
    t = grid.transfer
    if t.lr_rule_beta is not None:
        return t.lr_rule_beta, f"beta {t.lr_rule_beta:g} from the grid"
    fit_tokens = set(t.lr_rule_fit_tokens or grid.tokens[:RULE_FIT_BUDGETS])
    # 0: a frame that does not record the axis (see Cell)
    at_reference = df["depth"].isin([reference_value(grid, "depth"), 0]) & df["batch_size"].isin(
        [reference_value(grid, "batch_size"), 0])
    sub = df[at_reference]
    fit = fit_drift(sub, parametrization, tokens=fit_tokens)
    if fit is None:
        raise ValueError("cannot fit beta: no width has two converged token budgets among lr_rule_fit_tokens")
    where = ", ".join(format_tokens(x) for x in sorted(fit_tokens))
    return fit.beta, f"beta {fit.beta:.3f} fitted on tokens {where}"


def batch_rule_exponent(optima: dict[Cell, CellOptimum], grid: Grid, parametrization: str) -> tuple[float, str]:
    """The batch rule's exponent (sqrt: 0.5, linear: 1, or fitted on the two smallest batch sizes) and where
    it came from."""
    name = grid.transfer.lr_batch_rule
    if name != "fit":
        return LR_BATCH_RULES[name], f"the {name} rule: exponent {LR_BATCH_RULES[name]:g}"
    sizes = batch_fit_sizes(grid)
    law = axis_law(optima, parametrization, "batch_size", values=set(sizes))
    if law is None:
        raise ValueError(f"cannot fit the batch rule: no cell has located optima at batch sizes {sizes}")
    return law.slope, f"exponent {law.slope:.3f} fitted on batch sizes {', '.join(map(str, sizes))}"
