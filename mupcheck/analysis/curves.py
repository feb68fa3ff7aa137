"""Loss against log2(learning rate): where its minimum lies, and intervals over seeds.

    fit = fit_minimum(xs, ys)          # asymmetric parabola around the argmin, over >= 5 points
    fit.x0, fit.a_left, fit.a_right    # the minimum, and the curvature on each side (loss per log2^2)
    lo, hi = t_interval(values)        # 95% interval of the mean of per-seed values (Student's t)

A learning-rate curve is not symmetric: the loss rises gently below the optimum and steeply above it
(instability). A 3-point parabola on such a curve is biased by a large part of an octave (issue 13
measured -0.18 to -0.34 log2 with a wall 4x steeper on one side), so the minimum is fitted as
`c + a_left (x - x0)^2` left of x0 and `c + a_right (x - x0)^2` right of it, by least squares over the
points within FIT_WINDOW octaves of the argmin (at least FIT_MIN_POINTS of them), with x0 searched on
a fine grid between the argmin's neighbours. An argmin on the edge of the measured rates is censored:
the optimum lies beyond it, and no fit pretends to know where.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["FIT_MIN_POINTS", "FIT_WINDOW", "CurveFit", "fit_minimum", "t_interval", "t_quantile"]

FIT_WINDOW = 2.0  # octaves either side of the argmin
FIT_MIN_POINTS = 5
_X0_STEP = 0.01

Censored = Literal["low", "high"] | None


@dataclass(frozen=True)
class CurveFit:
    """The minimum of one loss curve."""

    x0: float  # log2 lr of the minimum (the edge rate when censored; NaN when nothing converged)
    loss: float  # the fitted loss at x0 (the measured minimum when there is no fit)
    a_left: float  # curvature below x0, loss per log2^2 (NaN without a fit)
    a_right: float  # curvature above x0
    n_points: int  # points the fit used
    censored: Censored = None  # "low"/"high": the argmin is the lowest/highest rate measured

    @property
    def found(self) -> bool:
        return math.isfinite(self.x0) and self.censored is None

    @property
    def fitted(self) -> bool:
        return math.isfinite(self.a_left) and math.isfinite(self.a_right)

    def loss_at(self, x: float) -> float:
        """The fitted curve at x (NaN without a fit)."""
        if not self.fitted:
            return math.nan
        a = self.a_left if x < self.x0 else self.a_right
        return self.loss + a * (x - self.x0) ** 2


def fit_minimum(xs: ArrayLike, ys: ArrayLike) -> CurveFit:
    """The minimum of the curve ys(xs); inf marks a diverged point (worse than any finite loss)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if not np.isfinite(y).any():
        return CurveFit(math.nan, math.nan, math.nan, math.nan, 0)
    i = int(np.nanargmin(np.where(np.isnan(y), np.inf, y)))
    if i == 0 or i == len(x) - 1:
        return CurveFit(float(x[i]), float(y[i]), math.nan, math.nan, 0, "low" if i == 0 else "high")
    window = _window(x, y, i)
    if not (np.isfinite(y[i - 1]) and np.isfinite(y[i + 1])):
        # A diverged neighbour: no bracket around the argmin to fit; the argmin itself.
        return CurveFit(float(x[i]), float(y[i]), math.nan, math.nan, int(window.sum()))
    # Fewer than FIT_MIN_POINTS: one curvature for both sides (3 points cannot tell two apart).
    symmetric = window.sum() < FIT_MIN_POINTS
    return _fit(x[window], y[window], float(x[i - 1]), float(x[i + 1]), float(x[i]), float(y[i]), symmetric)


def _window(x: np.ndarray, y: np.ndarray, i: int) -> np.ndarray:
    """The finite points within FIT_WINDOW of the argmin, widened to FIT_MIN_POINTS when the grid is coarse,
    and never across a diverged point."""
    finite = np.isfinite(y)
    # The contiguous run of finite points around the argmin: a diverged rate ends the curve there.
    lo = i
    while lo > 0 and finite[lo - 1]:
        lo -= 1
    hi = i
    while hi < len(x) - 1 and finite[hi + 1]:
        hi += 1
    keep = np.zeros(len(x), dtype=bool)
    keep[lo:hi + 1] = np.abs(x[lo:hi + 1] - x[i]) <= FIT_WINDOW
    while keep.sum() < FIT_MIN_POINTS:
        candidates = [j for j in range(lo, hi + 1) if not keep[j]]
        if not candidates:
            break
        keep[min(candidates, key=lambda j: abs(x[j] - x[i]))] = True
    return keep


def _fit(x: np.ndarray, y: np.ndarray, lo: float, hi: float, x_arg: float, y_arg: float,
         symmetric: bool) -> CurveFit:
    """Least squares of c + a_l (x - x0)^2 [x < x0] + a_r (x - x0)^2 [x >= x0] (a_l = a_r if `symmetric`)
    over x0 on a fine grid in [lo, hi], the argmin's neighbours."""
    x0s = np.arange(lo, hi + _X0_STEP / 2, _X0_STEP)  # (K,)
    d2 = (x[None, :] - x0s[:, None]) ** 2  # (K, n)
    left = x[None, :] < x0s[:, None]
    columns = [np.ones_like(d2), d2] if symmetric else [np.ones_like(d2), np.where(left, d2, 0.0),
                                                         np.where(left, 0.0, d2)]
    design = np.stack(columns, axis=2)  # (K, n, p)
    p = design.shape[2]
    gram = design.transpose(0, 2, 1) @ design + 1e-12 * np.eye(p)
    rhs = design.transpose(0, 2, 1) @ y  # (K, p)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]  # (K, p)
    sse = (((design @ coef[..., None])[..., 0] - y[None, :]) ** 2).sum(axis=1)
    sse[(coef[:, 1:] < 0).any(axis=1)] = np.inf  # a maximum is no minimum
    if not np.isfinite(sse).any():
        return CurveFit(x_arg, y_arg, math.nan, math.nan, len(x))
    k = int(np.argmin(sse))
    c, a_l = float(coef[k, 0]), float(coef[k, 1])
    a_r = a_l if symmetric else float(coef[k, 2])
    return CurveFit(float(x0s[k]), c, a_l, a_r, len(x))


# --- intervals over seeds --------------------------------------------------------------------------

# Two-sided 95% quantiles of Student's t (0.975), degrees of freedom 1..30; beyond, the normal's 1.96 with
# the first-order correction.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% interval of the mean of independent values (one per seed); None with fewer than two or a NaN."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or not np.isfinite(v).all():
        return None
    half = t_quantile(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    mean = float(v.mean())
    return (mean - half, mean + half)
