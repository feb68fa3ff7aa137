"""Loss-vs-learning-rate curves with a known truth, shaped like real ones, for testing the estimators.

    shape = Shape(wall=1.0)                        # flat bottom, gentle left rise, exponential wall 1 octave up
    df = simulate(rng, {("mup", 32, 2**20): Cell(-5.0, shape)}, seeds=range(5))   # a collected frame
    shape.optimum(), shape.regret(d)               # the truth the estimators are judged against

Real curves along training length (the committed CPU records, and the H100 runs of issue 23) are not the
parabola an estimator may assume: the loss rises gently below the optimum (about 1.5% per octave^2 at
the CPU records' 2M-token cells), is flat at the bottom, and meets an exponential wall one or two octaves
above it, past which runs diverge. The noise sizes are measured on the committed records
(reports/cpu_*.store): a seed moves a cell's optimum by SD 0.1-0.45 log2 (median about 0.2); it moves
the whole curve's level by about 0.5%; each run adds about 0.3% of its own (read off the second
differences of each seed's curve at 0.25-log2 spacing). A seed's shift is partly shared by every cell
(init and data order; correlation `rho`), which is what pairing over seeds exploits.

The rates follow what a grid with `[refine]` measures: an octave apart from 2^-9 to 2^-3, then every
0.25 log2 within one octave of each cell's seed-mean argmin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mupcheck.frame import records_frame
from mupcheck.spec import Cell as GridCell

COARSE = tuple(float(x) for x in range(-9, -2))
SD_OPTIMUM = 0.2  # log2, per seed
SD_LEVEL = 0.005  # relative, per seed and cell
SD_POINT = 0.003  # relative, per run
DIVERGED_ABOVE = 3.0  # a run this many times the best loss is stopped as diverged (the engine: 1.5x its first)


@dataclass(frozen=True)
class Shape:
    """Relative loss against d = log2 lr - x0: 1 + a_left |d|^p_left below x0, a_right d^p_right above,
    plus a wall wall_rise * exp((d - wall) / sharpness) that adds `wall_rise` at `wall` octaves."""

    a_left: float = 0.015
    p_left: float = 2.0
    a_right: float = 0.012
    p_right: float = 2.0
    wall: float = 1.5
    sharpness: float = 0.25
    wall_rise: float = 0.10

    def __call__(self, d: np.ndarray | float) -> np.ndarray:
        d = np.asarray(d, dtype=float)
        left = self.a_left * np.abs(np.minimum(d, 0.0)) ** self.p_left
        right = self.a_right * np.maximum(d, 0.0) ** self.p_right
        return 1.0 + left + right + self.wall_rise * np.exp((d - self.wall) / self.sharpness)

    def optimum(self) -> float:
        """Where the noiseless curve is lowest, relative to x0 (the wall moves it a little left of 0)."""
        grid = np.arange(-3.0, 3.0, 0.0005)
        return float(grid[np.argmin(self(grid))])

    def regret(self, d: np.ndarray | float) -> np.ndarray:
        """Relative extra loss at d over the curve's own minimum."""
        return self(d) / self(self.optimum()) - 1.0

    def band(self, max_regret: float) -> tuple[float, float]:
        """The true band: shifts (optimum - transferred) that cost at most max_regret."""
        grid = np.arange(-4.0, 4.0, 0.001)
        ok = grid[self.regret(grid) <= max_regret]
        opt = self.optimum()
        return (opt - float(ok.max()), opt - float(ok.min()))


@dataclass(frozen=True)
class Cell:
    """One cell's truth: its curve's x0 (the optimum is x0 + shape.optimum()) and its shape."""

    x0: float
    shape: Shape = Shape()
    level: float = 2.0  # the loss at the bottom

    @property
    def optimum(self) -> float:
        return self.x0 + self.shape.optimum()


def random_shape(rng: np.random.Generator) -> Shape:
    """A cliff-shaped curve drawn from a wide family, for estimators that must not assume one shape: the left
    rise |d|^1.5 .. |d|^3, the right one 0.3 to 2 times as steep, a wall 0.6 to 2.5 octaves above the
    optimum, sharp or soft, adding 5% to 30% at its foot."""
    a = rng.uniform(0.008, 0.03)
    return Shape(a_left=a, p_left=rng.uniform(1.5, 3.0), a_right=a * rng.uniform(0.3, 2.0),
                 p_right=rng.uniform(1.5, 3.0), wall=rng.uniform(0.6, 2.5), sharpness=rng.uniform(0.1, 0.5),
                 wall_rise=rng.uniform(0.05, 0.3))


def spaced(step: float, lo: float = -12.0, hi: float = -1.0) -> tuple[float, ...]:
    """Rates `step` log2 apart from lo to hi: a sweep that was never refined."""
    return tuple(float(x) for x in np.arange(lo, hi + step / 2, step))


def _rates(coarse: tuple[float, ...], argmin: float, step: float = 0.25, span: float = 1.0) -> list[float]:
    n = int(round(span / step))
    extra = {round(argmin + k * step, 6) for k in range(-n, n + 1)}
    return sorted(set(coarse) | {x for x in extra if coarse[0] < x < coarse[-1]})


def simulate(rng: np.random.Generator, cells: dict[tuple, Cell], seeds: Iterable[int],
             sd_optimum: float = SD_OPTIMUM, sd_level: float = SD_LEVEL, sd_point: float = SD_POINT,
             rho: float = 0.5, refine: bool = True, coarse: tuple[float, ...] = COARSE) -> pd.DataFrame:
    """A collected frame of simulated runs of every cell and seed (the `coarse` rates, then refined ones). A cell's
    key is (parametrization, width, tokens), with depth and batch size after them when the test varies those."""
    seeds = list(seeds)
    shared = {s: rng.standard_normal() for s in seeds}  # what a seed does to every cell alike
    rows = []
    for key, cell in cells.items():
        par, width, tokens, depth, batch_size = GridCell(*key)
        shift = {s: sd_optimum * (math.sqrt(rho) * shared[s] + math.sqrt(1 - rho) * rng.standard_normal())
                 for s in seeds}
        level = {s: cell.level * (1 + sd_level * rng.standard_normal()) for s in seeds}

        def loss(x: float, s: int, cell: Cell = cell, shift: dict = shift, level: dict = level) -> float:
            return float(level[s] * cell.shape(x - cell.x0 - shift[s]) * (1 + sd_point * rng.standard_normal()))

        first = {(x, s): loss(x, s) for x in coarse for s in seeds}
        mean = [np.mean([first[(x, s)] for s in seeds]) for x in coarse]
        rates = _rates(coarse, coarse[int(np.argmin(mean))]) if refine else list(coarse)
        best = min(first.values())
        for x in rates:
            for s in seeds:
                value = first[(x, s)] if (x, s) in first else loss(x, s)
                diverged = value > DIVERGED_ABOVE * best
                rows.append(dict(parametrization=par, width=width, tokens=tokens, depth=depth, batch_size=batch_size,
                                 lr_log2=x, seed=s,
                                 loss=None if diverged else value, status="diverged" if diverged else "ok",
                                 data_repeats=0.1))
    return records_frame(rows)
