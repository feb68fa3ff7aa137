"""Loss against log2(learning rate): where its minimum lies, its shape around it, and intervals over seeds.

    fit = fit_minimum(xs, ys)          # local cubic around the argmin: fit.x0, fit.found, fit.pinned
    shape = fit_shape(xs, ys, fit.x0)  # curvature on each side of a given optimum: the regret band
    lo, hi = t_interval(values)        # 95% interval of the mean of per-seed values (Student's t)

A learning-rate curve is not a parabola: it rises gently below the optimum, has a flat bottom, and meets
a wall (the rate where training stops being usable) one or two octaves above it. A fit over several
octaves lets that wall set the curvature and pull the minimum toward it: the asymmetric parabola over
+-2 octaves this module used to fit was biased by +0.2 log2 on such curves, and its 95% interval covered
the truth in 76% of simulated cells (issue 23). So the minimum is read off a local fit:

- only *usable* points count: finite, and within BASIN of the curve's lowest loss (a point past the wall
  is not part of the basin); the window never reaches across an unusable point;
- two local models, each by least squares over the points within LOCAL_WINDOW octaves of the argmin
  (widened to MAX_WINDOW when fewer than LOCAL_MIN_POINTS lie there): a cubic, which follows a smooth
  asymmetry (the foot of the wall), and a kinked parabola (one curvature on each side of x0), which
  follows a curvature that changes abruptly at the optimum; the one with the smaller residual over
  both windows is kept (on simulated curves each alone lost coverage on the other's shape);
- the window is re-centred on the fitted minimum and the fit repeated, so that the argmin's noise does
  not decide which side of the optimum the window favours.

A grid too coarse for that (fewer than LOCAL_MIN_POINTS usable rates within LOCAL_WINDOW of the argmin:
rates half an octave or an octave apart) is read off the minimum of an Akima interpolant through the
finite points around the argmin, flagged `coarse`. An interpolant is local: the wall's points set the
slope at the argmin's upper neighbour only, damped by Akima's weights, so the wall cannot pull it the way
it pulled the +-2-octave kinked parabola that this module used to fall back to (bias +0.5 log2 and 27-50%
coverage on octave rates, issue 34). What no estimator can know from three or four points is how
asymmetric the curve is between them: the fit carries a `resolution`, RESOLUTION x the spacing around the
argmin, a systematic error that every seed shares, and the cell's interval adds it to the seeds' own
spread (`widen`). On simulated curves of random shape (tests/analysis/test_estimators.py) the intervals
then cover the true optimum in about 95% of cells on octave rates and half-octave rates alike, with
|bias| under 0.1 log2.

A minimum that lands outside the points the fit used (or a fit with no minimum) is *pinned*: it says
only that the optimum lies beyond that edge, and is never used as if exact. An argmin on the edge of the
measured rates is *censored*: the optimum lies beyond, and no fit pretends to know where. On simulated
curves of many shapes (tests/analysis/test_estimators.py) this estimator's 95% intervals cover the true
optimum in 90-99% of cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BASIN", "LOCAL_WINDOW", "MAX_WINDOW", "RESOLUTION", "SHAPE_WINDOW", "CurveFit", "CurveShape",
           "fit_minimum", "fit_shape", "t_interval", "t_quantile", "widen"]

LOCAL_WINDOW = 0.75  # octaves either side of the minimum that the local fit uses
MAX_WINDOW = 1.0  # widened to this when fewer than LOCAL_MIN_POINTS lie within LOCAL_WINDOW
LOCAL_MIN_POINTS = 5  # a cubic needs 4; one more to be over-determined
# A point more than this far above the curve's lowest loss is past the wall: left out of the fit, and
# the fit's window stops there. (The stability boundary is a separate, configurable threshold.)
BASIN = 0.10
SHAPE_WINDOW = 1.0  # octaves either side of the optimum that the band's curvatures are read from
COARSE_WINDOW = 2.0  # octaves either side of the optimum that fit_shape reaches on a grid too coarse for SHAPE_WINDOW
# A coarse fit's systematic error, as a fraction of the spacing around the argmin. The argmin alone would be
# off by up to half the spacing (SD 0.29 of it); the interpolant does better. 0.2 brings the coverage of the
# cell's 95% interval on octave rates from 82% to 95% on simulated curves of random shape (issue 34).
RESOLUTION = 0.2
_RECENTRE = 2  # re-centring passes
_X0_STEP = 0.01  # the kinked parabola's search step for x0 (log2)

Edge = Literal["low", "high"] | None


@dataclass(frozen=True)
class CurveFit:
    """The minimum of one loss curve."""

    x0: float  # log2 lr of the minimum (the edge rate when censored or pinned; NaN when nothing converged)
    loss: float  # the fitted loss at x0 (the measured minimum when there is no fit)
    n_points: int  # points the fit used
    censored: Edge = None  # "low"/"high": the argmin is the lowest/highest rate measured
    pinned: Edge = None  # "low"/"high": the fitted minimum lies beyond that edge of the points it used
    coarse: bool = False  # read off the interpolant of a grid too coarse for the local fit
    resolution: float = 0.0  # a coarse fit's systematic error (log2), shared by every seed: see `widen`
    curve: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def found(self) -> bool:
        """A minimum inside the measured rates and inside the points its fit used."""
        return math.isfinite(self.x0) and self.censored is None and self.pinned is None


def usable_points(ys: np.ndarray) -> np.ndarray:
    """Finite points within BASIN of the lowest finite loss."""
    finite = np.isfinite(ys)
    if not finite.any():
        return finite
    return finite & (ys <= np.min(ys[finite]) * (1 + BASIN))


def fit_minimum(xs: ArrayLike, ys: ArrayLike) -> CurveFit:
    """The minimum of the curve ys(xs); inf marks a point that is not usable (diverged or unstable)."""
    x, y = _sorted(xs, ys)
    if not np.isfinite(y).any():
        return CurveFit(math.nan, math.nan, 0)
    i = int(np.argmin(np.where(np.isfinite(y), y, np.inf)))
    if i == 0 or i == len(x) - 1:
        return CurveFit(float(x[i]), float(y[i]), 0, "low" if i == 0 else "high")
    lo, hi = _basin(x, y, i)
    idx = np.arange(lo, hi + 1)
    if (np.abs(x[idx] - x[i]) <= LOCAL_WINDOW + 1e-9).sum() < LOCAL_MIN_POINTS:
        return _interpolated_fit(x, y, i)
    fits = [f for f in (_recentred(_cubic, x, y, lo, hi, float(x[i])), _recentred(_kink, x, y, lo, hi, float(x[i])))
            if f is not None]
    found = [f for f in fits if f[0].pinned is None]
    if not found:
        if fits:
            return fits[0][0]
        # No minimum in either family: the optimum lies toward the side with fewer points.
        return CurveFit(float(x[i]), float(y[i]), hi - lo + 1, pinned="high" if hi - i <= i - lo else "low")
    if len(found) == 1:
        return found[0][0]
    # Both families found a minimum: keep the one that fits the points around both better.
    keep = np.union1d(found[0][1], found[1][1])
    return min(found, key=lambda f: _sse(f[0], x[keep], y[keep]))[0]


def _sorted(xs: ArrayLike, ys: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The points by rate; NaN marks a rate with no run (results imported from a ragged sweep): left out."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    keep = ~np.isnan(y)
    order = np.argsort(x[keep])
    return x[keep][order], y[keep][order]


def _basin(x: np.ndarray, y: np.ndarray, i: int) -> tuple[int, int]:
    """The contiguous run of usable points around the argmin i: an unusable point ends the curve there."""
    usable = usable_points(y)
    lo = hi = i
    while lo > 0 and usable[lo - 1]:
        lo -= 1
    while hi < len(x) - 1 and usable[hi + 1]:
        hi += 1
    return lo, hi


Family = Callable[[np.ndarray, np.ndarray], "tuple[CurveFit, Callable[[np.ndarray], np.ndarray]] | None"]


def _recentred(family: Family, x: np.ndarray, y: np.ndarray, lo: int, hi: int,
               centre: float) -> tuple[CurveFit, np.ndarray] | None:
    """A family's fit on the basin's points near `centre`, re-centred on its minimum _RECENTRE times, so that
    the argmin's noise does not decide which side of the optimum the window favours; with the indices of the
    points it used. None when there are too few points or no minimum."""
    best = None
    for _ in range(1 + _RECENTRE):
        keep = _window(x, lo, hi, centre)
        fitted = family(x[keep], y[keep])
        if fitted is None:
            break
        best = (fitted[0], keep)
        if fitted[0].pinned is not None or abs(fitted[0].x0 - centre) < 1e-6:
            break
        centre = fitted[0].x0
    return best


def _window(x: np.ndarray, lo: int, hi: int, centre: float) -> np.ndarray:
    """Indices of the basin's points within LOCAL_WINDOW of `centre`, widened to MAX_WINDOW when fewer than
    LOCAL_MIN_POINTS lie there."""
    idx = np.arange(lo, hi + 1)
    keep = idx[np.abs(x[idx] - centre) <= LOCAL_WINDOW + 1e-9]
    return keep if len(keep) >= LOCAL_MIN_POINTS else idx[np.abs(x[idx] - centre) <= MAX_WINDOW + 1e-9]


def _sse(fit: CurveFit, x: np.ndarray, y: np.ndarray) -> float:
    assert fit.curve is not None
    return float(((fit.curve(x) - y) ** 2).sum())


def _cubic(x: np.ndarray, y: np.ndarray) -> tuple[CurveFit, Callable[[np.ndarray], np.ndarray]] | None:
    """Least squares cubic: it absorbs a smooth asymmetry (a wall's foot on one side)."""
    if len(x) < 4:
        return None
    centre = float(np.mean(x))
    coef = np.polynomial.polynomial.polyfit(x - centre, y, 3)
    root = _minimum_of(coef)
    if root is None:
        return None

    def curve(v: np.ndarray) -> np.ndarray:
        return np.polynomial.polynomial.polyval(v - centre, coef)

    return _located(centre + root, float(curve(np.array(centre + root))), x, curve), curve


def _kink(x: np.ndarray, y: np.ndarray) -> tuple[CurveFit, Callable[[np.ndarray], np.ndarray]] | None:
    """Least squares c + a_left d^2 [d < 0] + a_right d^2 [d >= 0], d = x - x0, with x0 searched on a fine grid
    over the points' span: a curvature that changes abruptly at the optimum, which a cubic cannot follow."""
    if len(x) < 4:
        return None
    x0, c, a_l, a_r = _kinked_parabola(x, y, float(x.min()), float(x.max()))
    if not math.isfinite(x0):
        return None

    def curve(v: np.ndarray) -> np.ndarray:
        return c + np.where(v < x0, a_l, a_r) * (v - x0) ** 2

    edge = min(abs(x0 - x.min()), abs(x0 - x.max())) < _X0_STEP / 2  # stopped on the edge of its search
    fit = _located(x0, c, x, curve)
    if edge and fit.pinned is None:
        fit = CurveFit(fit.x0, fit.loss, fit.n_points, pinned="low" if x0 - x.min() < _X0_STEP else "high",
                       curve=curve)
    return fit, curve


def _located(x0: float, loss: float, x: np.ndarray, curve: Callable[[np.ndarray], np.ndarray]) -> CurveFit:
    """The fit's minimum, pinned to an edge when it lies outside the points the fit used."""
    if x0 < x.min():
        return CurveFit(float(x.min()), loss, len(x), pinned="low", curve=curve)
    if x0 > x.max():
        return CurveFit(float(x.max()), loss, len(x), pinned="high", curve=curve)
    return CurveFit(float(x0), loss, len(x), curve=curve)


def _minimum_of(coef: np.ndarray) -> float | None:
    """The local minimum of a polynomial of degree 2 or 3 nearest u = 0 (None if it has none)."""
    deriv = np.polynomial.polynomial.polyder(coef)  # c1 + 2 c2 u (+ 3 c3 u^2)
    second = np.polynomial.polynomial.polyder(deriv)
    if not np.any(deriv[1:] != 0):
        return None
    minima = [float(r.real) for r in np.atleast_1d(np.polynomial.polynomial.polyroots(deriv))
              if abs(r.imag) < 1e-12 and np.polynomial.polynomial.polyval(r.real, second) > 0]
    return min(minima, key=abs) if minima else None


def _kinked_parabola(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[float, float, float, float]:
    """(x0, c, a_left, a_right) of the least squares kinked parabola, x0 searched on [lo, hi] in _X0_STEP
    (NaNs when no x0 gives a minimum)."""
    x0s = np.arange(lo, hi + _X0_STEP / 2, _X0_STEP)  # (K,)
    d2 = (x[None, :] - x0s[:, None]) ** 2  # (K, n)
    left = x[None, :] < x0s[:, None]
    design = np.stack([np.ones_like(d2), np.where(left, d2, 0.0), np.where(left, 0.0, d2)], axis=2)  # (K, n, 3)
    p = design.shape[2]
    gram = design.transpose(0, 2, 1) @ design + 1e-12 * np.eye(p)
    rhs = design.transpose(0, 2, 1) @ y  # (K, p)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]  # (K, p)
    sse = (((design @ coef[..., None])[..., 0] - y[None, :]) ** 2).sum(axis=1)
    sse[(coef[:, 1:] < 0).any(axis=1)] = np.inf  # a maximum is no minimum
    if not np.isfinite(sse).any():
        return math.nan, math.nan, math.nan, math.nan
    k = int(np.argmin(sse))
    return float(x0s[k]), float(coef[k, 0]), float(coef[k, 1]), float(coef[k, -1])


def _interpolated_fit(x: np.ndarray, y: np.ndarray, i: int) -> CurveFit:
    """A grid too coarse for a local fit: the minimum of the Akima interpolant through the contiguous finite
    points around the argmin i, between its two neighbours. A neighbour that is not usable leaves the optimum
    unbracketed on that side: the argmin, pinned toward it."""
    finite = np.isfinite(y)
    if not (finite[i - 1] and finite[i + 1]):
        return CurveFit(float(x[i]), float(y[i]), 1, pinned="high" if not finite[i + 1] else "low", coarse=True)
    lo = hi = i
    while lo > 0 and finite[lo - 1]:
        lo -= 1
    while hi < len(x) - 1 and finite[hi + 1]:
        hi += 1
    xs, ys = x[lo:hi + 1], y[lo:hi + 1]
    tangents = akima_tangents(xs, ys)
    j = i - lo
    candidates = [_hermite_minimum(xs, ys, tangents, k) for k in (j - 1, j)]
    x0, loss = min(candidates, key=lambda c: c[1])
    spacing = max(x[i] - x[i - 1], x[i + 1] - x[i])
    return CurveFit(x0, loss, hi - lo + 1, coarse=True, resolution=RESOLUTION * float(spacing))


def akima_tangents(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The slope of Akima's interpolant at each point (Akima 1970): a weighted mean of the secants on either
    side, weighted by how much the secants change on the far side, so that one steep secant (a wall) barely
    tilts the tangent of a point in a flat basin. The ends extend the secants linearly, as scipy's
    Akima1DInterpolator does. At least three points."""
    m = np.diff(y) / np.diff(x)  # (n - 1,)
    if len(m) == 1:
        return np.full(len(x), m[0])
    ext = np.concatenate([[3 * m[0] - 2 * m[1], 2 * m[0] - m[1]], m, [2 * m[-1] - m[-2], 3 * m[-1] - 2 * m[-2]]])
    left, right = np.abs(ext[1:-2] - ext[:-3]), np.abs(ext[3:] - ext[2:-1])  # |m_{k-1} - m_{k-2}|, |m_{k+1} - m_k|
    total = left + right
    mean = (ext[1:-2] + ext[2:-1]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = (right * ext[1:-2] + left * ext[2:-1]) / total
    return np.where(total > 1e-15, weighted, mean)


def _hermite_minimum(x: np.ndarray, y: np.ndarray, t: np.ndarray, k: int) -> tuple[float, float]:
    """(x, value) of the lowest point of the cubic Hermite segment between points k and k + 1 (ends included)."""
    h = x[k + 1] - x[k]
    ya, yb, ta, tb = y[k], y[k + 1], h * t[k], h * t[k + 1]

    def value(u: float) -> float:
        return float((2 * u**3 - 3 * u**2 + 1) * ya + (u**3 - 2 * u**2 + u) * ta + (-2 * u**3 + 3 * u**2) * yb
                     + (u**3 - u**2) * tb)

    # d/du: 3 A u^2 + 2 B u + C
    a, b, c = 6 * ya + 3 * ta - 6 * yb + 3 * tb, -6 * ya - 4 * ta + 6 * yb - 2 * tb, ta
    us = [0.0, 1.0] + [r for r in _real_roots(a, b, c) if 0 < r < 1]
    u = min(us, key=value)
    return float(x[k] + u * h), value(u)


def _real_roots(a: float, b: float, c: float) -> list[float]:
    """The real roots of a u^2 + b u + c, in closed form (np.roots solves an eigenproblem: 40x slower, and the
    bootstrap of issue 41 calls this hundreds of thousands of times)."""
    if abs(a) <= 1e-15:
        return [-c / b] if abs(b) > 1e-15 else []
    disc = b * b - 4 * a * c
    if disc < 0:
        return []
    q = -0.5 * (b + math.copysign(math.sqrt(disc), b))  # the stable form: no cancellation
    return [q / a] + ([c / q] if q != 0 else [])


@dataclass(frozen=True)
class CurveShape:
    """The curve around a given optimum x0: c + a_left (x - x0)^2 below it, c + a_right (x - x0)^2 above,
    fitted with x0 fixed. What the regret band and a loss between measured rates are read from."""

    x0: float
    c: float  # the fitted loss at x0 (NaN without a fit)
    a_left: float  # curvature below x0, loss per log2^2 (NaN without a fit)
    a_right: float
    n_points: int
    # The span of the points the fit used (log2): a loss read off the fit outside it is an extrapolation.
    lo: float = math.nan
    hi: float = math.nan

    @property
    def fitted(self) -> bool:
        return all(math.isfinite(v) for v in (self.c, self.a_left, self.a_right))

    def loss_at(self, x: float) -> float:
        """The fitted curve at x (NaN without a fit)."""
        if not self.fitted:
            return math.nan
        a = self.a_left if x < self.x0 else self.a_right
        return self.c + a * (x - self.x0) ** 2


def fit_shape(xs: ArrayLike, ys: ArrayLike, x0: float) -> CurveShape:
    """Least squares c + a_left d^2 [d < 0] + a_right d^2 [d >= 0], d = x - x0, over the usable points within
    SHAPE_WINDOW of x0: curvature beyond the wall is not part of the basin. With fewer than 4 such points,
    or none on one side (a coarse grid, or the wall right above the optimum), every finite point within
    COARSE_WINDOW, and at least the 4 nearest finite points with one on each side."""
    x, y = _sorted(xs, ys)
    nan = CurveShape(x0, math.nan, math.nan, math.nan, 0)
    if not math.isfinite(x0):
        return nan
    keep = usable_points(y) & (np.abs(x - x0) <= SHAPE_WINDOW + 1e-9)
    if keep.sum() < 4 or not (keep & (x < x0)).any() or not (keep & (x > x0)).any():
        keep = np.isfinite(y) & (np.abs(x - x0) <= COARSE_WINDOW + 1e-9)
        finite = np.flatnonzero(np.isfinite(y))
        keep[finite[np.argsort(np.abs(x[finite] - x0), kind="stable")[:4]]] = True  # a grid coarser still
        for side in (x < x0, x > x0):  # and the nearest finite point on a side that has none
            candidates = np.flatnonzero(side & np.isfinite(y))
            if not (keep & side).any() and len(candidates):
                keep[candidates[np.argmin(np.abs(x[candidates] - x0))]] = True
    d = x[keep] - x0
    if (d < 0).sum() < 1 or (d > 0).sum() < 1 or keep.sum() < 3:
        return nan
    design = np.stack([np.ones_like(d), np.where(d < 0, d * d, 0.0), np.where(d >= 0, d * d, 0.0)], axis=1)
    (c, a_l, a_r), *_ = np.linalg.lstsq(design, y[keep], rcond=None)
    # A negative curvature (noise on a flat side) means no measurable rise there: zero, i.e. a wide band.
    return CurveShape(x0, float(c), max(0.0, float(a_l)), max(0.0, float(a_r)), int(keep.sum()),
                      float(x[keep].min()), float(x[keep].max()))


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


def widen(interval: tuple[float, float] | None, resolution: float) -> tuple[float, float] | None:
    """A 95% interval over seeds with a systematic error that every seed shares (a coarse fit's resolution)
    added in quadrature: more seeds shrink the first, not the second."""
    if interval is None or not resolution:
        return interval
    mid, half = (interval[0] + interval[1]) / 2, (interval[1] - interval[0]) / 2
    half = math.hypot(half, resolution)
    return (mid - half, mid + half)


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% interval of the mean of independent values (one per seed); None with fewer than two or a NaN."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or not np.isfinite(v).all():
        return None
    half = t_quantile(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    mean = float(v.mean())
    return (mean - half, mean + half)


# --- the stability boundary ------------------------------------------------------------------

@dataclass(frozen=True)
class Boundary:
    """One seed's stability boundary in one cell."""

    x: float  # log2 lr where training stops being usable (a lower bound when censored; NaN: no usable run)
    censored: bool  # no unusable rate measured above the optimum: the boundary lies at or above x
    first_bad: float  # the lowest measured rate past the boundary (NaN when censored)


def seed_boundary(xs: ArrayLike, losses: ArrayLike, usable: ArrayLike, rise: float) -> Boundary:
    """The boundary of one seed's curve: `losses` (inf: diverged) over `xs`, `usable` False for runs whose
    status is not "ok"; NaN: no run there. The best loss is the lowest usable one."""
    x, y = np.asarray(xs, dtype=float), np.asarray(losses, dtype=float)
    ok = np.asarray(usable, dtype=bool) & np.isfinite(y)
    present = ~np.isnan(y)  # NaN: no run at that rate (a ragged imported sweep)
    order = np.argsort(x[present])
    x, y, ok = x[present][order], y[present][order], ok[present][order]
    if not ok.any():
        return Boundary(math.nan, False, math.nan)
    best_i = int(np.argmin(np.where(ok, y, np.inf)))
    best = float(y[best_i])
    for k in range(best_i + 1, len(x)):
        if ok[k] and y[k] <= best * (1 + rise):
            continue
        a = k - 1  # the last usable rate before the wall
        r_a, r_b = y[a] / best - 1, (y[k] / best - 1) if math.isfinite(y[k]) else math.inf
        if not math.isfinite(r_b) or r_b <= rise:
            # Diverged (no loss to read), or unstable with a loss still under the threshold: halfway.
            return Boundary(float((x[a] + x[k]) / 2), False, float(x[k]))
        if r_a > 0:  # log-linear: an exponential wall crosses the threshold where a straight line in log does
            w = (math.log(rise) - math.log(r_a)) / (math.log(r_b) - math.log(r_a))
        else:
            w = (rise - r_a) / (r_b - r_a)
        return Boundary(float(x[a] + min(1.0, max(0.0, w)) * (x[k] - x[a])), False, float(x[k]))
    return Boundary(float(x[-1]), True, math.nan)
