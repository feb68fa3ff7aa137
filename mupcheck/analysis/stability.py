"""The stability boundary: the lowest learning rate above the optimum where training stops being usable.

    b = seed_boundary(xs, losses, usable, rise=0.10)   # one seed's curve -> Boundary(x, censored): curves.py
    v = judge_stability(comp, optima, settings)         # is the transferred rate far enough below it?

Along training length the loss-vs-rate curve keeps its optimum while the wall above it closes in: on an
H100, one octave above the optimum cost +0.1% at 1M tokens and +220% at 64M (issue 23). A verdict on
the optimum alone misses that, so every cell also gets its boundary, per seed: the rate where the final
loss first exceeds the seed's best by `boundary_rise` (or the run diverged, or was unstable), read
between the last usable rate and the first unusable one. The crossing is interpolated on the log of the
loss rise, which is linear for an exponential wall; a diverged rate has no loss to interpolate, so the
boundary is put halfway between it and the last usable rate. No unusable rate measured above the
optimum: the boundary is *censored*, at or above the highest rate.

The **margin** is boundary minus optimum, in log2, per seed. `judge_stability` asks whether a
transferred rate lies at least `min_margin_log2` below the target cell's boundary, paired over seeds
like the shift of the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mupcheck.analysis.comparison import Comparison, drift_of
from mupcheck.analysis.curves import t_interval
from mupcheck.analysis.optima import CellOptimum
from mupcheck.spec import Cell, StabilitySettings

__all__ = ["StabilityOutcome", "StabilityVerdict", "judge_stability"]


StabilityOutcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class StabilityVerdict:
    """How far below the other cell's stability boundary the transferred rate lies, paired over seeds."""

    comparison: Comparison
    transferred: float  # log2 lr carried over (the reference optimum, rule applied)
    boundary: float  # the other cell's boundary, mean over seeds (a lower bound when censored)
    boundary_censored: bool
    margin: float  # boundary - transferred, mean over the paired seeds (log2)
    interval: tuple[float, float] | None  # 95% interval of the margin over seeds
    min_margin: float
    outcome: StabilityOutcome
    reason: str

    def summary(self) -> str:
        c = self.comparison
        if not math.isfinite(self.margin):
            return f"{c.title()}: stability {self.outcome.upper()}: {self.reason}"
        bound = ">= " if self.boundary_censored else ""
        iv = f" (95% interval {self.interval[0]:+.2f} .. {self.interval[1]:+.2f})" if self.interval else ""
        return (f"{c.title()}: stability {self.outcome.upper()}: the transferred lr 2^{self.transferred:.2f} lies "
                f"{bound}{self.margin:+.2f} log2{iv} below the other cell's stability boundary "
                f"(2^{bound}{self.boundary:.2f}); required at least {self.min_margin:g}; {self.reason}")


def judge_stability(comp: Comparison, optima: dict[Cell, CellOptimum],
                    settings: StabilitySettings, beta: float = 0.0) -> StabilityVerdict:
    """Pass when the 95% interval of (other boundary - transferred rate) lies at or above min_margin_log2;
    fail when it lies below; inconclusive otherwise (or with fewer than two paired seeds)."""
    ref, other = optima[comp.cell(comp.ref)], optima[comp.cell(comp.other)]
    drift = drift_of(comp, beta)
    transferred = ref.optimum_log2 - drift
    m = settings.min_margin_log2

    def verdict(margin: float, interval: tuple[float, float] | None, censored: bool,
                outcome: StabilityOutcome, reason: str) -> StabilityVerdict:
        return StabilityVerdict(comp, transferred, other.boundary, censored, margin, interval, m, outcome, reason)

    if not ref.found:
        return verdict(math.nan, None, False, "inconclusive", "no reference optimum to transfer")
    at, _ = other.seed_losses_at(transferred)
    if at and all(math.isinf(v) for v in at.values()):
        return verdict(math.nan, None, False, "fail", f"the transferred rate diverged in every seed of the other "
                                                      f"cell that ran it ({len(at)}): it lies past the boundary")
    bounds = dict(other.seed_boundaries)
    pairs = [(s, bounds[s], x - drift) for s, x in ref.seed_optima if math.isfinite(x) and s in bounds
             and math.isfinite(bounds[s].x)]
    if not pairs:
        return verdict(math.nan, None, False, "inconclusive", "no seed has both a reference optimum and a boundary")
    margins = [b.x - t for _, b, t in pairs]
    censored = any(b.censored for _, b, _ in pairs)
    margin, interval = float(np.mean(margins)), t_interval(margins)
    if interval is None:
        return verdict(margin, None, censored, "inconclusive", "one seed: the margin's noise is unknown; add seeds")
    lo, hi = interval
    where = "the boundary lies above the measured rates for some seeds (a lower bound)" if censored else ""
    if lo >= m:
        return verdict(margin, interval, censored, "pass",
                       "the margin's interval lies above min_margin_log2" + (f"; {where}" if where else ""))
    if hi < m and not censored:
        return verdict(margin, interval, censored, "fail",
                       "the margin's interval lies below min_margin_log2: the transferred rate is too close to "
                       "(or past) the rate where training stops being usable")
    if censored:
        return verdict(margin, interval, censored, "inconclusive",
                       f"{where}: extend lr_log2 upward to measure it")
    return verdict(margin, interval, censored, "inconclusive",
                   "the margin's interval straddles min_margin_log2; add seeds, or rates near the boundary")
