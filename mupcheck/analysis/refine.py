"""Finer learning rates where they matter: around each cell's coarse argmin.

    extra = refinement_configs(grid, coarse_df)    # RunConfigs to train after the coarse sweep

    advice = refinement_advice(grid, df)         # a results grid: the rates to run next, as lines

A coarse sweep steps lr by an octave, about the size of the seed noise of an optimum. With a `[refine]`
table the suite adds rates at `step_log2` spacing within `span_log2` of the argmin of each cell's
seed-mean coarse curve, for every seed, as ordinary runs in the store: the fit of the minimum then rests
on many points near it. A cell whose coarse argmin is on the edge of `lr_log2` gets no refinement (its
optimum is censored: extend the grid instead). The extra runs are a pure function of the coarse
records, so every process that asks computes the same ones, and the store trains each once.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import numpy as np
import pandas as pd

from mupcheck.spec import Cell, Grid, RunConfig, run_configs

CELL = Cell._fields

__all__ = ["refinement_advice", "refinement_configs", "refinement_rates"]


def refinement_rates(coarse: list[float], argmin: float, step: float, span: float) -> list[float]:
    """The extra lr_log2 values around `argmin`: every `step` within `span`, except rates already measured."""
    n = int(round(span / step))
    rates = [round(argmin + k * step, 6) for k in range(-n, n + 1)]
    return [x for x in rates if min(abs(x - c) for c in coarse) > 1e-6 and coarse[0] < x < coarse[-1]]


def refinement_configs(grid: Grid, coarse_df: pd.DataFrame) -> list[RunConfig]:
    """The refinement runs of `grid`, given its collected coarse runs; [] without a `[refine]` table. They
    refine the curve of the grid's tuned key: the learning rate, or the swept key (spec refuses `[refine]` for
    a joint sweep of both)."""
    if grid.refine is None:
        return []
    by_cell: dict[tuple, RunConfig] = {}
    for cfg in run_configs(grid):
        by_cell.setdefault(tuple(getattr(cfg, k) for k in CELL), cfg)
    x_col = x_column(grid.tuned)
    extra = []
    for key, template in by_cell.items():
        coarse = sorted(grid.sweep_log2 if grid.sweep else grid.rates_of(template.parametrization))
        mask = np.logical_and.reduce([coarse_df[k] == v for k, v in zip(CELL, key)])
        cell = coarse_df[mask & coarse_df[x_col].isin(coarse)]
        losses = cell.assign(loss=np.where(cell["status"] != "ok", np.inf, cell["loss"]))  # diverged or unstable
        curve = losses.groupby(x_col)["loss"].mean()
        if not np.isfinite(curve.to_numpy()).any():
            continue
        argmin = float(curve.idxmin())
        if argmin in (coarse[0], coarse[-1]):
            continue  # censored: refining inside the grid would not find it
        for x in refinement_rates(coarse, argmin, grid.refine.step_log2, grid.refine.span_log2):
            at_x = template.at_sweep(x) if grid.sweep else dataclasses.replace(template, lr_log2=x)
            extra += [dataclasses.replace(at_x, seed=s) for s in grid.seeds]
    return extra


def x_column(tuned: str) -> str:
    """The collected frame's column of the tuned key's log2 coordinate (the learning rate's, or the swept key's)."""
    return "lr_log2" if tuned == "lr" else "sweep_log2"


def refinement_advice(grid: Grid, df: pd.DataFrame) -> list[str]:
    """For a grid of results trained elsewhere (nothing is trained here): per cell, the rates a `[refine]`
    table asks for around the seed-mean argmin that some seed has not run, as lines to act on; [] without
    a `[refine]` table or when nothing is missing."""
    if grid.refine is None:
        return []
    lines = []
    shown = tuple(a for a in ("depth", "batch_size") if df[a].nunique() > 1)
    for key, cell in df.groupby(list(CELL), sort=True):
        par, *values = cast(tuple, key)  # pandas types group keys as Hashable
        where = Cell(str(par), *(int(v) for v in values)).where(shown)
        losses = cell.assign(loss=np.where(cell["status"] != "ok", np.inf, cell["loss"]))
        curve = losses.groupby("lr_log2")["loss"].mean()
        if not np.isfinite(curve.to_numpy()).any():
            continue
        measured = sorted(float(x) for x in curve.index)
        argmin = float(measured[int(np.argmin(curve.to_numpy()))])
        if argmin in (measured[0], measured[-1]):
            side = "below" if argmin == measured[0] else "above"
            lines.append(f"{where}: the optimum lies {side} the "
                         f"measured rates (2^{argmin:g}): run rates {side} it first")
            continue
        n = int(round(grid.refine.span_log2 / grid.refine.step_log2))
        wanted = [round(argmin + k * grid.refine.step_log2, 6) for k in range(-n, n + 1)]
        seeds = sorted(set(cell["seed"]))
        ran = {(round(float(x), 6), s) for x, s in zip(cell["lr_log2"], cell["seed"])}
        missing = [x for x in wanted if any((x, s) not in ran for s in seeds)]
        if missing:
            lines.append(f"{where}: run lr_log2 "
                         f"{', '.join(f'{x:g}' for x in missing)} for seeds {', '.join(map(str, seeds))} "
                         f"(every {grid.refine.step_log2:g} within {grid.refine.span_log2:g} of the argmin "
                         f"2^{argmin:g})")
    return lines
