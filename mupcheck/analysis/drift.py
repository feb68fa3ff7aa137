"""How the optimal learning rate moves with the token budget and with width, with intervals over seeds.

    fit = fit_drift(df, "mup")                     # log2 lr*(T) = a_width - beta * log2 T
    fit.beta, fit.interval                         # "each doubling of tokens moves the optimum by -beta log2"
    law = width_law(df, "mup")                     # log2 lr*(w) = a_tokens + slope * log2 w
    pred = predict(fit, width=4096, tokens=100e9)  # uses the width slope; interval over seeds

Fits are least squares with a shared slope and one intercept per group (per width along tokens, per
token budget along width), over the cells whose optimum was found: a censored optimum (on the edge of
the measured rates) is left out, never fitted as if exact. Intervals come from refitting on each seed's
own optima and taking a Student-t interval over seeds: a seed fixes init and data order in every cell,
so this keeps the correlation between cells that a bootstrap over cells would ignore. With one seed
there is no interval, and the text says so.

Published values to set beside it: the optimal LR falls as a power of the token horizon (Bjorck et al.
2024, arXiv 2409.19913); eta ~ T^b with b near -0.5 under WSD (Power Scheduler, arXiv 2408.13359), i.e.
beta near 0.5. Under muP the width slope is about 0; under SP with Adam about -1 (Tensor Programs V).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mupcheck.analysis.collect import CellOptimum, find_optima
from mupcheck.analysis.curves import t_interval, t_quantile
from mupcheck.fmt import format_tokens

__all__ = ["PUBLISHED", "DriftFit", "Prediction", "WidthLaw", "fit_drift", "predict", "width_law"]

PUBLISHED = ("published: the optimal LR falls as a power of the token horizon (Bjorck et al. 2024, "
             "arXiv 2409.19913); eta ~ T^b with b near -0.5 under WSD (Power Scheduler, arXiv 2408.13359), "
             "i.e. beta near 0.5")

Optima = dict[tuple[str, int, int], CellOptimum]
Cell = tuple[int, int, float]  # (width, tokens, optimal lr_log2)


def _shared_slope(points: list[tuple[int, float, float]]) -> tuple[float, dict[int, float]] | None:
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


def _line(points: list[tuple[float, float, float]]) -> tuple[float, float, float] | None:
    """Least squares y = a + b * u + c * v over (u, v, y); None when it is not determined."""
    if len(points) < 3:
        return None
    u, v, y = np.array(points).T
    design = np.stack([np.ones_like(u), u, v], axis=1)
    if np.linalg.matrix_rank(design) < 3:
        return None
    a, b, c = np.linalg.lstsq(design, y, rcond=None)[0]
    return float(a), float(b), float(c)


def _cells(optima: Optima, parametrization: str, tokens: set[int] | None = None) -> list[Cell]:
    return sorted((w, t, o.lr_log2) for (p, w, t), o in optima.items()
                  if p == parametrization and o.found and (tokens is None or t in tokens))


def _seed_cells(optima: Optima, parametrization: str, tokens: set[int] | None = None) -> dict[int, list[Cell]]:
    """Each seed's own optima, cell by cell (found cells only)."""
    out: dict[int, list[Cell]] = {}
    for (p, w, t), o in optima.items():
        if p != parametrization or not o.found or (tokens is not None and t not in tokens):
            continue
        for seed, x in o.seed_optima:
            if math.isfinite(x):
                out.setdefault(seed, []).append((w, t, x))
    return out


@dataclass(frozen=True)
class DriftFit:
    """log2 lr*(T) = a[width] - beta * log2(T), jointly over widths, with per-width fits beside it; and,
    for predictions, one plane log2 lr* = a + width_slope * log2 w - beta * log2 T."""

    parametrization: str
    beta: float
    intercepts: dict[int, float]
    interval: tuple[float, float] | None  # 95% over seeds
    per_width: dict[int, tuple[float, float]]  # width -> (a, beta) of that width alone
    cells: tuple[Cell, ...]  # the found optima the fit rests on
    censored: tuple[tuple[int, int], ...]  # (width, tokens) cells left out
    plane: tuple[float, float, float] | None  # (a, width_slope, -beta) over all cells; None with one width
    seed_planes: tuple[tuple[float, float, float], ...]  # the same plane fitted on each seed's optima
    n_seeds: int

    def sentence(self) -> str:
        # The optimum moves by -beta per doubling; 0.0 - x keeps a zero from printing as "-0.00".
        moves = None if self.interval is None else (0.0 - self.interval[1], 0.0 - self.interval[0])
        return _doubling_sentence("tokens", 0.0 - self.beta, moves, self.n_seeds,
                                  "no interval: a seed's optima are censored")


def _doubling_sentence(axis: str, slope: float, interval: tuple[float, float] | None, n_seeds: int,
                       why_no_interval: str) -> str:
    """'each doubling of <axis> moves the optimum by <slope> log2 (95% interval ..)', the laws' one reading."""
    text = f"each doubling of {axis} moves the optimum by {slope:+.2f} log2"
    if interval:
        return text + f" (95% interval {interval[0]:+.2f} .. {interval[1]:+.2f} over seeds)"
    return text + (" (one seed: no interval)" if n_seeds < 2 else f" ({why_no_interval})")


def fit_drift(df: pd.DataFrame, parametrization: str = "mup", tokens: set[int] | None = None) -> DriftFit | None:
    """Fit the drift law on a collected frame (optionally on a subset of token budgets); None if no width
    has two found optima at different budgets."""
    sub = df[df["parametrization"] == parametrization]
    optima = find_optima(sub)
    cells = _cells(optima, parametrization, tokens)
    fit = _shared_slope([(w, math.log2(t), y) for w, t, y in cells])
    if fit is None:
        return None
    slope, intercepts = fit
    per_width = {}
    for w in sorted({c[0] for c in cells}):
        one = _shared_slope([(w, math.log2(t), y) for ww, t, y in cells if ww == w])
        if one is not None:
            per_width[w] = (one[1][w], -one[0])
    seeds = _seed_cells(optima, parametrization, tokens)
    seed_betas = [s for s in (_shared_slope([(w, math.log2(t), y) for w, t, y in c]) for c in seeds.values())
                  if s is not None]
    interval = t_interval([-b for b, _ in seed_betas]) if len(seed_betas) == len(seeds) else None
    seed_planes = [p for p in (_plane_of(c) for c in seeds.values()) if p is not None]
    censored = tuple(sorted((w, t) for (p, w, t), o in optima.items()
                            if p == parametrization and not o.found and (tokens is None or t in tokens)))
    return DriftFit(parametrization, -slope, intercepts, interval, per_width, tuple(cells), censored,
                    _plane_of(cells), tuple(seed_planes) if len(seed_planes) == len(seeds) else (), len(seeds))


def _plane_of(cells: list[Cell]) -> tuple[float, float, float] | None:
    return _line([(math.log2(w), math.log2(t), y) for w, t, y in cells])


@dataclass(frozen=True)
class WidthLaw:
    """log2 lr*(w) = a[tokens] + slope * log2(w): about 0 under muP, about -1 under SP with Adam."""

    parametrization: str
    slope: float
    interval: tuple[float, float] | None  # 95% over seeds
    n_seeds: int
    cells: int

    def sentence(self) -> str:
        return _doubling_sentence("width", self.slope, self.interval, self.n_seeds, "no interval")


def width_law(df: pd.DataFrame, parametrization: str = "mup") -> WidthLaw | None:
    """The slope of the optimum against width (shared over token budgets); None with one width."""
    optima = find_optima(df[df["parametrization"] == parametrization])
    cells = _cells(optima, parametrization)
    fit = _shared_slope([(t, math.log2(w), y) for w, t, y in cells])
    if fit is None:
        return None
    seeds = _seed_cells(optima, parametrization)
    slopes = [s for s in (_shared_slope([(t, math.log2(w), y) for w, t, y in c]) for c in seeds.values())
              if s is not None]
    interval = t_interval([s for s, _ in slopes]) if len(slopes) == len(seeds) else None
    return WidthLaw(parametrization, fit[0], interval, len(seeds), len(cells))


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
        beyond_t = math.log2(self.tokens / measured[-1])
        beyond_w = math.log2(self.width / widths[-1])
        lines = [f"predicted optimal learning rate for {f.parametrization} width={self.width} "
                 f"tokens={format_tokens(int(self.tokens))}: 2^{self.lr_log2:.2f} = {2 ** self.lr_log2:.3g}"]
        if self.interval:
            lo, hi = self.interval
            lines.append(f"  95% interval over {f.n_seeds} seeds: 2^{lo:.2f} .. 2^{hi:.2f} "
                         f"({2 ** lo:.3g} .. {2 ** hi:.3g}); it covers the seeds' spread of the fit, not whether "
                         "the law holds out there")
        else:
            lines.append(f"  no interval: {self.note}")
        lines.append(f"  law: log2 lr* = a {self.width_slope:+.3f} * log2(width) - {f.beta:.3f} * log2(tokens); "
                     f"{f.sentence()}")
        spread = max(f.intercepts.values()) - min(f.intercepts.values())
        lines.append(f"  width: intercepts a per width {', '.join(f'{w}: {f.intercepts[w]:.2f}' for w in widths)} "
                     f"(spread {spread:.2f} log2; muP's promise is that it does not depend on width)")
        lines.append(f"  rests on {len(f.cells)} cells: " + ", ".join(
            f"w{w}/{format_tokens(t)}: {y:.2f}" for w, t, y in f.cells))
        if f.censored:
            left_out = ", ".join(f"w{w}/{format_tokens(t)}" for w, t in f.censored)
            lines.append(f"  left out (censored optima): {left_out}")
        lines.append(f"  extrapolation: {beyond_t:+.1f} octaves of tokens beyond the largest measured budget "
                     f"({format_tokens(measured[-1])}), {beyond_w:+.1f} octaves of width beyond the widest "
                     f"measured ({widths[-1]})")
        if beyond_t > 3 or beyond_w > 3:
            lines.append("  warning: far outside the measured range")
        return "\n".join(lines)


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
        per_seed = []
    value = a + b * lw + c * lt
    interval = None
    if len(per_seed) >= 2:
        # Centred on the prediction; its width from how much the seeds' own planes predict apart.
        half = t_quantile(len(per_seed) - 1) * float(np.std(per_seed, ddof=1)) / math.sqrt(len(per_seed))
        interval = (value - half, value + half)
    if interval is None:
        note += "one seed: add seeds for an interval" if fit.n_seeds < 2 else "a seed's optima are censored"
    return Prediction(value, interval, width, tokens, fit, b, note)
