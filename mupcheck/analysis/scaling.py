"""The optimum's law in the form published scaling studies use: log2 lr* = c - a log2 N - b log2 D (+ g log2 B).

    law = scaling_law(optima, "sp", params)    # N: each cell's parameter count, by (width, depth)
    law.a, law.a_interval, law.b, law.lack_of_fit
    pred = predict_scaling(law, n=7e9, d=1e12, b=512)  # the optimum there, its interval, how far it extrapolates

Scaling studies that tune the rate at many model sizes and budgets fit log lr* linearly in log N (parameters),
log D (tokens) and, where the batch varies, log B (e.g. DeepSeek LLM, arXiv 2401.02954; Porian et al.,
arXiv 2406.19146; Bjorck et al., arXiv 2409.19913). The fit runs over the cells whose optimum is located.
With two or more seeds located in every such cell, the law is fitted on each seed's own optima and averaged,
with a Student-t interval over seeds (as `mupcheck.analysis.drift` does: a seed fixes init and data order in
every cell); otherwise it is fitted on the cells' optima, with the classical least-squares interval from the
residuals (what one seed per cell allows). Its check: a curvature term in log2 N and in log2 D (where three
or more values are measured), fitted the same way; an interval that excludes 0 says that one exponent does
not describe the data.

Under muP the optimum should not move with width: a model that grows in width alone has a near 0. Where
width and depth grow together (a size ladder), `a` also carries depth, which muP does not promise anything
about.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mupcheck.analysis.curves import t_interval, t_quantile
from mupcheck.analysis.optima import CellOptimum
from mupcheck.spec import Cell, non_embedding_params

__all__ = ["ScalingLaw", "ScalingPrediction", "non_embedding_params", "predict_scaling", "scaling_law"]

# Terms of the law, in order; each enters only where the cells measure two or more of its values.
_TERMS = ("params", "tokens", "batch_size")


@dataclass(frozen=True)
class ScalingLaw:
    """log2 lr* = c + sum_k coef[k] log2 x_k over the located cells of one parametrization."""

    parametrization: str
    terms: tuple[str, ...]  # which of params, tokens, batch_size vary (and so enter)
    coef: tuple[float, ...]  # intercept, then one per term
    intervals: tuple[tuple[float, float] | None, ...]  # 95%, one per term (None: no interval)
    cells: int
    seeds_used: int  # 0: fitted on the cells' optima (one seed), with the residuals' interval
    residual_df: int
    ranges: tuple[tuple[str, float, float], ...]  # (term, smallest, largest value measured)
    curvature: tuple[tuple[str, float, tuple[float, float] | None], ...]  # (term, q, its 95% interval)
    _predictor: tuple[tuple[float, ...], ...] = ()  # per seed: coefficients (or the one fit's), for predictions
    _cov: tuple[tuple[float, ...], ...] = ()  # the one fit's coefficient covariance (seeds_used == 0)

    def term(self, name: str) -> tuple[float, tuple[float, float] | None]:
        """(coefficient of log2 `name`, its interval); NaN where the term does not enter."""
        if name not in self.terms:
            return math.nan, None
        k = self.terms.index(name)
        return self.coef[k + 1], self.intervals[k]

    @property
    def a(self) -> float:
        """lr* ~ N^-a: the exponent along the parameter count (published form)."""
        return 0.0 - self.term("params")[0]

    @property
    def b(self) -> float:
        return 0.0 - self.term("tokens")[0]

    @property
    def g(self) -> float:
        return self.term("batch_size")[0]

    @property
    def lack_of_fit(self) -> bool:
        return any(iv is not None and (iv[0] > 0 or iv[1] < 0) for _, _, iv in self.curvature)

    def sentence(self) -> str:
        parts = []
        for name, letter, sign in (("params", "a", -1), ("tokens", "b", -1), ("batch_size", "g", 1)):
            value, iv = self.term(name)
            if not math.isfinite(value):
                continue
            text = f"{letter} = {0.0 + sign * value:+.3f}"
            if iv is not None:
                lo, hi = sorted((sign * iv[0], sign * iv[1]))
                text += f" [{0.0 + lo:+.3f}, {0.0 + hi:+.3f}]"
            parts.append(text)
        form = "log2 lr* = c" + "".join({"params": " - a log2 N", "tokens": " - b log2 D",
                                          "batch_size": " + g log2 B"}[t] for t in self.terms)
        how = (f"over {self.seeds_used} seeds" if self.seeds_used else
               f"one fit over the cells' optima, interval from its residuals ({self.residual_df} degrees of freedom)")
        return f"{form}: c = {self.coef[0]:+.2f}, " + ", ".join(parts) + f" ({self.cells} cells; {how})"

    def fit_sentence(self) -> str:
        if not self.curvature:
            return "curvature not checked: fewer than 3 values of N and of D"
        parts = []
        for name, q, iv in self.curvature:
            text = f"q({'N' if name == 'params' else 'D'}) = {q:+.3f}"
            parts.append(text + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else " (no interval)"))
        verdict = ("ONE EXPONENT DOES NOT DESCRIBE THE DATA: the optimum bends in log2 of that variable; a "
                   "prediction beyond the measured range is unreliable" if self.lack_of_fit else
                   "no curvature measured: the power law describes these cells")
        return "; ".join(parts) + f": {verdict}"

    def mup_reading(self) -> str:
        """Whether the optimum moves with model size, as muP promises it does not along width."""
        value, iv = self.term("params")
        if not math.isfinite(value):
            return "the cells have one model size: no exponent along N"
        if iv is None:
            return "a has no interval: the data cannot say whether the optimum moves with size"
        a_lo, a_hi = sorted((-iv[0], -iv[1]))
        if a_lo <= 0 <= a_hi:
            return (f"a's interval covers 0: the optimum does not move measurably with model size ({self.a:+.3f} "
                    "per doubling of N), what muP promises along width")
        return (f"a's interval excludes 0: the optimum moves with model size ({self.a:+.3f} per doubling of N); "
                "under muP a model growing in width alone should show a near 0 (where depth grows with it, a also "
                "carries depth, which muP promises nothing about)")


def scaling_law(optima: Mapping[Cell, CellOptimum], parametrization: str,
                params: Mapping[tuple[int, int], float]) -> ScalingLaw | None:
    """The law over `parametrization`'s located cells; `params` gives N by (width, depth). None with fewer
    located cells than the law has coefficients plus one, or with no term that varies."""
    cells = [(k, o) for k, o in sorted(optima.items()) if k.parametrization == parametrization and o.found
             and (k.width, k.depth) in params and k.tokens > 0]
    if not cells:
        return None
    raw: dict[str, list[float]] = {"params": [params[(k.width, k.depth)] for k, _ in cells],
                                   "tokens": [float(k.tokens) for k, _ in cells],
                                   "batch_size": [float(k.batch_size) for k, _ in cells]}
    terms = tuple(t for t in _TERMS if len(set(raw[t])) > 1 and all(v > 0 for v in raw[t]))
    if not terms:
        return None
    x = np.column_stack([np.log2(np.asarray(raw[t], dtype=float)) for t in terms])  # (cells, terms)
    design = np.column_stack([np.ones(len(cells)), x])
    if len(cells) < design.shape[1] + 1 or np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    seeds = _complete_seeds([o for _, o in cells])
    ranges = tuple((t, float(min(raw[t])), float(max(raw[t]))) for t in terms)
    curved = [k for k, t in enumerate(terms) if t in ("params", "tokens") and len(set(raw[t])) >= 3]
    if len(seeds) >= 2:
        per_seed = np.array([_lstsq(design, np.array([dict(o.seed_optima)[s] for _, o in cells])) for s in seeds])
        coef = per_seed.mean(axis=0)
        intervals = tuple(t_interval(list(per_seed[:, k + 1])) for k in range(len(terms)))
        curvature = tuple(_curvature_over_seeds(design, x[:, k], [np.array([dict(o.seed_optima)[s] for _, o in cells])
                                                                   for s in seeds], terms[k]) for k in curved)
        return ScalingLaw(parametrization, terms, tuple(float(c) for c in coef), intervals, len(cells), len(seeds),
                          0, ranges, curvature, tuple(tuple(float(c) for c in row) for row in per_seed))
    y = np.array([o.optimum_log2 for _, o in cells])
    coef, cov, df = _ols(design, y)
    intervals = tuple(_ols_interval(coef[k + 1], cov[k + 1, k + 1], df) for k in range(len(terms)))
    curvature = tuple(_curvature_ols(design, x[:, k], y, terms[k]) for k in curved)
    return ScalingLaw(parametrization, terms, tuple(float(c) for c in coef), intervals, len(cells), 0, df, ranges,
                      curvature, (tuple(float(c) for c in coef),), tuple(tuple(float(v) for v in row) for row in cov))


def _complete_seeds(cells: list[CellOptimum]) -> list[int]:
    """The seeds whose optimum was found in every cell (what a per-seed fit needs)."""
    seeds = set.intersection(*({s for s, x in o.seed_optima if math.isfinite(x)} for o in cells))
    return sorted(seeds)


def _lstsq(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef


def _ols(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Coefficients, their covariance (residual variance x (X'X)^-1; NaN without residual freedom), and df."""
    coef = _lstsq(design, y)
    df = len(y) - design.shape[1]
    sigma2 = float(np.sum((y - design @ coef) ** 2)) / df if df > 0 else math.nan
    return coef, sigma2 * np.linalg.inv(design.T @ design), df


def _ols_interval(value: float, variance: float, df: int) -> tuple[float, float] | None:
    if df < 1 or not math.isfinite(variance):
        return None
    half = t_quantile(df) * math.sqrt(max(variance, 0.0))
    return (float(value) - half, float(value) + half)


def _curvature_column(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) ** 2


def _curvature_ols(design: np.ndarray, values: np.ndarray, y: np.ndarray,
                   term: str) -> tuple[str, float, tuple[float, float] | None]:
    extended = np.column_stack([design, _curvature_column(values)])
    if np.linalg.matrix_rank(extended) < extended.shape[1] or len(y) <= extended.shape[1]:
        return term, math.nan, None
    coef, cov, df = _ols(extended, y)
    return term, float(coef[-1]), _ols_interval(coef[-1], cov[-1, -1], df)


def _curvature_over_seeds(design: np.ndarray, values: np.ndarray, ys: list[np.ndarray],
                          term: str) -> tuple[str, float, tuple[float, float] | None]:
    extended = np.column_stack([design, _curvature_column(values)])
    if np.linalg.matrix_rank(extended) < extended.shape[1]:
        return term, math.nan, None
    qs = [float(_lstsq(extended, y)[-1]) for y in ys]
    return term, float(np.mean(qs)), t_interval(qs)


@dataclass(frozen=True)
class ScalingPrediction:
    """The law's optimum at a target (N, D, B), its 95% interval, and how far the target lies beyond the cells."""

    law: ScalingLaw
    target: tuple[tuple[str, float], ...]
    x_log2: float
    interval: tuple[float, float] | None
    beyond: tuple[tuple[str, float], ...]  # (term, octaves beyond the measured range; negative: below it)

    def describe(self) -> str:
        letter = {"params": "N", "tokens": "D", "batch_size": "B"}
        where = ", ".join(f"{letter[t]} = {v:.3g}" for t, v in self.target)
        text = f"predicted optimal learning rate for {self.law.parametrization} at {where}: 2^{self.x_log2:.2f}"
        if self.interval:
            text += f" (95% interval 2^{self.interval[0]:.2f} .. 2^{self.interval[1]:.2f})"
        lines = [text, f"  law: {self.law.sentence()}", f"  check: {self.law.fit_sentence()}"]
        for term, octaves in self.beyond:
            name = {"params": "parameter count", "tokens": "token budget", "batch_size": "batch size"}[term]
            side = "above the largest" if octaves > 0 else "below the smallest"
            lines.append(f"  extrapolates {abs(octaves):.1f} octaves {side} measured {name}")
        if not self.beyond:
            lines.append("  within the measured ranges")
        return "\n".join(lines)


def predict_scaling(law: ScalingLaw, n: float, d: float, b: float | None = None) -> ScalingPrediction:
    """The law's log2 lr* at N = n, D = d (and B = b where the batch enters), with its interval: over seeds
    (each seed's own law at the target), or from the one fit's covariance."""
    given = {"params": n, "tokens": d, "batch_size": b}
    values: dict[str, float] = {}
    for term in law.terms:
        value = given[term]
        if value is None or not value > 0:
            raise ValueError(f"the law has a term in log2 {term}: give a positive {term}")
        values[term] = float(value)
    row: np.ndarray = np.array([1.0] + [math.log2(values[t]) for t in law.terms])
    if law.seeds_used:
        preds = [float(row @ np.array(c)) for c in law._predictor]
        x, interval = float(np.mean(preds)), t_interval(preds)
    else:
        x = float(row @ np.array(law.coef))
        cov = np.array(law._cov)
        interval = _ols_interval(x, float(row @ cov @ row), law.residual_df)
    beyond = []
    for term, lo, hi in law.ranges:
        value = math.log2(values[term])
        if value > math.log2(hi) + 1e-9:
            beyond.append((term, value - math.log2(hi)))
        elif value < math.log2(lo) - 1e-9:
            beyond.append((term, value - math.log2(lo)))
    return ScalingPrediction(law, tuple((t, values[t]) for t in law.terms), x, interval, tuple(beyond))
