"""The optimum of each cell of a collected frame, with its noise, its curves and its stability boundary.

    optima = find_optima(df)        # {Cell(parametrization, width, tokens, depth, batch_size): CellOptimum}
    optima[cell].optimum_log2, optima[cell].interval, optima[cell].describe()

A cell is one parametrization and one value of each axis (width, tokens, depth, batch size). Its optimum
is fitted on each seed's curve (`mupcheck.analysis.curves`: a local cubic within about an octave of the
argmin, which the wall above the optimum cannot pull, or an interpolant with a stated resolution on coarse
rates). The cell's optimum is the mean of the seeds' own optima, with a 95% Student-t interval over the same
seeds; with one seed there is no interval. A seed whose optimum is censored (on the edge of the measured
rates) or pinned (its fit's minimum outside the points it used) is left out of both, and the cell says so. A
run that diverged or was unstable is not usable: it counts as worse than every usable rate and is never
silently dropped. Each cell also carries its stability boundary per seed (`curves.seed_boundary`) and flags:
censored, too few usable points, diverged or unstable runs. The curve runs along the grid's tuned key: the
learning rate, or a swept key (`tuned`), and `xs` and `optimum_log2` are that key's log2 coordinates.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from mupcheck.analysis.curves import (
    SHAPE_WINDOW,
    Boundary,
    CurveFit,
    CurveShape,
    fit_minimum,
    fit_shape,
    seed_boundary,
    t_interval,
    widen,
)
from mupcheck.frame import CELL, x_column
from mupcheck.spec import Cell

__all__ = ["DEFAULT_BOUNDARY_RISE", "INTERPOLATE_WITHIN", "MEASURED_WITHIN", "CellOptimum", "Optima", "along",
           "cell_optimum", "find_optima", "joint_argmin", "one_slice", "tuned_names"]


# A run this close (log2) to a rate counts as measured there (refined grids step by 0.25).
MEASURED_WITHIN = 0.125


# Between two runs at most this far apart (log2), a loss is interpolated per seed.
INTERPOLATE_WITHIN = 0.5


DEFAULT_BOUNDARY_RISE = 0.10  # the [stability] table's boundary_rise


@dataclass(frozen=True)
class CellOptimum:
    """The optimal learning rate of one cell, the stability boundary above it, and the curves behind them."""

    key: Cell
    xs: tuple[float, ...]  # the curve: every log2 value of the tuned key measured in the cell ...
    losses: tuple[float, ...]  # ... and the seed-mean loss (inf where any seed diverged)
    fit: CurveFit  # of the seed-mean curve: whether the cell's optimum is censored
    seed_fits: tuple[tuple[int, CurveFit], ...]  # each seed's own fit
    seed_losses: tuple[tuple[int, tuple[float, ...]], ...]  # (seed, its curve over xs; inf: diverged)
    seed_usable: tuple[tuple[int, tuple[bool, ...]], ...]  # (seed, False where the run diverged or was unstable)
    seed_boundaries: tuple[tuple[int, Boundary], ...]  # (seed, its stability boundary)
    flags: tuple[str, ...] = field(default=())
    # What the curve runs along: "lr", or the grid's swept key (spec.SWEEP_KEYS); `xs`, `optimum_log2` and the
    # boundary are then that key's log2 coordinates.
    tuned: str = "lr"

    @property
    def cell(self) -> Cell:
        return self.key

    @property
    def parametrization(self) -> str:
        return self.key.parametrization

    @property
    def width(self) -> int:
        return self.key.width

    @property
    def tokens(self) -> int:
        return self.key.tokens

    @property
    def depth(self) -> int:
        return self.key.depth

    @property
    def batch_size(self) -> int:
        return self.key.batch_size

    @property
    def n_seeds(self) -> int:
        return len(self.seed_fits)

    @property
    def seed_optima(self) -> tuple[tuple[int, float], ...]:
        """(seed, its own optimum; NaN when censored, pinned or every rate diverged)."""
        return tuple((s, f.x0 if f.found else math.nan) for s, f in self.seed_fits)

    @property
    def found_optima(self) -> list[float]:
        return [x for _, x in self.seed_optima if math.isfinite(x)]

    @functools.cached_property
    def found(self) -> bool:
        """An optimum inside the measured rates, with at least 3 usable rates to locate it, found for at least
        half of the seeds."""
        usable = int(np.isfinite(self.losses).sum())
        return (self.fit.censored is None and math.isfinite(self.fit.x0) and usable >= 3
                and 2 * len(self.found_optima) >= self.n_seeds)

    @property
    def censored(self) -> str | None:
        return self.fit.censored

    @property
    def optimum_log2(self) -> float:
        """The optimum: the mean of the seeds' own optima (those found), else the seed-mean curve's (the edge
        rate when censored; NaN when every rate diverged)."""
        found = self.found_optima
        return float(np.mean(found)) if self.found and found else self.fit.x0

    @property
    def resolution(self) -> float:
        """The systematic error (log2) of the seeds' optima where a grid too coarse for the local fit left them
        to an interpolant (curves.RESOLUTION x the spacing); 0 where every found optimum had the local fit."""
        return max((f.resolution for _, f in self.seed_fits if f.found), default=0.0)

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% interval over the seeds whose optimum was found (the same seeds as `optimum_log2`), widened by the
        coarse fit's `resolution`; None with fewer than two."""
        return widen(t_interval(self.found_optima), self.resolution) if self.found else None

    @property
    def seed_sd(self) -> float:
        """Seed-to-seed standard deviation of the optimum, log2 (NaN with fewer than two found)."""
        found = self.found_optima
        return float(np.std(found, ddof=1)) if len(found) >= 2 else math.nan

    @functools.cached_property
    def shape(self) -> CurveShape:
        """The seed-mean curve's curvature on each side of the cell's optimum (x0 held at `optimum_log2`)."""
        return fit_shape(self.xs, self.losses, self.optimum_log2)

    # --- the stability boundary and the margin -----------------------------------------------------

    @property
    def boundary(self) -> float:
        """Mean of the seeds' boundaries, log2 (a lower bound when `boundary_censored`)."""
        xs = [b.x for _, b in self.seed_boundaries if math.isfinite(b.x)]
        return float(np.mean(xs)) if xs else math.nan

    @property
    def boundary_censored(self) -> bool:
        """Some seed had no unusable rate above its optimum: the boundary lies above the measured rates."""
        return any(b.censored for _, b in self.seed_boundaries)

    @property
    def boundary_interval(self) -> tuple[float, float] | None:
        if self.boundary_censored:
            return None
        return t_interval([b.x for _, b in self.seed_boundaries])

    @property
    def seed_margins(self) -> list[float]:
        """Each seed's boundary minus its own optimum (seeds with both)."""
        bounds = dict(self.seed_boundaries)
        return [bounds[s].x - x for s, x in self.seed_optima if math.isfinite(x) and math.isfinite(bounds[s].x)]

    @property
    def margin(self) -> float:
        """Boundary minus optimum, log2, mean over the seeds with both (a lower bound when censored)."""
        margins = self.seed_margins
        return float(np.mean(margins)) if self.found and margins else math.nan

    @property
    def margin_interval(self) -> tuple[float, float] | None:
        return None if self.boundary_censored or not self.found else t_interval(self.seed_margins)

    # --- losses -----------------------------------------------------------------------------------------

    @functools.cached_property
    def best_measured_log2(self) -> float:
        """The measured rate with the lowest seed-mean loss."""
        if not np.isfinite(self.losses).any():
            return math.nan
        return float(self.xs[int(np.argmin(self.losses))])

    @property
    def loss(self) -> float:
        """The lowest seed-mean loss measured: a real run, never a fit dipping below every run."""
        finite = [y for y in self.losses if math.isfinite(y)]
        return min(finite) if finite else math.nan

    def loss_at(self, x: float) -> tuple[float, str]:
        """The cell's seed-mean loss at lr 2^x and where it comes from: a run within MEASURED_WITHIN
        log2 ("measured"), the fitted shape near the optimum ("fitted"), between two runs ("interpolated"),
        or nothing beyond the measured rates (NaN, "outside the measured rates")."""
        xs = np.asarray(self.xs)
        j = int(np.argmin(np.abs(xs - x)))
        if abs(xs[j] - x) <= MEASURED_WITHIN:
            return float(self.losses[j]), "measured"
        if not xs[0] <= x <= xs[-1]:
            return math.nan, "outside the measured rates"
        if self.shape.fitted and abs(x - self.shape.x0) <= SHAPE_WINDOW:
            return self.shape.loss_at(x), "fitted"
        k = int(np.searchsorted(xs, x))
        lo, hi = self.losses[k - 1], self.losses[k]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return math.inf, "interpolated"
        w = (x - xs[k - 1]) / (xs[k] - xs[k - 1])
        return float(lo + w * (hi - lo)), "interpolated"

    def seed_losses_at(self, x: float) -> tuple[dict[int, float], str]:
        """Each seed's own loss at lr 2^x: its run within MEASURED_WITHIN ("measured"), or linear between its
        two runs around x when they are at most INTERPOLATE_WITHIN apart ("interpolated"); ({}, why) else.
        inf where a run diverged; a seed with no run there (an imported sweep) is left out."""
        xs = np.asarray(self.xs)
        j = int(np.argmin(np.abs(xs - x)))
        if abs(xs[j] - x) <= MEASURED_WITHIN:
            return {s: float(curve[j]) for s, curve in self.seed_losses if not math.isnan(curve[j])}, "measured"
        if not xs[0] <= x <= xs[-1]:
            return {}, "outside the measured rates"
        k = int(np.searchsorted(xs, x))
        if xs[k] - xs[k - 1] > INTERPOLATE_WITHIN:
            # Between two runs that both diverged the rate diverges too, however far apart they are (in every
            # seed that ran both: a seed with a usable neighbour there says nothing of the rate between).
            ran = [(s, curve) for s, curve in self.seed_losses
                   if not (math.isnan(curve[k - 1]) or math.isnan(curve[k]))]
            if ran and all(math.isinf(curve[k - 1]) and math.isinf(curve[k]) for _, curve in ran):
                return {s: math.inf for s, _ in ran}, "interpolated"
            return {}, f"no runs within {INTERPOLATE_WITHIN:g} log2 on both sides"
        w = (x - xs[k - 1]) / (xs[k] - xs[k - 1])
        out = {}
        for s, curve in self.seed_losses:
            lo, hi = curve[k - 1], curve[k]
            if math.isnan(lo) or math.isnan(hi):
                continue  # this seed did not run both neighbours (an imported sweep)
            out[s] = float(lo + w * (hi - lo)) if math.isfinite(lo) and math.isfinite(hi) else math.inf
        return out, "interpolated"

    def seed_floors(self) -> dict[int, float]:
        """Each seed's smooth loss at the cell's optimum: the intercept of its own curve's least squares shape with
        x0 held at `optimum_log2` (`curves.fit_shape` over its usable runs near it). What a regret is read against: a
        fit over several runs, so never equal to the one run a transferred rate lands on."""
        out = {}
        for (s, curve), (_, usable) in zip(self.seed_losses, self.seed_usable):
            y = np.where(np.asarray(usable), np.asarray(curve, dtype=float), np.inf)
            y[np.isnan(np.asarray(curve, dtype=float))] = np.nan  # no run there (a ragged imported sweep)
            shape = fit_shape(self.xs, y, self.optimum_log2)
            if shape.fitted and shape.c > 0:
                out[s] = shape.c
        return out

    def describe(self) -> str:
        star, _, what = tuned_names(self.tuned)
        if not np.isfinite(self.losses).any():
            return f"no optimum (every {what} diverged)"
        if self.censored:
            side = "below" if self.censored == "low" else "above"
            measured = "rates" if self.tuned == "lr" else "values"
            return f"{star} {side} the measured {measured} (at or {side} 2^{self.fit.x0:g}: censored)"
        if not self.found:
            return f"{star} not located (fewer than half of {self.n_seeds} seeds' optima found)"
        text = f"{star} = 2^{self.optimum_log2:.2f}"
        n = len(self.found_optima)
        if self.interval:
            text += f" [{self.interval[0]:.2f}, {self.interval[1]:.2f}] over {n} seeds"
            if n < self.n_seeds:
                text += f" (of {self.n_seeds})"
        else:
            text += f" ({self.n_seeds} seed: no interval)" if self.n_seeds == 1 else f" ({n} seed found: no interval)"
        return text


class Optima(dict[Cell, CellOptimum]):
    """The cells' optima, by Cell. A (parametrization, width, tokens) key also finds its cell when exactly one
    depth and batch size has it: code written before depth and batch size were axes keeps working."""

    def __missing__(self, key: Any) -> CellOptimum:
        if isinstance(key, tuple) and len(key) == 3:
            found = [o for k, o in self.items() if k[:3] == key]
            if len(found) == 1:
                return found[0]
            if found:
                raise KeyError(f"{key}: {len(found)} cells (depths or batch sizes) have it; index by Cell(...)")
        raise KeyError(key)


def tuned_names(tuned: str) -> tuple[str, str, str]:
    """How messages name the tuned key's optimum, its grid key and one of its values: ("lr*", "lr_log2",
    "learning rate") or, for a swept key, ("output_mult*", "sweep_log2", "output_mult value")."""
    return ("lr*", "lr_log2", "learning rate") if tuned == "lr" else (f"{tuned}*", "sweep_log2", f"{tuned} value")


def along(df: pd.DataFrame, tuned: str = "lr") -> pd.DataFrame:
    """The runs as curves along `tuned` (x in `x_column(tuned)`). Where a grid sweeps the learning rate and
    another key together, each seed keeps its best run over the other key at each value of `tuned` (the
    profile: the loss of `tuned` at that value when the other is tuned as well); usable runs rank before
    unstable ones, unstable before diverged."""
    x = x_column(tuned)
    other = "sweep_log2" if x == "lr_log2" else "lr_log2"
    if df.empty or df[other].isna().all() or (df.groupby([*CELL, x, "seed"])[other].nunique() <= 1).all():
        return df
    rank = df["status"].map({"ok": 0, "unstable": 1}).fillna(2).to_numpy()
    loss = np.where(df["status"] == "diverged", np.inf, df["loss"].to_numpy(float))
    order = np.lexsort((loss, rank))  # by rank, then loss
    best = df.iloc[order].drop_duplicates([*CELL, x, "seed"])
    return best.sort_values([*CELL, x, "seed"], ignore_index=True)


def joint_argmin(df: pd.DataFrame) -> dict[Cell, tuple[float, float, float]]:
    """Per cell of a joint sweep, the measured (lr_log2, sweep_log2, seed-mean loss) with the lowest seed-mean
    loss among the pairs every seed ran usably; a cell with no such pair is left out."""
    out = {}
    for key, group in df.groupby(list(CELL), sort=True):
        par, *values = cast(tuple, key)
        pairs = group.groupby(["lr_log2", "sweep_log2"])
        every_seed = pairs["seed"].nunique() == group["seed"].nunique()
        usable = pairs["status"].agg(lambda s: bool((s == "ok").all())) & every_seed
        mean = pairs["loss"].mean()[usable]
        if len(mean):
            lr, x = cast(tuple, mean.idxmin())
            out[Cell(str(par), *(int(v) for v in values))] = (float(lr), float(x), float(mean.min()))
    return out


def find_optima(df: pd.DataFrame, boundary_rise: float = DEFAULT_BOUNDARY_RISE, tuned: str = "lr") -> Optima:
    """The optimum of every cell of a collected frame along `tuned` ("lr", or the grid's swept key: see
    `along`); `boundary_rise` sets where each seed's stability boundary lies (`[stability] boundary_rise`)."""
    out = Optima()
    df = along(df, tuned)
    shown = tuple(a for a in ("depth", "batch_size") if df[a].nunique() > 1)  # named in flags where they vary
    for key, group in df.groupby(list(CELL), sort=True):
        par, *values = cast(tuple, key)  # pandas types group keys as Hashable
        cell = Cell(str(par), *(int(v) for v in values))
        out[cell] = cell_optimum(cell, group, boundary_rise, shown, tuned)
    return out


def one_slice(optima: dict[Cell, CellOptimum], depth: int, batch_size: int) -> dict[Cell, CellOptimum]:
    """The cells at one depth and batch size: what the laws along width and tokens are fitted on."""
    return {k: o for k, o in optima.items() if k.depth == depth and k.batch_size == batch_size}


def _loss_matrix(group: pd.DataFrame, x: str = "lr_log2") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(xs, seeds, losses[x, seed], usable[x, seed]) along column x: inf for diverged runs, NaN for a missing
    pair; usable False where a run diverged or was unstable. (With numpy, not pivot_table: a cell is a few
    dozen rows, and the estimator tests build thousands of cells.)"""
    status = group["status"].to_numpy()
    lr_values, seed_values = group[x].to_numpy(float), group["seed"].to_numpy()
    xs, i = np.unique(lr_values, return_inverse=True)
    seeds, j = np.unique(seed_values, return_inverse=True)
    losses = np.full((len(xs), len(seeds)), np.nan)
    usable = np.zeros((len(xs), len(seeds)), dtype=bool)
    # The first row of a (lr, seed) pair wins, as pivot_table's "first" did: reversed, so it is written last.
    values = np.where(status == "diverged", np.inf, group["loss"].to_numpy(float))
    losses[i[::-1], j[::-1]] = values[::-1]
    usable[i[::-1], j[::-1]] = (status == "ok")[::-1]
    return xs, seeds, losses, usable


def cell_optimum(cell: tuple, group: pd.DataFrame, boundary_rise: float = DEFAULT_BOUNDARY_RISE,
                 named_axes: tuple[str, ...] = ("depth", "batch_size"), tuned: str = "lr") -> CellOptimum:
    """The optimum of one cell (a Cell, or a (parametrization, width, tokens) tuple) from its rows (any number of
    seeds, one run per seed and value of `tuned`); `named_axes`: the axes beyond width and tokens its flags name."""
    cell = Cell(*cell)
    xs, seeds, matrix, usable = _loss_matrix(group, x_column(tuned))
    present = ~np.isnan(matrix)  # a grid this package trains has every pair; an imported sweep may not
    fit_matrix = np.where(present & ~usable, np.inf, matrix)  # the optimum is read off usable runs only
    with np.errstate(invalid="ignore"):
        curve = _mean_present(fit_matrix)  # inf wherever a seed's run is not usable; NaN where no seed ran
        shown = np.where(np.isinf(curve), _mean_present(matrix), curve)  # an unstable run's loss is shown
    opt = CellOptimum(
        cell, tuple(xs), tuple(shown),
        fit_minimum(xs, _complete(curve, present)),
        tuple((int(s), fit_minimum(xs, fit_matrix[:, k])) for k, s in enumerate(seeds)),
        tuple((int(s), tuple(matrix[:, k])) for k, s in enumerate(seeds)),
        tuple((int(s), tuple(bool(u) for u in usable[:, k])) for k, s in enumerate(seeds)),
        tuple((int(s), seed_boundary(xs, matrix[:, k], usable[:, k], boundary_rise)) for k, s in enumerate(seeds)),
        tuned=tuned)
    return dataclasses.replace(opt, flags=_flags(opt, group, named_axes))


def _mean_present(matrix: np.ndarray) -> np.ndarray:
    """Mean over the seeds that ran each rate (NaN where none did; inf where one diverged)."""
    counts = (~np.isnan(matrix)).sum(axis=1)
    sums = np.where(np.isnan(matrix), 0.0, matrix).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _complete(curve: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The seed-mean curve at the rates every seed ran (NaN elsewhere): a mean over fewer seeds would mix
    their levels into the curve's shape."""
    return np.where(present.all(axis=1), curve, np.nan)


def _flags(opt: CellOptimum, group: pd.DataFrame, named_axes: tuple[str, ...]) -> tuple[str, ...]:
    flags = []
    where = opt.key.where(named_axes)
    _, key, what = tuned_names(opt.tuned)
    usable = int(np.isfinite(opt.losses).sum())
    if not np.isfinite(opt.losses).any():
        flags.append(f"{where}: every {what} diverged; extend {key} toward lower values")
    elif opt.censored == "low":
        flags.append(f"{where}: optimum on the lower edge of {key} (2^{opt.xs[0]:g}): censored, the true optimum "
                     f"lies below; extend {key} toward lower values")
    elif opt.censored == "high":
        flags.append(f"{where}: optimum on the upper edge of {key} (2^{opt.xs[-1]:g}): censored, the true "
                     f"optimum lies above; extend {key} toward higher values")
    else:
        lost = [(s, f) for s, f in opt.seed_fits if not f.found]
        if lost:
            why = ", ".join(f"seed {s} {'censored' if f.censored else 'pinned'} "
                            f"{'low' if (f.censored or f.pinned) == 'low' else 'high'}" for s, f in lost)
            flags.append(f"{where}: {len(lost)} of {opt.n_seeds} seeds' own optima not located ({why}): left out "
                         "of the optimum and its interval alike" + ("" if opt.found else "; too few left to locate "
                                                                     "the cell's optimum") +
                         "; refine the rates around the optimum")
    if not opt.censored and opt.resolution:
        flags.append(f"{where}: too few rates near the optimum (fewer than 5 within 0.75 octave of a seed's argmin): "
                     f"it is read off an interpolant between the measured rates, whose systematic error "
                     f"({opt.resolution:.2f} log2) widens its interval; refine by step_log2 0.25 to locate it "
                     "more precisely")
    if usable and not opt.censored and usable < 3:
        flags.append(f"{where}: only {usable} {what}(s) usable; too few to locate the optimum")
    for status, what in (("diverged", "diverged"), ("unstable", "unstable (the training loss spiked, or ended "
                                                                "no lower than it started)")):
        bad = group[group["status"] == status]
        if len(bad):
            lrs = ", ".join(f"2^{x:g}" for x in sorted(set(bad[x_column(opt.tuned)])))
            flags.append(f"{where}: {len(bad)} run(s) {what} (at {'lr' if opt.tuned == 'lr' else opt.tuned} {lrs}); "
                         f"counted as worse than any usable {'rate' if opt.tuned == 'lr' else 'value'}")
    return tuple(flags)
