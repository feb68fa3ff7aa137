"""What a transferred learning rate costs in the other cell: the band of shifts that stay cheap, and the regret.

    band = regret_band(other, settings)      # Band(inner=(-0.6, 0.8), outer=(-0.6, 1.2), ...)
    regret = paired_regret(other, x, noise)  # Regret(value, interval, per_seed, source, at)

A shift is the other cell's optimum minus the transferred rate (log2): positive puts the transferred rate below
the optimum, on the curve's left side. The **band** holds the shifts that cost at most `max_regret` of loss.
Each side is read off the curvature fitted around the optimum (`curves.fit_shape`, x0 held there) where that
side has at least MIN_SIDE_RATES usable rates within the fit's window, and from the measured runs otherwise.
The runs always have the last word: under a unimodal curve the loss only rises away from the optimum, so

- a run whose regret exceeds `max_regret` caps the band on its side at its distance, whatever the fit says
  (issue 41: a side with one rate near the optimum fitted flat, widened the band to its 3-octave cap, and a
  2.1-octave shift *transferred* beside a run 1.15 octaves out that was already 1.8% worse);
- a fitted edge beyond the fit's own points is an extrapolation, unless runs at most BRACKET_LOG2 apart
  bracket it (a cheap one below, a costly one above): the band then reaches only as far as the runs measured
  it cheap, and is known to end only at the first costly run.

Where the runs bound a side but do not locate its edge, the band is an interval itself: `inner` holds the
shifts known to be cheap (a comparison *transfers* only inside it), `outer` the edge past which they are
known to be costly (a comparison *breaks* only past it); between the two the comparison is inconclusive.

The **regret** at a transferred rate x, per seed: its loss there over its own smooth curve at the cell's
optimum (the intercept of `fit_shape` over that seed's runs, x0 held at the cell's optimum: a fit over
several runs, never the run read at x), minus 1; the seed's level cancels. It is read

- *measured*: from a run at x, or *interpolated* between two runs at most INTERPOLATE_WITHIN apart around it;
  with a 95% interval over seeds, or from the noise model's loss noise with one seed;
- *fitted*: off the cell's fitted shape, only inside the span of the points that fit used, with no interval;
- *at least*: past that span, a lower bound from the nearest run between the optimum and x (the loss only
  rises further out), with its interval; *diverged nearby* where the next run beyond x diverged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from mupcheck.analysis.curves import t_interval
from mupcheck.analysis.noise import Noise
from mupcheck.analysis.optima import CellOptimum
from mupcheck.spec import TransferSettings

__all__ = ["BRACKET_LOG2", "MAX_BAND_LOG2", "MIN_SIDE_RATES", "Band", "Regret", "one_seed_regret", "paired_regret",
           "regret_band"]

# A band wider than this (a flat curve: no regret anywhere near) is capped: the measured range is finite.
MAX_BAND_LOG2 = 3.0
# A side of the curve gets its band edge from the fitted curvature only with this many usable rates on it among
# the points the fit used: one rate cannot say how the loss bends.
MIN_SIDE_RATES = 2
# A fitted edge past the fit's own points still stands where runs bracket it this closely (log2): a cheap run
# below it and a costly one above, no farther apart than an octave grid's neighbours.
BRACKET_LOG2 = 1.0


@dataclass(frozen=True)
class Band:
    """The shifts (other optimum - transferred lr, log2) that cost at most `max_regret` in the other cell.
    `inner`: known to be cheap; `outer`: past it, known to be costly (inf: no run says where); equal where the
    fitted curvature, consistent with the runs, locates the edge. `sides`: how each side (below, above the
    optimum) was read."""

    inner: tuple[float, float]
    outer: tuple[float, float]
    source: str  # "regret" (the other cell's curve and runs) or "fixed" (tolerance_log2)
    sides: tuple[str, str] = ("", "")

    @property
    def located(self) -> bool:
        return self.inner == self.outer

    def text(self) -> str:
        def edge(v: float) -> str:
            return f"{v:+.2f}" if math.isfinite(v) else "?"
        text = f"{edge(self.inner[0])} .. {edge(self.inner[1])}"
        if not self.located:
            text += f" (at most {edge(self.outer[0])} .. {edge(self.outer[1])})"
        return text


@dataclass(frozen=True)
class Regret:
    """The relative extra loss, in the other cell, of using the transferred rate instead of its optimum."""

    value: float  # mean over seeds (may be negative: noise, or a fitted optimum off the best run); inf: diverged
    # 95%: over seeds, or from the noise model with one seed; where some seed diverged, the other seeds'
    interval: tuple[float, float] | None
    per_seed: tuple[float, ...]
    source: str  # "measured", "interpolated", "fitted", "at least" (a lower bound), or why it is unknown
    at: float  # the rate it was read at (log2)
    noise: str = ""  # where a one-seed interval's noise came from (NoiseModel.loss.source); "" over seeds
    read_at: float = math.nan  # a lower bound: the rate of the run it was read from
    diverged_nearby: float = math.nan  # a lower bound: the next rate beyond, where every seed that ran it diverged

    @property
    def from_runs(self) -> bool:
        """Read off real runs at (or around) the transferred rate, every seed its own; not a fit, not a bound."""
        return self.source in ("measured", "interpolated")

    @property
    def lower_bound(self) -> bool:
        return self.source == "at least"

    @property
    def finite(self) -> list[float]:
        """The seeds' regrets where the transferred rate did not diverge."""
        return [r for r in self.per_seed if math.isfinite(r)]

    def text(self) -> str:
        iv = f" [{100 * self.interval[0]:.2f}, {100 * self.interval[1]:.2f}]" if self.interval else ""
        noise = f", noise: {self.noise}" if self.noise else ""
        if self.lower_bound:
            where = f"from the run at 2^{self.read_at:.2f}{noise}"
            if math.isfinite(self.diverged_nearby):
                where += f"; diverged nearby, at 2^{self.diverged_nearby:.2f}"
            if self.value == math.inf:
                bad, rest = sum(math.isinf(r) for r in self.per_seed), self.finite
                if not rest:
                    return (f"diverged (the run at 2^{self.read_at:.2f}, between it and the optimum, diverged in every "
                            "seed)")
                others = f"the other{'s' if len(rest) > 1 else ''} at least {100 * float(np.mean(rest)):.2f}%{iv}"
                return (f"diverged in {bad} of {len(self.per_seed)} seeds at 2^{self.read_at:.2f}, between it and the "
                        f"optimum; {others}")
            return f"at least {100 * self.value:.2f}%{iv} ({where})"
        if self.value == math.inf:
            bad = sum(math.isinf(r) for r in self.per_seed)
            rest = self.finite
            others = ""
            if rest:
                others = f"; the other{'s' if len(rest) > 1 else ''} {100 * float(np.mean(rest)):.2f}%{iv}"
            return f"diverged ({bad} of {len(self.per_seed)} seeds, {self.source}){others}"
        if not math.isfinite(self.value):
            return f"unknown ({self.source})"
        return f"{100 * self.value:.2f}%{iv} ({self.source}{noise})"


def usable_curve(o: CellOptimum) -> np.ndarray:
    """The cell's seed-mean loss at each of its rates: inf where any seed's run there diverged or was unstable,
    NaN where no seed ran it (a ragged imported sweep)."""
    losses = np.array([curve for _, curve in o.seed_losses], dtype=float)  # (seeds, rates)
    usable = np.array([flags for _, flags in o.seed_usable], dtype=bool)
    present = ~np.isnan(losses)
    values = np.where(present & ~usable, np.inf, losses)
    counts = present.sum(axis=0)
    sums = np.where(present, values, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def regret_band(other: CellOptimum, settings: TransferSettings) -> Band:
    """The band of `other` (see the module docstring); +-tolerance_log2 when the grid fixes it."""
    if settings.tolerance_log2 is not None:
        fixed = (-settings.tolerance_log2, settings.tolerance_log2)
        return Band(fixed, fixed, "fixed", ("tolerance_log2", "tolerance_log2"))
    x0 = other.optimum_log2
    if not math.isfinite(x0):
        nan = (math.nan, math.nan)
        return Band(nan, nan, "regret", ("no optimum", "no optimum"))
    shape = other.shape
    floor = shape.c if shape.fitted and shape.c > 0 else other.loss
    if not floor > 0:  # no positive loss to read a relative regret against
        nan = (math.nan, math.nan)
        return Band(nan, nan, "regret", ("no positive loss", "no positive loss"))
    xs, ys = np.asarray(other.xs, dtype=float), usable_curve(other)
    span = (shape.lo, shape.hi) if shape.fitted else (math.nan, math.nan)
    left = _side(xs, ys, x0, floor, shape.a_left if shape.fitted else math.nan, span, -1, settings.max_regret)
    right = _side(xs, ys, x0, floor, shape.a_right if shape.fitted else math.nan, span, +1, settings.max_regret)
    # A positive shift puts the transferred rate below the optimum: the left side bounds the band's upper end.
    return Band((-right[0], left[0]), (-right[1], left[1]), "regret", (left[2], right[2]))


def _side(xs: np.ndarray, ys: np.ndarray, x0: float, floor: float, a: float, span: tuple[float, float],
          sign: int, max_regret: float) -> tuple[float, float, str]:
    """(inner, outer, how) of one side of the band, as distances from the optimum (see the module docstring);
    `a`: the side's fitted curvature, over the points in `span`."""
    on_side = (sign * (xs - x0) > 1e-9) & ~np.isnan(ys)
    near = int((on_side & np.isfinite(ys) & (xs >= span[0] - 1e-9) & (xs <= span[1] + 1e-9)).sum())
    d, y = np.abs(xs[on_side] - x0), ys[on_side]
    order = np.argsort(d)
    d, y = d[order], y[order]
    costly = ~np.isfinite(y) | (y / floor - 1 > max_regret)
    first_costly = float(d[np.argmax(costly)]) if costly.any() else math.inf
    cheap = d[: int(np.argmax(costly))] if costly.any() else d
    farthest_cheap = float(cheap[-1]) if len(cheap) else 0.0
    if near >= MIN_SIDE_RATES and math.isfinite(a):
        fitted = MAX_BAND_LOG2 if a <= 0 else min(MAX_BAND_LOG2, math.sqrt(max_regret * floor / a))
        reach = max(0.0, sign * (span[1 if sign > 0 else 0] - x0))  # how far the fit's points go on this side
        bracketed = farthest_cheap <= fitted <= first_costly and first_costly - farthest_cheap <= BRACKET_LOG2
        if fitted <= reach + 1e-9 or fitted > first_costly or bracketed:
            edge = min(fitted, first_costly)
            return edge, edge, "fitted" if fitted <= first_costly else "fitted, capped by a costly run"
        # The fit's edge lies past its own points: only the runs say how far is cheap, and where it is not.
        inner = min(fitted, farthest_cheap, MAX_BAND_LOG2)
        return inner, max(inner, first_costly), "fitted past its points: bounded by the runs"
    return min(farthest_cheap, MAX_BAND_LOG2), first_costly, f"from the runs ({near} rate(s) in the fit)"


def paired_regret(other: CellOptimum, x: float, loss_noise: Noise | None = None) -> Regret:
    """Regret of lr 2^x in the `other` cell (see the module docstring): measured or interpolated where runs are at
    (or on both sides of) x, else fitted inside the fit's span, else a lower bound from the nearest run between
    the optimum and x. With one seed, the interval is from `loss_noise` (two reads of one curve: sqrt(2) times
    its SD)."""
    at, source = other.seed_losses_at(x)
    if at:
        measured = _per_seed(other, at)
        if measured:
            return _with_interval(measured, source, x, loss_noise)
        source = "fitted"
    shape = other.shape
    if shape.fitted and shape.lo <= x <= shape.hi:
        return Regret(shape.loss_at(x) / shape.c - 1, None, (), "fitted", x)
    return _lower_bound(other, x, loss_noise) or Regret(math.nan, None, (), source, x)


def _per_seed(other: CellOptimum, at: dict[int, float]) -> tuple[float, ...]:
    """Each seed's regret from its loss `at` the rate (inf: diverged), over its own floor; a seed with no floor
    (no fit) is left out, except that a run that diverged counts as diverged."""
    floors = other.seed_floors() if math.isfinite(other.optimum_log2) else {}
    return tuple(math.inf if math.isinf(at[s]) else at[s] / floors[s] - 1
                 for s in sorted(at) if math.isinf(at[s]) or s in floors)


def _with_interval(per_seed: tuple[float, ...], source: str, x: float, loss_noise: Noise | None,
                   read_at: float = math.nan, diverged_nearby: float = math.nan) -> Regret:
    """A regret from per-seed values: inf if any seed diverged (the interval is then the other seeds'); the
    interval over seeds, or from the loss noise with one seed."""
    finite = [r for r in per_seed if math.isfinite(r)]
    value = math.inf if len(finite) < len(per_seed) else float(np.mean(finite))
    interval, noise = None, ""
    if len(finite) >= 2:
        interval = t_interval(finite)
    elif len(finite) == 1 and loss_noise is not None:
        half = loss_noise.half_width(math.sqrt(2) * (1 + finite[0]))
        interval, noise = (finite[0] - half, finite[0] + half), loss_noise.source
    return Regret(value, interval, per_seed, source, x, noise, read_at, diverged_nearby)


def _lower_bound(other: CellOptimum, x: float, loss_noise: Noise | None) -> Regret | None:
    """The regret at x from the nearest run between the cell's optimum and x, a lower bound under a unimodal
    curve; None where no run lies between them."""
    x0 = other.optimum_log2
    if not math.isfinite(x0) or abs(x - x0) < 1e-9:
        return None
    sign = 1 if x > x0 else -1
    xs = np.asarray(other.xs, dtype=float)
    between = np.flatnonzero((sign * (xs - x0) > 1e-9) & (sign * (x - xs) >= -1e-9))
    if not len(between):
        return None
    j = int(between[np.argmax(sign * xs[between])])  # the one nearest x
    at = {s: float(curve[j]) for s, curve in other.seed_losses if not math.isnan(curve[j])}
    per_seed = _per_seed(other, at)
    if not per_seed:
        return None
    beyond = np.flatnonzero(sign * (xs - x) > 1e-9)
    nearby = math.nan
    if len(beyond):
        k = int(beyond[np.argmin(sign * xs[beyond])])
        ran = [curve[k] for _, curve in other.seed_losses if not math.isnan(curve[k])]
        if ran and all(math.isinf(v) for v in ran):
            nearby = float(xs[k])
    return _with_interval(per_seed, "at least", x, loss_noise, read_at=float(xs[j]), diverged_nearby=nearby)


def one_seed_regret(regret: Regret, shift: float, interval: tuple[float, float] | None,
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
