"""How noisy a sweep is where a cell cannot say so itself: one seed per cell, or seeds that a comparison cannot pair.

    noise = noise_model(optima, "mup", grid.noise)     # NoiseModel(optimum=..., loss=...)
    noise.optimum.sd, noise.optimum.source             # 0.21, "pooled seeds"
    noise.optimum.half_width(se=...)                   # a 95% half-width at that SD and its degrees of freedom

With five seeds per cell a verdict reads its noise off the seeds (paired: a seed fixes init and data order in
both cells). Most sweeps teams bring have one seed, because a seed at scale costs a run; some have seeds in
a few cells only, or seeds that two cells do not share. For those a verdict needs a stated noise model, of
two quantities:

- **the optimum**: how far one seed's optimum lies from its cell's true optimum (log2). Read, in this order,
  from the seeds where some cells have several (the pooled within-cell variance, `pooled seeds`), from a prior
  the grid states (`[noise] optimum_sd_log2`, `prior`), or from the residuals of a smooth law across cells
  (log2 lr* linear in the log2 of every axis the sweep varies, `law residuals`: an upper bound, since a bend
  in the law counts as noise). Pooled seeds come first because they are measured in this sweep; the prior
  before the residuals because the residuals mix noise with misfit.
- **the loss**: how far one run's final loss lies from its seed's smooth curve (relative), what a regret read
  within one curve carries. Read from the curves' own residuals around a local polynomial (`curve
  residuals`, pooled over every curve of the parametrization), else the prior (`[noise] loss_sd`).

Each estimate carries its degrees of freedom, so that an interval from it uses Student's t, and its source,
which the report and the JSON name beside every verdict that used it. With none of them, a one-seed
comparison stays inconclusive and says what would decide it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mupcheck.analysis.curves import BASIN, t_quantile
from mupcheck.analysis.optima import CellOptimum
from mupcheck.spec import Cell, NoiseSettings

__all__ = ["MIN_LAW_DF", "Noise", "NoiseModel", "noise_model"]

# A law's residuals stand in for the seed noise only with at least this many degrees of freedom: with one,
# the t quantile (12.7) makes every interval span the grid.
MIN_LAW_DF = 2
# Curves pooled for the loss noise need at least this many residual degrees of freedom in all.
MIN_CURVE_DF = 3


@dataclass(frozen=True)
class Noise:
    """One noise estimate: a standard deviation, its degrees of freedom (inf for a prior) and where it came from."""

    sd: float
    df: float
    source: str  # "pooled seeds", "prior", "law residuals" or "curve residuals"
    detail: str  # how it was read, in a phrase

    def quantile(self) -> float:
        """The 97.5% quantile that a 95% interval from this estimate uses."""
        return 1.96 if math.isinf(self.df) else t_quantile(int(self.df))

    def half_width(self, scale: float = 1.0) -> float:
        """The 95% half-width of a quantity whose SD is `scale` times this one."""
        return self.quantile() * self.sd * scale

    def describe(self, unit: str) -> str:
        value = f"{self.sd:.2f} log2" if unit == "log2" else f"{100 * self.sd:.2f}%"
        dof = "" if math.isinf(self.df) else f", {self.df:g} degrees of freedom"
        return f"SD {value} ({self.source}: {self.detail}{dof})"


@dataclass(frozen=True)
class NoiseModel:
    """The noise of one parametrization's sweep: of a seed's optimum, and of a run's loss within its curve."""

    parametrization: str
    optimum: Noise | None
    loss: Noise | None

    def sentence(self) -> str:
        parts = [f"one seed's optimum: {self.optimum.describe('log2')}" if self.optimum else
                 "one seed's optimum: unknown (no cell has two seeds, no [noise] optimum_sd_log2, and too few cells "
                 "for a law's residuals)",
                 f"one run's loss within its curve: {self.loss.describe('relative')}" if self.loss else
                 "one run's loss within its curve: unknown"]
        return f"{self.parametrization}: " + "; ".join(parts)


def noise_model(optima: Mapping[Cell, CellOptimum], parametrization: str,
                prior: NoiseSettings = NoiseSettings()) -> NoiseModel:
    """The noise model of `parametrization`'s cells (see the module docstring for the order of sources)."""
    cells = [o for k, o in optima.items() if k.parametrization == parametrization]
    optimum = _pooled_seeds(cells)
    if optimum is None and prior.optimum_sd_log2 is not None:
        optimum = Noise(prior.optimum_sd_log2, math.inf, "prior", "[noise] optimum_sd_log2 in the grid")
    if optimum is None:
        optimum = _law_residuals(cells)
    loss = _curve_residuals(cells)
    if loss is None and prior.loss_sd is not None:
        loss = Noise(prior.loss_sd, math.inf, "prior", "[noise] loss_sd in the grid")
    return NoiseModel(parametrization, optimum, loss)


def _pooled_seeds(cells: list[CellOptimum]) -> Noise | None:
    """The within-cell variance of the seeds' optima, pooled over the cells with two or more found."""
    ss, df, n_cells = 0.0, 0, 0
    for o in cells:
        found = o.found_optima
        if o.found and len(found) >= 2:
            ss += float(np.sum((np.asarray(found) - np.mean(found)) ** 2))
            df += len(found) - 1
            n_cells += 1
    if df == 0:
        return None
    return Noise(math.sqrt(ss / df), df, "pooled seeds", f"the seeds' spread within {n_cells} cell(s)")


def _law_residuals(cells: list[CellOptimum]) -> Noise | None:
    """The residual SD of log2 lr* = c + sum over varying axes of slope * log2(axis value), over located cells."""
    located = [o for o in cells if o.found and math.isfinite(o.optimum_log2)]
    if not located:
        return None
    axes = [a for a in ("width", "tokens", "depth", "batch_size") if len({getattr(o, a) for o in located}) > 1]
    design = np.array([[1.0] + [math.log2(getattr(o, a)) for a in axes] for o in located])
    y = np.array([o.optimum_log2 for o in located])
    rank = int(np.linalg.matrix_rank(design))
    df = len(located) - rank
    if df < MIN_LAW_DF:
        return None
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    sd = math.sqrt(float(np.sum((y - design @ coef) ** 2)) / df)
    law = " + ".join(f"log2 {a}" for a in axes) or "a constant"
    return Noise(sd, df, "law residuals", f"{len(located)} cells' optima about a law linear in {law}")


def _curve_residuals(cells: list[CellOptimum]) -> Noise | None:
    """One run's relative loss noise around its seed's curve: residuals of a local polynomial (a quadratic, a
    cubic from six points) over each seed's basin around its argmin, pooled over every curve. A curve that
    bends more than the polynomial inflates it: an upper bound, like the law's residuals."""
    ss, df, n_curves = 0.0, 0, 0
    for o in cells:
        for (_, curve), (_, usable) in zip(o.seed_losses, o.seed_usable):
            losses = np.asarray(curve, dtype=float)
            present = ~np.isnan(losses)  # NaN: this seed has no run there (a ragged imported sweep)
            y = np.where(np.asarray(usable)[present], losses[present], np.inf)
            basin = _basin_points(np.asarray(o.xs, dtype=float)[present], y)
            if basin is None:
                continue
            xs, ys = basin
            degree = 3 if len(xs) >= 6 else 2
            if len(xs) <= degree + 1:
                continue
            rel = ys / ys.min()
            coef = np.polynomial.polynomial.polyfit(xs - xs.mean(), rel, degree)
            residual = rel - np.polynomial.polynomial.polyval(xs - xs.mean(), coef)
            ss += float(np.sum(residual**2))
            df += len(xs) - degree - 1
            n_curves += 1
    if df < MIN_CURVE_DF:
        return None
    return Noise(math.sqrt(ss / df), df, "curve residuals",
                 f"{n_curves} curve(s)' residuals around a local polynomial near the optimum")


def _basin_points(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The contiguous run of usable points within BASIN of the curve's lowest loss, around its argmin."""
    finite = np.isfinite(y)
    if not finite.any():
        return None
    i = int(np.argmin(np.where(finite, y, np.inf)))
    ok = finite & (y <= y[i] * (1 + BASIN))
    lo = hi = i
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(x) - 1 and ok[hi + 1]:
        hi += 1
    return x[lo:hi + 1], y[lo:hi + 1]
