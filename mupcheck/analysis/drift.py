"""How the optimal learning rate, and the stability margin above it, move with the token budget and width.

    fit = fit_drift(df, "mup")                     # log2 lr*(T) = a_width - beta * log2 T
    fit.beta, fit.interval                         # "each doubling of tokens moves the optimum by -beta log2"
    fit.lack_of_fit                                # a curvature in log2 T that one beta cannot describe
    law = width_law(df, "mup")                     # log2 lr*(w) = a_tokens + slope * log2 w
    margin = margin_law(optima, "mup", "tokens")   # the margin (boundary - optimum) against log2 T
    pred = predict(fit, width=4096, tokens=100e9)  # uses the width slope; interval over seeds

Fits are least squares with a shared slope and one intercept per group (per width along tokens, per
token budget along width), over the cells whose optimum was found: a censored optimum (on the edge of
the measured rates) is left out, never fitted as if exact. The law is fitted on each seed's own optima
and averaged, with a Student-t interval over seeds: a seed fixes init and data order in every cell, so
this keeps the correlation between cells that a bootstrap over cells would ignore. Only seeds whose
optimum was found in every cell the law uses take part, in the point estimate and the interval alike
(for such seeds the mean of their slopes is the slope of their mean optima). With fewer than two such
seeds the law is fitted on the cells' optima and has no interval, and the text says so.

Before the drift law is used it is checked: a curvature term q (log2 T - mean)^2 is fitted the same way,
per seed, with its interval. When that interval excludes 0, one beta does not describe the data (the
optimum bends along tokens), the report says so beside the residuals, and `predict` warns.

Published values to set beside it: the optimal LR falls as a power of the token horizon (Bjorck et al.
2024, arXiv 2409.19913); eta ~ T^b with b near -0.5 under WSD (Power Scheduler, arXiv 2408.13359), i.e.
beta near 0.5. Under muP the width slope is about 0; under SP with Adam about -1 (Tensor Programs V).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mupcheck.analysis.curves import t_interval, t_quantile
from mupcheck.analysis.optima import CellOptimum, find_optima
from mupcheck.fmt import format_tokens
from mupcheck.spec import Cell as CellKey

__all__ = ["PUBLISHED", "AxisLaw", "axis_law", "DriftFit", "MarginLaw", "Prediction", "WidthLaw", "drift_law",
           "fit_drift", "margin_law",
           "predict", "width_law"]

PUBLISHED = ("published: the optimal LR falls as a power of the token horizon (Bjorck et al. 2024, "
             "arXiv 2409.19913); eta ~ T^b with b near -0.5 under WSD (Power Scheduler, arXiv 2408.13359), "
             "i.e. beta near 0.5")

Optima = dict[CellKey, CellOptimum]  # of one depth and batch size (collect.one_slice), except for axis_law
Cell = tuple[int, int, float]  # (width, tokens, value)
Point = tuple[int, float, float]  # (group, x, y)


def _shared_slope(points: list[Point]) -> tuple[float, dict[int, float]] | None:
    """Least squares y = intercept[group] + slope * x over (group, x, y); None without two x in a group."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for g, x, y in points:
        groups.setdefault(g, []).append((x, y))
    num = den = 0.0
    for pts in groups.values():
        x, y = np.array(pts).T
        num += float(((x - x.mean()) * (y - y.mean())).sum())
        den += float(((x - x.mean()) ** 2).sum())
    if den == 0:
        return None
    slope = round(num / den, 9) + 0.0  # rounded: no "-0.000" from float noise
    return slope, {g: float(np.mean([y - slope * x for x, y in pts])) for g, pts in groups.items()}


def _residual_interval(points: list[Point]) -> tuple[tuple[float, float] | None, int]:
    """The shared slope's 95% interval from the residuals of the cells' optima about the law (one intercept per
    group), and its degrees of freedom: what one seed per cell allows (the noise model's `law residuals`). A bend
    in the law counts as noise, so it errs wide. (None, 0) without residual freedom."""
    fit = _shared_slope(points)
    if fit is None:
        return None, 0
    slope, intercepts = fit
    df = len(points) - len(intercepts) - 1
    if df < 1:
        return None, 0
    resid = sum((y - intercepts[g] - slope * x) ** 2 for g, x, y in points)
    groups: dict[int, list[float]] = {}
    for g, x, _ in points:
        groups.setdefault(g, []).append(x)
    sxx = sum(float(((np.array(xs) - np.mean(xs)) ** 2).sum()) for xs in groups.values())
    half = t_quantile(df) * math.sqrt(resid / df / sxx)
    return (slope - half, slope + half), df


def _curvature(points: list[Point]) -> float | None:
    """The q of y = intercept[group] + slope * x + q * (x - mean_x[group])^2; None without three x in a group."""
    groups = sorted({g for g, _, _ in points})
    if not any(len({x for gg, x, _ in points if gg == g}) >= 3 for g in groups):
        return None
    means = {g: float(np.mean([x for gg, x, _ in points if gg == g])) for g in groups}
    design = np.array([[float(g == h) for h in groups] + [x, (x - means[g]) ** 2] for g, x, _ in points])
    y = np.array([y for _, _, y in points])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    return float(np.linalg.lstsq(design, y, rcond=None)[0][-1])


def _plane(cells: list[Cell]) -> tuple[float, float, float] | None:
    """Least squares y = a + b log2 w + c log2 T; None when it is not determined."""
    if len(cells) < 3:
        return None
    u, v, y = np.array([(math.log2(w), math.log2(t), y) for w, t, y in cells]).T
    design = np.stack([np.ones_like(u), u, v], axis=1)
    if np.linalg.matrix_rank(design) < 3:
        return None
    a, b, c = np.linalg.lstsq(design, y, rcond=None)[0]
    return float(a), float(b), float(c)


@dataclass(frozen=True)
class _Table:
    """One quantity per cell (mean over seeds) and per seed, restricted to the seeds complete in every cell."""

    cells: list[Cell]  # (width, tokens, cell value) of the cells the law uses
    seeds: dict[int, list[Cell]]  # complete seeds only: their own value in every one of those cells
    n_seeds: int  # seeds in the grid
    left_out: tuple[tuple[int, int], ...]  # (width, tokens) cells without a value (censored, not found)

    def fit(self, to_points: Callable[[list[Cell]], list[Point]],
            estimator: Callable[[list[Point]], float | None]) -> tuple[float | None, tuple[float, float] | None]:
        """The estimator on each complete seed, averaged, with its 95% interval; on the cells' values
        without an interval when fewer than two seeds are complete."""
        per_seed = [estimator(to_points(c)) for c in self.seeds.values()]
        values = [v for v in per_seed if v is not None]
        if len(self.seeds) >= 2 and len(values) == len(per_seed):
            return float(np.mean(values)), t_interval(values)
        return estimator(to_points(self.cells)), None


def _one_slice(chosen: dict) -> dict:
    """The laws along width and tokens hold depth and batch size fixed: cells of several would be mixed."""
    slices = {(k.depth, k.batch_size) for k in chosen}
    if len(slices) > 1:
        raise ValueError(f"the cells span {len(slices)} depths or batch sizes {sorted(slices)}: fit the law on one "
                         "(optima.one_slice)")
    return chosen


def _optimum_table(optima: Optima, parametrization: str, tokens: set[int] | None = None) -> _Table:
    chosen = _one_slice({k: o for k, o in optima.items() if k[0] == parametrization
                         and (tokens is None or k[2] in tokens)})
    used = {(k[1], k[2]): o for k, o in chosen.items() if o.found}
    cells = sorted((w, t, o.optimum_log2) for (w, t), o in used.items())
    all_seeds = sorted({s for o in chosen.values() for s, _ in o.seed_optima})
    seeds = {}
    for s in all_seeds:
        own = [(w, t, dict(o.seed_optima).get(s, math.nan)) for (w, t), o in sorted(used.items())]
        if own and all(math.isfinite(y) for _, _, y in own):
            seeds[s] = own
    left_out = tuple(sorted((k[1], k[2]) for k, o in chosen.items() if not o.found))
    return _Table(cells, seeds, len(all_seeds), left_out)


def _along_tokens(cells: list[Cell]) -> list[Point]:
    return [(w, math.log2(t), y) for w, t, y in cells]


def _along_width(cells: list[Cell]) -> list[Point]:
    return [(t, math.log2(w), y) for w, t, y in cells]


def _slope(points: list[Point]) -> float | None:
    fit = _shared_slope(points)
    return None if fit is None else fit[0]


@dataclass(frozen=True)
class DriftFit:
    """log2 lr*(T) = a[width] - beta * log2(T), jointly over widths, with per-width fits beside it; the
    curvature check of that law; and, for predictions, one plane log2 lr* = a + width_slope * log2 w -
    beta * log2 T."""

    parametrization: str
    beta: float
    intercepts: dict[int, float]
    interval: tuple[float, float] | None  # 95% over the complete seeds
    per_width: dict[int, tuple[float, float]]  # width -> (a, beta) of that width alone (cells' optima)
    cells: tuple[Cell, ...]  # the found optima the fit rests on
    censored: tuple[tuple[int, int], ...]  # (width, tokens) cells left out (censored or not located)
    plane: tuple[float, float, float] | None  # (a, width_slope, -beta); None with one width
    seed_planes: tuple[tuple[float, float, float], ...]  # the same plane fitted on each complete seed
    n_seeds: int  # seeds in the grid
    seeds_used: int = 0  # seeds complete in every cell (0: the law rests on the cells' optima, no interval)
    curvature: float | None = None  # q of the curvature check (None: fewer than 3 budgets)
    curvature_interval: tuple[float, float] | None = None
    residuals: tuple[Cell, ...] = ()  # (width, tokens, cell optimum - law)
    seed_lines: tuple[tuple[float, float], ...] = ()  # one width: each complete seed's (intercept, slope)
    residual_df: int = 0  # > 0: one seed, and beta's interval comes from the cells' residuals

    @property
    def lack_of_fit(self) -> bool:
        """The curvature's 95% interval excludes 0: one beta does not describe how the optimum moves."""
        iv = self.curvature_interval
        return iv is not None and (iv[0] > 0 or iv[1] < 0)

    def sentence(self) -> str:
        # The optimum moves by -beta per doubling; 0.0 - x keeps a zero from printing as "-0.00".
        moves = None if self.interval is None else (0.0 - self.interval[1], 0.0 - self.interval[0])
        return _doubling_sentence("tokens", "the optimum", 0.0 - self.beta, moves, self.n_seeds,
                                  _why_no_interval(self.n_seeds, self.seeds_used), self.seeds_used, self.residual_df)

    def fit_sentence(self) -> str:
        """Whether one beta describes the data: the curvature check, in words."""
        if self.curvature is None:
            return "curvature not checked: fewer than 3 token budgets at one width"
        iv = self.curvature_interval
        text = f"curvature q = {self.curvature:+.3f} per log2(T)^2"
        if iv is None:
            return text + " (no interval: " + _why_no_interval(self.n_seeds, self.seeds_used) + ")"
        text += f" (95% interval {iv[0]:+.3f} .. {iv[1]:+.3f})"
        if self.lack_of_fit:
            way = "steepens" if self.curvature < 0 else "flattens"
            return (text + f": ONE BETA DOES NOT DESCRIBE THE DATA: the optimum's fall {way} with the budget, so "
                    "beta depends on which budgets it is fitted on and a power rule extrapolates poorly")
        return text + ": consistent with one beta"


def _why_no_interval(n_seeds: int, seeds_used: int) -> str:
    if n_seeds < 2:
        return "one seed: no interval"
    return f"no interval: fewer than two seeds have an optimum in every cell ({seeds_used} of {n_seeds})"


def _doubling_sentence(axis: str, what: str, slope: float, interval: tuple[float, float] | None, n_seeds: int,
                       why_no_interval: str, seeds_used: int = 0, residual_df: int = 0) -> str:
    """'each doubling of <axis> moves <what> by <slope> log2 (95% interval .. over 3 of 5 seeds)', the laws' one
    reading: it names the seeds the interval rests on (those with an optimum in every cell the law uses), or,
    with one seed, the residuals it came from."""
    text = f"each doubling of {axis} moves {what} by {slope:+.2f} log2"
    if interval and residual_df:
        return text + (f" (95% interval {interval[0]:+.2f} .. {interval[1]:+.2f} from the cells' residuals about "
                       f"the law, {residual_df} degrees of freedom: one seed)")
    if interval:
        of = f" of {n_seeds}" if seeds_used < n_seeds else ""
        return text + f" (95% interval {interval[0]:+.2f} .. {interval[1]:+.2f} over {seeds_used}{of} seeds)"
    return text + (" (one seed: no interval)" if n_seeds < 2 else f" ({why_no_interval})")


def fit_drift(df: pd.DataFrame, parametrization: str = "mup", tokens: set[int] | None = None) -> DriftFit | None:
    """The drift law of a collected frame (see `drift_law`)."""
    return drift_law(find_optima(df[df["parametrization"] == parametrization]), parametrization, tokens)


def drift_law(optima: Optima, parametrization: str = "mup", tokens: set[int] | None = None) -> DriftFit | None:
    """Fit the drift law on a cell's optima (optionally on a subset of token budgets); None if no width has
    two found optima at different budgets."""
    table = _optimum_table(optima, parametrization, tokens)
    slope, interval = table.fit(_along_tokens, _slope)
    if slope is None:
        return None
    df = 0
    if interval is None and table.n_seeds < 2:
        interval, df = _residual_interval(_along_tokens(table.cells))
    complete = len(table.seeds) >= 2
    intercepts = _intercepts(table, _along_tokens, slope)
    per_width = {}
    for w in sorted({c[0] for c in table.cells}):
        one = _shared_slope([(w, math.log2(t), y) for ww, t, y in table.cells if ww == w])
        if one is not None:
            per_width[w] = (one[1][w], -one[0])
    curvature, curvature_iv = table.fit(_along_tokens, _curvature)
    residuals = tuple((w, t, y - (intercepts[w] + slope * math.log2(t))) for w, t, y in table.cells)
    planes = [_plane(c) for c in table.seeds.values()] if complete else []
    seed_planes = tuple(p for p in planes if p is not None) if planes and None not in planes else ()
    plane = (_mean_plane(seed_planes) if seed_planes else _plane(table.cells))
    lines = [_shared_slope(_along_tokens(c)) for c in table.seeds.values()] if complete else []
    seed_lines = (tuple((next(iter(fit[1].values())), fit[0]) for fit in lines if fit is not None)
                  if len(per_width) == 1 and lines and None not in lines else ())
    return DriftFit(parametrization, -slope, intercepts, None if interval is None else (-interval[1], -interval[0]),
                    per_width, tuple(table.cells), table.left_out, plane, seed_planes, table.n_seeds,
                    len(table.seeds) if complete else 0, curvature, curvature_iv, residuals, seed_lines, df)


def _mean_plane(planes: tuple[tuple[float, float, float], ...]) -> tuple[float, float, float]:
    a, b, c = np.mean(np.array(planes), axis=0)
    return float(a), float(b), float(c)


def _intercepts(table: _Table, to_points: Callable[[list[Cell]], list[Point]], slope: float) -> dict[int, float]:
    """Each group's intercept, given the slope: the mean of its cells' values minus slope * x."""
    groups: dict[int, list[float]] = {}
    for g, x, y in to_points(table.cells):
        groups.setdefault(g, []).append(y - slope * x)
    return {g: float(np.mean(v)) for g, v in groups.items()}


@dataclass(frozen=True)
class WidthLaw:
    """log2 lr*(w) = a[tokens] + slope * log2(w): about 0 under muP, about -1 under SP with Adam."""

    parametrization: str
    slope: float
    interval: tuple[float, float] | None  # 95% over the complete seeds
    n_seeds: int
    cells: int
    seeds_used: int = 0
    residual_df: int = 0  # > 0: one seed, and the interval comes from the cells' residuals

    def sentence(self) -> str:
        return _doubling_sentence("width", "the optimum", self.slope, self.interval, self.n_seeds,
                                  _why_no_interval(self.n_seeds, self.seeds_used), self.seeds_used, self.residual_df)


def width_law(df: pd.DataFrame | Optima, parametrization: str = "mup") -> WidthLaw | None:
    """The slope of the optimum against width (shared over token budgets); None with one width. Takes a
    collected frame or its optima."""
    optima = df if isinstance(df, dict) else find_optima(df[df["parametrization"] == parametrization])
    table = _optimum_table(optima, parametrization)
    slope, interval = table.fit(_along_width, _slope)
    if slope is None:
        return None
    residual_df = 0
    if interval is None and table.n_seeds < 2:
        interval, residual_df = _residual_interval(_along_width(table.cells))
    return WidthLaw(parametrization, slope, interval, table.n_seeds, len(table.cells),
                    len(table.seeds) if len(table.seeds) >= 2 else 0, residual_df)


@dataclass(frozen=True)
class AxisLaw:
    """log2 lr*(x) = a[rest of the cell] + slope * log2(x) along depth or batch size: one slope shared by every
    combination of the other axes, fitted on each complete seed's own optima, with a 95% interval over them.
    Along depth, about 0 when the depth rule makes the optimum transfer; along batch size, the exponent of
    lr* ~ B^slope (0.5: the square-root rule, 1: the linear rule)."""

    parametrization: str
    axis: str
    slope: float
    interval: tuple[float, float] | None
    n_seeds: int
    cells: int  # cells with a located optimum that the law rests on
    left_out: int  # cells whose optimum was not located (censored, too few seeds)
    seeds_used: int = 0
    residual_df: int = 0  # > 0: one seed, and the interval comes from the cells' residuals

    def sentence(self) -> str:
        return _doubling_sentence(self.axis.replace("_", " "), "the optimum", self.slope, self.interval,
                                  self.n_seeds, _why_no_interval(self.n_seeds, self.seeds_used), self.seeds_used,
                                  self.residual_df)


def axis_law(optima: dict[CellKey, CellOptimum], parametrization: str, axis: str,
             values: set[int] | None = None) -> AxisLaw | None:
    """The slope of log2 lr* against log2 of `axis` ("depth" or "batch_size"; optionally on some of its values
    only), shared over the other axes' values; None unless some group has located optima at two values."""
    chosen = {k: o for k, o in optima.items() if k.parametrization == parametrization
              and (values is None or getattr(k, axis) in values)}
    used = {k: o for k, o in chosen.items() if o.found}

    def point(k: CellKey, y: float) -> Point:
        rest = tuple(v for name, v in zip(CellKey._fields, k) if name not in ("parametrization", axis))
        return (hash(rest), math.log2(getattr(k, axis)), y)

    cells = [point(k, o.optimum_log2) for k, o in sorted(used.items())]
    if _slope(cells) is None:
        return None
    all_seeds = sorted({s for o in chosen.values() for s, _ in o.seed_optima})
    per_seed = []
    for s in all_seeds:
        own = [point(k, dict(o.seed_optima).get(s, math.nan)) for k, o in sorted(used.items())]
        if all(math.isfinite(y) for _, _, y in own):
            per_seed.append(_slope(own))
    complete = [v for v in per_seed if v is not None]
    if len(complete) >= 2 and len(complete) == len(per_seed):
        slope, interval, used_seeds = float(np.mean(complete)), t_interval(complete), len(complete)
    else:
        slope, interval, used_seeds = _slope(cells) or 0.0, None, 0
    df = 0
    if interval is None and len(all_seeds) < 2:
        interval, df = _residual_interval(cells)
    return AxisLaw(parametrization, axis, round(slope, 9) + 0.0, interval, len(all_seeds), len(used),
                   len(chosen) - len(used), used_seeds, df)


@dataclass(frozen=True)
class MarginLaw:
    """margin(x) = a[group] + slope * log2(x) along tokens or width, where margin = boundary - optimum."""

    parametrization: str
    axis: Literal["tokens", "width"]
    slope: float
    interval: tuple[float, float] | None
    n_seeds: int
    cells: tuple[Cell, ...]  # (width, tokens, margin) of the cells it rests on
    left_out: tuple[tuple[int, int], ...]  # cells without a measured margin (boundary beyond the rates, ...)
    seeds_used: int = 0

    def sentence(self) -> str:
        return _doubling_sentence(self.axis, "the stability margin", self.slope, self.interval, self.n_seeds,
                                  _why_no_interval(self.n_seeds, self.seeds_used), self.seeds_used)


def _margin_table(optima: Optima, parametrization: str) -> _Table:
    chosen = _one_slice({k: o for k, o in optima.items() if k[0] == parametrization})
    used = {(k[1], k[2]): o for k, o in chosen.items() if math.isfinite(o.margin) and not o.boundary_censored}
    cells = sorted((w, t, o.margin) for (w, t), o in used.items())
    all_seeds = sorted({s for o in chosen.values() for s, _ in o.seed_optima})
    seeds = {}
    for s in all_seeds:
        own = []
        for (w, t), o in sorted(used.items()):
            x, b = dict(o.seed_optima).get(s, math.nan), dict(o.seed_boundaries).get(s)
            own.append((w, t, b.x - x if b is not None and math.isfinite(x) else math.nan))
        if own and all(math.isfinite(y) for _, _, y in own):
            seeds[s] = own
    left_out = tuple(sorted((k[1], k[2]) for k in chosen if (k[1], k[2]) not in used))
    return _Table(cells, seeds, len(all_seeds), left_out)


def margin_law(optima: Optima, parametrization: str, axis: Literal["tokens", "width"]) -> MarginLaw | None:
    """How the stability margin moves along `axis` (a shared slope, one intercept per value of the other
    axis), over the cells whose boundary and optimum were both measured; None with fewer than two."""
    table = _margin_table(optima, parametrization)
    to_points = _along_tokens if axis == "tokens" else _along_width
    slope, interval = table.fit(to_points, _slope)
    if slope is None:
        return None
    return MarginLaw(parametrization, axis, slope, interval, table.n_seeds, tuple(table.cells), table.left_out,
                     len(table.seeds) if len(table.seeds) >= 2 else 0)


@dataclass(frozen=True)
class Prediction:
    lr_log2: float
    interval: tuple[float, float] | None
    width: int
    tokens: float
    fit: DriftFit
    width_slope: float
    note: str  # how the width entered, or why there is no interval

    def describe(self) -> str:
        f = self.fit
        widths = sorted(f.intercepts)
        measured = sorted({c[1] for c in f.cells})
        beyond_t = _octaves_outside(self.tokens, measured[0], measured[-1])
        beyond_w = _octaves_outside(self.width, widths[0], widths[-1])
        lines = [f"predicted optimal learning rate for {f.parametrization} width={self.width} "
                 f"tokens={format_tokens(int(self.tokens))}: 2^{self.lr_log2:.2f} = {2 ** self.lr_log2:.3g}"]
        if self.interval:
            lo, hi = self.interval
            n = len(f.seed_planes) or len(f.seed_lines)
            lines.append(f"  95% interval over {n} seeds: 2^{lo:.2f} .. 2^{hi:.2f} "
                         f"({2 ** lo:.3g} .. {2 ** hi:.3g}); it covers the seeds' spread of the fit, not whether "
                         "the law holds out there")
        else:
            lines.append(f"  no interval: {self.note}")
        lines.append(f"  law: log2 lr* = a {self.width_slope:+.3f} * log2(width) - {f.beta:.3f} * log2(tokens); "
                     f"{f.sentence()}")
        lines.append(f"  check of the law: {f.fit_sentence()}")
        spread = max(f.intercepts.values()) - min(f.intercepts.values())
        lines.append(f"  width: intercepts a per width {', '.join(f'{w}: {f.intercepts[w]:.2f}' for w in widths)} "
                     f"(spread {spread:.2f} log2; muP's promise is that it does not depend on width)")
        lines.append(f"  rests on {len(f.cells)} cells: " + ", ".join(
            f"w{w}/{format_tokens(t)}: {y:.2f}" for w, t, y in f.cells))
        if f.censored:
            left_out = ", ".join(f"w{w}/{format_tokens(t)}" for w, t in f.censored)
            lines.append(f"  left out (optimum censored or not located): {left_out}")
        budgets = _outside_text(beyond_t, "budget", format_tokens(measured[0]), format_tokens(measured[-1]))
        lines.append(f"  extrapolation: tokens {budgets}; width "
                     f"{_outside_text(beyond_w, 'width', str(widths[0]), str(widths[-1]))}")
        if f.lack_of_fit:
            lines.append(f"  warning: one beta does not describe the measured budgets (the curvature check above); "
                         f"this prediction carries that law {max(beyond_t, 0.0):.1f} octaves of tokens past the data, "
                         "where the bend grows: treat it as a guess, and measure a budget nearer the target")
        if abs(beyond_t) > 3 or abs(beyond_w) > 3:
            lines.append("  warning: far outside the measured range")
        return "\n".join(lines)


def _octaves_outside(value: float, lo: float, hi: float) -> float:
    """How far (log2) `value` lies outside [lo, hi]: positive above, negative below, 0 within."""
    if value > hi:
        return math.log2(value / hi)
    if value < lo:
        return math.log2(value / lo)
    return 0.0


def _outside_text(octaves: float, what: str, lo: str, hi: str) -> str:
    """'2.1 octaves above the largest measured budget (2M)', '5.3 octaves below the smallest ... (128K)', or
    'within the measured budgets (128K .. 2M)'."""
    if octaves > 0:
        return f"{octaves:.1f} octaves above the largest measured {what} ({hi})"
    if octaves < 0:
        return f"{-octaves:.1f} octaves below the smallest measured {what} ({lo})"
    return f"within the measured {what}s ({lo} .. {hi})"


def predict(fit: DriftFit, width: int, tokens: float) -> Prediction:
    """The optimal log2 lr at (width, tokens) from the plane over all cells. With one measured width the
    width slope is unknown: muP's promise (0) is used and said; for SP that is refused (ValueError)."""
    lw, lt = math.log2(width), math.log2(tokens)
    if fit.plane is not None:
        a, b, c = fit.plane
        note = ""
        per_seed = [pa + pb * lw + pc * lt for pa, pb, pc in fit.seed_planes]
    else:
        if fit.parametrization != "mup":
            raise ValueError(f"{fit.parametrization}: the grid measures one width, so how the optimum moves with "
                             "width is unknown (under SP it moves); measure two widths or more")
        w0 = next(iter(fit.intercepts))
        a, b, c = fit.intercepts[w0], 0.0, -fit.beta
        note = "one width measured: muP's promise of a width-free optimum is assumed; "
        per_seed = [sa + sc * lt for sa, sc in fit.seed_lines]
    value = a + b * lw + c * lt
    interval = None
    if len(per_seed) >= 2:
        # Centred on the prediction; its width from how much the seeds' own planes predict apart.
        half = t_quantile(len(per_seed) - 1) * float(np.std(per_seed, ddof=1)) / math.sqrt(len(per_seed))
        interval = (value - half, value + half)
    if interval is None:
        note += ("one seed: add seeds for an interval" if fit.n_seeds < 2
                 else "a seed's optima are censored or not located in some cells")
    return Prediction(value, interval, width, tokens, fit, b, note)
