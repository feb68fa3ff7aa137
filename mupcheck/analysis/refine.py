"""Finer learning rates where they matter: around each cell's coarse argmin.

    extra = refinement_configs(grid, coarse_df)    # RunConfigs to train after the coarse sweep

A coarse sweep steps lr by an octave, about the size of the seed noise of an optimum. With a `[refine]`
table the suite adds rates at `step_log2` spacing within `span_log2` of the argmin of each cell's
seed-mean coarse curve, for every seed, as ordinary runs in the store: the fit of the minimum then rests
on many points near it. A cell whose coarse argmin is on the edge of `lr_log2` gets no refinement (its
optimum is censored: extend the grid instead). The extra runs are a pure function of the coarse
records, so every process that asks computes the same ones, and the store trains each once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from mupcheck.spec import Grid, RunConfig, run_configs

__all__ = ["refinement_configs", "refinement_rates"]


def refinement_rates(coarse: list[float], argmin: float, step: float, span: float) -> list[float]:
    """The extra lr_log2 values around `argmin`: every `step` within `span`, except rates already measured."""
    n = int(round(span / step))
    rates = [round(argmin + k * step, 6) for k in range(-n, n + 1)]
    return [x for x in rates if min(abs(x - c) for c in coarse) > 1e-6 and coarse[0] < x < coarse[-1]]


def refinement_configs(grid: Grid, coarse_df: pd.DataFrame) -> list[RunConfig]:
    """The refinement runs of `grid`, given its collected coarse runs; [] without a `[refine]` table."""
    if grid.refine is None:
        return []
    coarse = sorted(grid.lr_log2)
    by_cell: dict[tuple, RunConfig] = {}
    for cfg in run_configs(grid):
        by_cell.setdefault((cfg.parametrization, cfg.width, cfg.tokens), cfg)
    extra = []
    for (par, width, tokens), template in by_cell.items():
        cell = coarse_df[(coarse_df["parametrization"] == par) & (coarse_df["width"] == width)
                         & (coarse_df["tokens"] == tokens) & coarse_df["lr_log2"].isin(coarse)]
        losses = cell.assign(loss=np.where(cell["status"] != "ok", np.inf, cell["loss"]))  # diverged or unstable
        curve = losses.groupby("lr_log2")["loss"].mean()
        if not np.isfinite(curve.to_numpy()).any():
            continue
        argmin = float(curve.idxmin())
        if argmin in (coarse[0], coarse[-1]):
            continue  # censored: refining inside the grid would not find it
        for x in refinement_rates(coarse, argmin, grid.refine.step_log2, grid.refine.span_log2):
            extra += [dataclasses.replace(template, lr_log2=x, seed=s) for s in grid.seeds]
    return extra
