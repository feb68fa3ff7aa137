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
  at most `max_regret` of loss in the other cell, from its curvature on each side of its optimum (or
  +-`tolerance_log2` when the grid fixes it). With fewer than two paired seeds (one seed per cell, or
  seeds the cells do not share) the shift is the difference of the cells' means, and its interval comes
  from the sweep's noise model (`mupcheck.analysis.noise`), which the verdict names. A coarse fit's
  resolution (`curves.widen`) widens the interval either way;
- the **measured regret**: where the other cell has runs at (or on both sides of) the transferred rate,
  each seed's loss there over the lowest loss its own curve reaches (its fitted minimum), minus 1, with
  its 95% interval over seeds, or from the noise model's loss noise with one seed. It never compares a
  run with itself, so it cannot be zero by construction.

A comparison **breaks** when the transferred rate diverged in every seed of the other cell that ran it
(wherever that cell's optimum lies), when the regret's interval lies above `max_regret` (whatever the
shift says), or when the shift's interval lies outside the band. It **transfers** when the shift's
interval lies inside the band and no measured regret reaches past `max_regret`. Anything else is
**inconclusive**, with the reason that stopped it.
"""

from __future__ import annotations

import dataclasses
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
from mupcheck.fmt import format_loss, format_tokens
from mupcheck.spec import AXES, LR_BATCH_RULES, Cell, Grid, TransferSettings

__all__ = ["MAX_BAND_LOG2", "Outcome", "Regret", "TransferError", "Verdict", "assert_transfer", "batch_rule_exponent",
           "judge", "paired_regret", "regret_band", "rule_beta"]


class TransferError(AssertionError):
    """The optimal learning rate did not transfer; the message shows both cells and the curves."""


Outcome = Literal["transfers", "breaks", "inconclusive"]


# A band wider than this (a flat curve: no regret anywhere near) is capped: the measured range is finite.
MAX_BAND_LOG2 = 3.0


@dataclass(frozen=True)
class Regret:
    """The relative extra loss, in the other cell, of using the transferred rate instead of its optimum."""

    value: float  # mean over seeds (may be negative: noise, or a fitted optimum off the best run); inf: diverged
    # 95%: over seeds, or from the noise model with one seed; where some seed diverged, the other seeds'
    interval: tuple[float, float] | None
    per_seed: tuple[float, ...]
    source: str  # "measured", "interpolated", "fitted", or why it is unknown
    at: float  # the rate it was read at (log2)
    noise: str = ""  # where a one-seed interval's noise came from (NoiseModel.loss.source); "" over seeds

    @property
    def from_runs(self) -> bool:
        """Read off real runs (every seed's own), not a fitted curve."""
        return self.source in ("measured", "interpolated")

    @property
    def finite(self) -> list[float]:
        """The seeds' regrets where the transferred rate did not diverge."""
        return [r for r in self.per_seed if math.isfinite(r)]

    def text(self) -> str:
        if self.value == math.inf:
            bad = sum(math.isinf(r) for r in self.per_seed)
            rest = self.finite
            others = ""
            if rest:
                iv = f" [{100 * self.interval[0]:.2f}, {100 * self.interval[1]:.2f}]" if self.interval else ""
                others = f"; the other{'s' if len(rest) > 1 else ''} {100 * float(np.mean(rest)):.2f}%{iv}"
            return f"diverged ({bad} of {len(self.per_seed)} seeds, {self.source}){others}"
        if not math.isfinite(self.value):
            return f"unknown ({self.source})"
        iv = f" [{100 * self.interval[0]:.2f}, {100 * self.interval[1]:.2f}]" if self.interval else ""
        noise = f", noise: {self.noise}" if self.noise else ""
        return f"{100 * self.value:.2f}%{iv} ({self.source}{noise})"


def paired_regret(other: CellOptimum, x: float, loss_noise: Noise | None = None) -> Regret:
    """Regret of lr 2^x in the `other` cell. Per seed, from its own runs: its loss at x over its own smooth curve
    at the cell's optimum (the least squares shape of `curves.fit_shape`, with x0 held at the optimum: a fit over
    the seed's runs near it, never the run read at x), minus 1; both from the same seed, so the seed's level
    cancels. A seed with no such fit is left out, except that a run that diverged at x counts as diverged. Needs
    runs at (or on both sides of) x. The interval is over seeds, or with one seed from `loss_noise` (two reads
    of one curve: sqrt(2) times its SD). Without runs near x, the cell's fitted shape's rise above its own
    minimum, with no interval."""
    at, source = other.seed_losses_at(x)
    if at:
        floors = other.seed_floors() if math.isfinite(other.optimum_log2) else {}
        per_seed = tuple(math.inf if math.isinf(at[s]) else at[s] / floors[s] - 1
                         for s in sorted(at) if math.isinf(at[s]) or s in floors)
        if per_seed:
            # A seed that diverged there makes the regret infinite; the interval is then the other seeds'.
            finite = [r for r in per_seed if math.isfinite(r)]
            value = math.inf if len(finite) < len(per_seed) else float(np.mean(finite))
            if len(finite) >= 2:
                return Regret(value, t_interval(finite), per_seed, source, x)
            if len(finite) == 1 and loss_noise is not None:
                half = loss_noise.half_width(math.sqrt(2) * (1 + finite[0]))
                return Regret(value, (finite[0] - half, finite[0] + half), per_seed, source, x, loss_noise.source)
            return Regret(value, None, per_seed, source, x)
        source = "fitted"
    fitted = other.shape.loss_at(x) if other.shape.fitted else math.nan
    if math.isfinite(fitted) and other.xs[0] <= x <= other.xs[-1]:
        return Regret(fitted / other.shape.c - 1, None, (), "fitted", x)
    return Regret(math.nan, None, (), source, x)


@dataclass(frozen=True)
class Verdict:
    """One comparison, decided from its noise: the shift of the optimum with its interval over seeds
    against the band of shifts that cost at most `max_regret` in the other cell, and the measured regret."""

    comparison: Comparison
    ref: CellOptimum
    other: CellOptimum
    shift: float  # other optimum - transferred optimum, log2, mean over the paired seeds (NaN if none)
    interval: tuple[float, float] | None  # 95% interval of the shift, over the same seeds
    band: tuple[float, float]  # shifts whose regret stays within max_regret: (-delta_right, +delta_left)
    band_source: str  # "regret" (from the other cell's curvature) or "fixed" (tolerance_log2)
    regret_at: Regret  # in the other cell at the transferred rate
    max_regret: float
    outcome: Outcome
    reason: str  # why this outcome, in a phrase
    beta: float = 0.0  # a rule's exponent (see drift_of): along tokens, transferred = ref - beta * log2(T / T_ref)
    noise: str = "paired seeds"  # where the shift's interval came from: paired seeds, or the noise model's source

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
        band = (f"allowed {self.band[0]:+.2f} .. {self.band[1]:+.2f} log2 ({why})" if all(map(math.isfinite, self.band))
                else "no band")
        return f"{c.title()}: {self.outcome.upper()}: {shift}; {band}; regret {self.regret_at.text()}; {self.reason}"

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


def regret_band(other: CellOptimum, settings: TransferSettings) -> tuple[tuple[float, float], str]:
    """The shifts (other optimum - transferred lr) that cost at most `max_regret` in the other cell: a
    positive shift puts the transferred lr below the optimum, on the curve's left side, so its limit is
    sqrt(max_regret * c / a_left), from the curvature fitted around the cell's optimum with x0 held there
    (so the band and the shift are measured from the same optimum); or +-tolerance_log2 when the grid
    fixes it."""
    if settings.tolerance_log2 is not None:
        return (-settings.tolerance_log2, settings.tolerance_log2), "fixed"
    shape = other.shape

    def limit(a: float) -> float:
        if not math.isfinite(a):
            return math.nan
        return MAX_BAND_LOG2 if a <= 0 else min(MAX_BAND_LOG2, math.sqrt(settings.max_regret * shape.c / a))

    return (-limit(shape.a_right), limit(shape.a_left)), "regret"


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
    band, band_source = regret_band(other, settings)
    drift = drift_of(comp, beta)
    shift, interval, source = math.nan, None, ""
    regret = Regret(math.nan, None, (), "no optimum", math.nan)
    if ref.found:
        regret = paired_regret(other, ref.optimum_log2 - drift, noise.loss)
        if other.found:
            shift, interval, source = _shift(ref, other, drift, noise.optimum)
            if len(regret.finite) == 1 and regret.interval is not None:
                regret = _one_seed_regret(regret, shift, interval, other)
    outcome, reason = _decide(ref, other, interval, band, regret, settings.max_regret)
    return Verdict(comp, ref, other, shift, interval, band, band_source, regret, settings.max_regret, outcome,
                   reason, beta, source)


def _shift(ref: CellOptimum, other: CellOptimum, drift: float,
           noise: Noise | None) -> tuple[float, tuple[float, float] | None, str]:
    """(shift, its 95% interval, where the interval's noise came from). Paired over the seeds whose optimum was
    found in both cells, where there are two or more: seed s fixes init and data order in both, so its two optima
    are paired and their difference is what varies from seed to seed; point and interval rest on the same seeds.
    Otherwise the difference of the cells' means, with `noise` (a seed's optimum SD) for each mean. A coarse
    fit's resolution widens either interval."""
    a, b = dict(ref.seed_optima), dict(other.seed_optima)
    diffs = [b[s] - (a[s] - drift) for s in sorted(set(a) & set(b)) if math.isfinite(a[s]) and math.isfinite(b[s])]
    resolution = math.hypot(ref.resolution, other.resolution)
    if len(diffs) >= 2:
        # Rounded: fits leave 1e-15 noise, which would print as "-0.00".
        return round(float(np.mean(diffs)), 9) + 0.0, widen(t_interval(diffs), resolution), "paired seeds"
    ra, rb = ref.found_optima, other.found_optima
    shift = round(float(np.mean(rb) - (np.mean(ra) - drift)), 9) + 0.0
    if noise is None:
        return shift, None, ""
    half = math.hypot(noise.half_width(math.sqrt(1 / len(ra) + 1 / len(rb))), resolution)
    return shift, (shift - half, shift + half), noise.source


def _one_seed_regret(regret: Regret, shift: float, interval: tuple[float, float] | None,
                     other: CellOptimum) -> Regret:
    """A regret read in one seed rests on two noisy optima: the transferred rate, and the other cell's optimum
    its floor is read at, each as far off as one seed's optimum. Its interval (the loss noise of two reads)
    therefore also spans what the regret would be at either end of the shift's interval: down to the measured
    regret scaled quadratically to the end nearest 0 (0 where the interval covers it), up to the other cell's
    fitted shape at the far end. Without this, a comparison whose optimum does not move broke whenever one
    seed's optima fell apart by their own noise on a steep curve (6% of simulated one-seed sweeps, issue 34)."""
    assert regret.interval is not None
    (measured,) = regret.finite
    noise_lo, noise_hi = measured - regret.interval[0], regret.interval[1] - measured
    if interval is None or not math.isfinite(shift):
        return dataclasses.replace(regret, interval=None)
    lo, hi = interval
    near = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    far = max(abs(lo), abs(hi))
    side = other.shape.a_left if shift > 0 else other.shape.a_right  # shift > 0: the transferred rate lies below
    shaped = side * far**2 / other.shape.c if other.shape.fitted and other.shape.c > 0 else 0.0
    scaled = max(measured, 0.0) * (near / abs(shift)) ** 2 if abs(shift) > 1e-9 else 0.0
    return dataclasses.replace(regret, interval=(min(measured, scaled) - noise_lo,
                                                 max(measured, shaped) + noise_hi))


def _decide(ref: CellOptimum, other: CellOptimum, interval: tuple[float, float] | None,
            band: tuple[float, float], regret: Regret, max_regret: float) -> tuple[Outcome, str]:
    for name, cell in (("reference", ref), ("other", other)):
        if not np.isfinite(cell.losses).any():
            return "inconclusive", f"every learning rate of the {name} cell diverged: extend lr_log2 lower"
    measured = regret.from_runs and regret.per_seed
    if measured and all(map(math.isinf, regret.per_seed)):
        n = len(regret.per_seed)
        return "breaks", (f"the transferred rate diverged in {'the' if n == 1 else f'every one of the {n}'} seed(s) "
                          "of the other cell that ran it")
    for name, cell in (("reference", ref), ("other", other)):
        if cell.censored:
            side = "lower" if cell.censored == "low" else "upper"
            return "inconclusive", f"the {name} cell's optimum is censored on the {side} edge: extend lr_log2"
        if not cell.found:
            return "inconclusive", (f"the {name} cell's optimum is not located: fewer than half of its seeds' "
                                    "optima were found (pinned or censored); refine the rates near it")
    if measured and regret.interval and regret.interval[0] > max_regret:
        if regret.value == math.inf:
            return "breaks", ("the transferred rate diverged in some seeds of the other cell, and the others' measured "
                              "regret's interval lies above max_regret")
        return "breaks", "the measured regret's interval lies above max_regret"
    if interval is None:
        a = {s for s, x in ref.seed_optima if math.isfinite(x)}
        b = {s for s, x in other.seed_optima if math.isfinite(x)}
        if not a & b and len(a) + len(b) > 2:
            return "inconclusive", (f"the two cells share no seed with an optimum in both (seeds "
                                    f"{', '.join(map(str, sorted(a)))} and {', '.join(map(str, sorted(b)))}), so the "
                                    "shift cannot be paired; an unpaired one needs the noise of one seed's optimum: "
                                    "two seeds located in some cell, or a [noise] table (optimum_sd_log2)")
        return "inconclusive", ("one seed in a cell, and no noise estimate for it: add seeds, state the noise in a "
                                "[noise] table (optimum_sd_log2), or sweep more cells for a law's residuals")
    if not all(math.isfinite(x) for x in band):
        return "inconclusive", ("the other cell's curve has too few usable rates on one side of its optimum to "
                                "set the band; refine the rates there")
    lo, hi = interval
    reaches = measured and (regret.interval is None or regret.interval[1] > max_regret or regret.value == math.inf)
    if band[0] <= lo and hi <= band[1]:
        if reaches:
            what = (f"the transferred rate diverged or was unusable in {sum(map(math.isinf, regret.per_seed))} "
                    "seed(s)" if any(map(math.isinf, regret.per_seed)) else
                    "the measured regret has no interval (one seed, and no loss noise estimate)"
                    if regret.interval is None else
                    f"the measured regret's interval reaches {100 * regret.interval[1]:.2f}%, past max_regret")
            return "inconclusive", f"the shift's interval lies inside the band, but {what}; add seeds"
        return "transfers", "the shift's interval lies inside the band" + (
            " and the measured regret's interval stays within max_regret" if measured else "")
    if hi < band[0] or lo > band[1]:
        if measured and not reaches:
            return "inconclusive", ("the shift's interval lies outside the band read off the fitted curvature, but "
                                    "the measured regret's interval stays within max_regret: the curve is flatter "
                                    "there than its fit; refine the rates")
        return "breaks", "the shift's interval lies outside the band"
    edge = band[0] if lo < band[0] else band[1]
    also = ""
    if measured and regret.interval is not None and regret.interval[0] <= max_regret < regret.interval[1]:
        also = (f"; the measured regret ({100 * regret.interval[0]:.2f} .. {100 * regret.interval[1]:.2f}%) "
                f"straddles max_regret too")
    return "inconclusive", (f"the shift's interval ({lo:+.2f} .. {hi:+.2f}) straddles the band's edge at {edge:+.2f}"
                            f"{also}: add seeds (or refine the rates)")


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
