"""The long-form table of runs: one row per run, the only seam between reading runs and judging them.

    df = records_frame(rows)        # the columns below, sorted by cell, rate and seed
    df[x_column("lr")]              # the tuned key's log2 coordinate: "lr_log2", or "sweep_log2"

Runs mupcheck trained (`mupcheck.collect` reads them from the store) and runs a team trained elsewhere
(`mupcheck.sources`) become this same table; every analysis function takes it and nothing else, so whether a
sweep came from mupcheck or from a CSV file does not matter to any of them. Column names are the grid's
vocabulary: `width`, `tokens`, `lr_log2`, `seed`, `parametrization`, `loss`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mupcheck.spec import Cell

__all__ = ["CELL", "COLUMNS", "records_frame", "x_column"]


CELL = Cell._fields


COLUMNS = ["parametrization", "width", "tokens", "depth", "batch_size", "lr_log2", "seed", "loss", "status",
           "train_loss",
           "diverged_step", "data_repeats", "wall_time_s", "tokens_per_s", "device", "engine", "key",
           "device_time_s", "shared",  # a run's own device time, and how it shared a run (None: alone)
           "sweep_log2",  # the grid's swept key's coordinate (NaN without one)
           "date", "torch", "mup", "mupcheck", "mupcheck_commit"]  # the last five: each run's provenance


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with the collector's columns from row dicts (missing optional columns become NaN)."""
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = 0 if col in ("depth", "batch_size") else np.nan  # 0: not recorded (see Cell)
    df["loss"] = df["loss"].astype(float)
    return df[COLUMNS].sort_values([*CELL, "lr_log2", "sweep_log2", "seed"], ignore_index=True)


def x_column(tuned: str) -> str:
    """The collected frame's column of the tuned key's log2 coordinate (the learning rate's, or the swept key's)."""
    return "lr_log2" if tuned == "lr" else "sweep_log2"
