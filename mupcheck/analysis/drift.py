"""The drift law along training length: how the optimal learning rate moves with the token budget.

    fit = fit_drift(optima, "mup")                # log2 lr*(T) = a_w - beta * log2 T
    fit.beta, fit.interval                        # "each doubling of tokens moves the optimum by -beta log2"
    pred = predict(fit, width=4096, tokens=100e9)

The fit is least squares with one intercept per width and one shared slope (the joint fit), and
separately per width. The interval on beta is a bootstrap: over seeds when the grid has two or
more (optima recomputed from resampled seeds), else over the token-budget cells of each width.
Published values to set beside it: the optimal LR falls as a power of the token horizon (Bjorck et
al. 2024, arXiv 2409.19913); eta ~ T^b with b near -0.5 under WSD (Power Scheduler, arXiv
2408.13359), i.e. beta near 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mupcheck.analysis.collect import CellOptimum, find_optima
from mupcheck.fmt import format_tokens

__all__ = ["DriftFit", "fit_drift", "Prediction", "predict", "PUBLISHED"]

PUBLISHED = ("published: the optimal LR falls as a power of the token horizon (Bjorck et al. 2024, "
             "arXiv 2409.19913); eta ~ T^b with b near -0.5 under WSD (Power Scheduler, arXiv 2408.13359), "
             "i.e. beta near 0.5")
_BOOTSTRAP = 400

Optima = dict[tuple[str, int, int], CellOptimum]


@dataclass(frozen=True)
class DriftFit:
    """log2 lr*(T) = a[width] - beta * log2(T), jointly over widths, with per-width fits beside it."""

    parametrization: str
    beta: float
    intercepts: dict[int, float]
    interval: tuple[float, float] | None
    per_width: dict[int, tuple[float, float]]  # width -> (a, beta) of that width alone
    cells: tuple[tuple[int, int, float], ...]  # (width, tokens, optimal lr_log2) the fit rests on
    draws: tuple[tuple[float, float], ...]  # bootstrap (mean intercept, beta) pairs, for predictions

    def sentence(self) -> str:
        text = f"each doubling of tokens moves the optimum by {0.0 - self.beta:+.2f} log2"
        if self.interval:
            text += f" (95% interval {0.0 - self.interval[1]:+.2f} .. {0.0 - self.interval[0]:+.2f})"
        return text


def _joint_fit(cells: list[tuple[int, int, float]]) -> tuple[float, dict[int, float]] | None:
    """Shared slope, per-width intercepts; None when no width has two distinct token budgets."""
    by_width: dict[int, list[tuple[float, float]]] = {}
    for w, t, y in cells:
        by_width.setdefault(w, []).append((math.log2(t), y))
    num = den = 0.0
    for pts in by_width.values():
        x, y = np.array(pts).T
        num += float(((x - x.mean()) * (y - y.mean())).sum())
        den += float(((x - x.mean()) ** 2).sum())
    if den == 0:
        return None
    beta = round(-num / den, 9) + 0.0  # rounded: no "-0.000" from float noise
    intercepts = {w: float(np.mean([y + beta * x for x, y in pts])) for w, pts in by_width.items()}
    return beta, intercepts


def _cells(optima: Optima, parametrization: str, tokens: set[int] | None = None) -> list[tuple[int, int, float]]:
    return sorted((w, t, o.lr_log2) for (p, w, t), o in optima.items()
                  if p == parametrization and o.found and (tokens is None or t in tokens))


def fit_drift(df: pd.DataFrame, parametrization: str = "mup", tokens: set[int] | None = None) -> DriftFit | None:
    """Fit the drift law on a collected frame (optionally on a subset of token budgets); None if impossible."""
    sub = df[df["parametrization"] == parametrization]
    cells = _cells(find_optima(sub), parametrization, tokens)
    fit = _joint_fit(cells)
    if fit is None:
        return None
    beta, intercepts = fit
    per_width = {}
    for w in sorted({c[0] for c in cells}):
        one = _joint_fit([c for c in cells if c[0] == w])
        if one is not None:
            per_width[w] = (one[1][w], one[0])
    draws = _bootstrap(sub, cells, parametrization, tokens)
    interval = None
    if len(draws) >= 20:
        lo, hi = np.percentile([b for _, b in draws], [2.5, 97.5])
        interval = (float(lo), float(hi))
    return DriftFit(parametrization, beta, intercepts, interval, per_width, tuple(cells), tuple(draws))


def _bootstrap(sub: pd.DataFrame, cells: list[tuple[int, int, float]], parametrization: str,
               tokens: set[int] | None) -> list[tuple[float, float]]:
    rng = np.random.default_rng(0)
    seeds = sorted(sub["seed"].unique())
    draws = []
    for _ in range(_BOOTSTRAP):
        if len(seeds) >= 2:
            # Resample seeds (whole curves): one seed fixes init and data order at every learning rate.
            picked = rng.choice(seeds, size=len(seeds))
            frames = [sub[sub["seed"] == s].assign(seed=i) for i, s in enumerate(picked)]
            sample = _cells(find_optima(pd.concat(frames)), parametrization, tokens)
        else:
            # Resampling cells says nothing when a width has only two budgets (every draw is the
            # same line or no line): no interval then.
            if min(sum(c[0] == w for c in cells) for w in {c[0] for c in cells}) < 3:
                return []
            sample = []
            for w in sorted({c[0] for c in cells}):
                mine = [c for c in cells if c[0] == w]
                sample += [mine[i] for i in rng.integers(0, len(mine), len(mine))]
        fit = _joint_fit(sample)
        if fit is not None:
            draws.append((float(np.mean(list(fit[1].values()))), fit[0]))
    return draws


@dataclass(frozen=True)
class Prediction:
    lr_log2: float
    interval: tuple[float, float] | None
    width: int
    tokens: float
    fit: DriftFit

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
            lines.append(f"  95% interval: 2^{lo:.2f} .. 2^{hi:.2f} ({2 ** lo:.3g} .. {2 ** hi:.3g})")
        lines.append(f"  drift law: log2 lr* = a - {f.beta:.3f} * log2(tokens); {f.sentence()}")
        spread = max(f.intercepts.values()) - min(f.intercepts.values())
        lines.append(f"  width: intercepts a per width {', '.join(f'{w}: {f.intercepts[w]:.2f}' for w in widths)} "
                     f"(spread {spread:.2f} log2; muP's promise is that it does not depend on width)")
        lines.append(f"  rests on {len(f.cells)} cells: " + ", ".join(
            f"w{w}/{format_tokens(t)}: {y:.2f}" for w, t, y in f.cells))
        lines.append(f"  extrapolation: {beyond_t:+.1f} octaves of tokens beyond the largest measured budget "
                     f"({format_tokens(measured[-1])}), {beyond_w:+.1f} octaves of width beyond the widest "
                     f"measured ({widths[-1]})")
        if beyond_t > 3 or beyond_w > 3:
            lines.append("  warning: far outside the measured range; the interval covers the fit's uncertainty, "
                         "not whether the law still holds there")
        return "\n".join(lines)


def predict(fit: DriftFit, width: int, tokens: float) -> Prediction:
    """The optimal log2 lr at (width, tokens): the mean intercept over widths (muP: width-free) and the drift."""
    a = float(np.mean(list(fit.intercepts.values())))
    x = math.log2(tokens)
    interval = None
    if fit.draws:
        values = [a_ - b_ * x for a_, b_ in fit.draws]
        lo, hi = np.percentile(values, [2.5, 97.5])
        interval = (float(lo), float(hi))
    return Prediction(a - fit.beta * x, interval, width, tokens, fit)
