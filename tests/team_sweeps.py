"""Results tables shaped like the sweeps teams bring, simulated with a known truth (issue 35).

    table = sweep_table(rng, Ladder(...))      # a DataFrame to write as CSV, and the truth it was drawn from
    truth = ladder.optimum(width, depth, tokens, batch)

One seed (a seed at scale costs a run), rates an octave or half an octave apart and never refined, a ragged
grid (not every model shape at every budget), width and depth scaled together along a ladder of model sizes,
many batch sizes, budgets written in decimal (4e9, 1.14e10), empty columns. The optimum follows the published
form log2 lr* = c - a log2 N - b log2 D + g log2 B (N = 12 depth width^2), and each cell's curve is one of
simulate.random_shape's cliff-shaped curves, moved by a seed's noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from simulate import Shape, random_shape


@dataclass(frozen=True)
class Ladder:
    """The truth of a sweep: its shapes, budgets, batch sizes, and the law of the optimum."""

    shapes: tuple[tuple[int, int], ...] = ((960, 7), (1024, 8), (1280, 9), (1536, 11), (1792, 13), (2048, 16))
    budgets: tuple[float, ...] = (4e9, 1.14e10, 2e10, 4e10, 1e11)
    batches: tuple[int, ...] = (256,)
    c: float = 2.0
    a: float = 0.35  # along N
    b: float = 0.10  # along D
    g: float = 0.0  # along B
    missing: tuple[tuple[int, float], ...] = ((2048, 4e9), (960, 1e11))  # (width, budget) never trained: ragged
    step: float = 0.5  # log2 between rates
    seed_sd: float = 0.2
    point_sd: float = 0.003
    parametrization: str = "sp"
    shape: Shape | None = None  # None: random per sweep
    extra: dict = field(default_factory=dict)  # columns to add as they are (an empty `notes` column, ...)

    def params(self, width: int, depth: int) -> float:
        return 12.0 * depth * width**2

    def optimum(self, width: int, depth: int, tokens: float, batch: int) -> float:
        """The law's log2 lr* (the true optimum also carries the curve's small shift: `Shape.optimum`)."""
        return (self.c - self.a * math.log2(self.params(width, depth)) - self.b * math.log2(tokens)
                + self.g * math.log2(batch))


def sweep_table(rng: np.random.Generator, ladder: Ladder) -> tuple[pd.DataFrame, Shape]:
    """One row per run: width, depth, tokens (as decimal text), batch_size, lr, loss (empty: diverged),
    and `ladder.extra` columns; no seed column (one seed)."""
    shape = ladder.shape or random_shape(rng)
    rows = []
    for width, depth in ladder.shapes:
        for tokens in ladder.budgets:
            if (width, tokens) in ladder.missing:
                continue
            for batch in ladder.batches:
                x0 = ladder.optimum(width, depth, tokens, batch) + ladder.seed_sd * rng.standard_normal()
                lo = math.floor(ladder.optimum(width, depth, tokens, batch)) - 5
                for x in np.arange(lo, lo + 8 + 1e-9, ladder.step):
                    loss = 2.5 * shape(x - x0) * (1 + ladder.point_sd * rng.standard_normal())
                    rows.append({"width": width, "depth": depth, "tokens": f"{tokens:g}", "batch_size": batch,
                                 "lr": 2.0**x, "loss": "" if loss > 3 * 2.5 else loss, **ladder.extra})
    return pd.DataFrame(rows), shape
