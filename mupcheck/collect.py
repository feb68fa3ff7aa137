"""Runs to the long-form table: a plan's records from the store, or a results grid's rows from its files.

    df = load_runs(grid)            # either kind of grid: what a user's own test calls
    df = collect(plan, store)       # one row per run of the plan (and its refinement runs); a missing run is an error
    found = collect_available(plan, store)   # the cells whose runs are all in: a partly trained grid
    df = collect_results(grid)      # a results grid: its runs, read by mupcheck.sources
    df = collect_coarse(plan, store)    # the grid's own runs only: what refinement is planned from

The one place where runs, wherever they came from, become `mupcheck.frame`'s table; everything that judges
them (`mupcheck.analysis`) starts from that table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mupcheck.errors import StoreError
from mupcheck.frame import records_frame
from mupcheck.plan import Plan, plan_grid, refinement_configs
from mupcheck.result import RunRecord, RunResult
from mupcheck.sources.tables import read_results
from mupcheck.spec import SETTINGS_KEYS, Cell, Grid, RunConfig
from mupcheck.store import Store

__all__ = ["Available", "MissingRunsError", "collect", "collect_available", "collect_coarse", "collect_results",
           "frame_of", "load_runs"]


class MissingRunsError(StoreError):
    """Runs of the grid have no record in the store."""

    def __init__(self, missing: list[str], store_root: str):
        self.missing = missing
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        super().__init__(f"{len(missing)} run(s) missing from the store {store_root} (train them with "
                         f"`mupcheck run`):\n  {shown}")


def load_runs(grid: Grid, store: Store | None = None, device: str | None = None) -> pd.DataFrame:
    """Every run of a grid as the long-form table, whichever kind it is: a results grid's rows from its files,
    or a trained grid's records from `store` (default: `Store.open()`, $MUPCHECK_STORE or ./.mupcheck).
    Raises MissingRunsError naming runs not trained yet, GridError naming a bad results file."""
    if grid.imported:
        return collect_results(grid)
    return collect(plan_grid(grid, device), store if store is not None else Store.open())


def collect(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per run of the plan (and its refinement runs, with a `[refine]` table), columns named as in
    the grid. Raises MissingRunsError naming absent runs."""
    rows = _gather(plan, store, plan.configs)
    extra = refinement_configs(plan.grid, records_frame(rows))
    return records_frame(rows + _gather(plan, store, extra)) if extra else records_frame(rows)


@dataclass(frozen=True)
class Available:
    """The runs of a partly trained grid: those of its complete cells, and the cells left out."""

    frame: pd.DataFrame
    missing: tuple[tuple[Cell, int], ...]  # (cell, runs of it not in the store), in the plan's order

    @property
    def missing_runs(self) -> int:
        return sum(n for _, n in self.missing)


def collect_available(plan: Plan, store: Store) -> Available:
    """Every run of the cells whose runs are all in the store: the coarse runs, then (with a `[refine]` table) the
    refinement runs planned from them. A cell with any run missing is left out whole, and counted: an optimum
    read off part of a curve would be a different estimate. Raises MissingRunsError when no cell is complete."""
    rows, missing, labels = _gather_by_cell(plan, store, plan.configs)
    coarse = {cell: cell_rows for cell, cell_rows in rows.items() if cell not in missing}
    extra = refinement_configs(plan.grid, records_frame([r for cell_rows in coarse.values() for r in cell_rows]))
    extra_rows, extra_missing, extra_labels = _gather_by_cell(plan, store, extra)
    missing.update(extra_missing)
    complete = [r for cell, cell_rows in coarse.items() if cell not in missing
                for r in cell_rows + extra_rows.get(cell, [])]
    if not complete:
        raise MissingRunsError(labels + extra_labels, str(store.root))
    return Available(records_frame(complete), tuple(missing.items()))


def _gather_by_cell(plan: Plan, store: Store, configs: Iterable[RunConfig]
                    ) -> tuple[dict[Cell, list[dict[str, Any]]], dict[Cell, int], list[str]]:
    """The records found, by cell; how many runs of each cell are not in the store; and those runs, named."""
    rows: dict[Cell, list[dict[str, Any]]] = {}
    missing: dict[Cell, int] = {}
    labels = []
    for cfg in configs:
        cell = Cell(cfg.parametrization, cfg.width, cfg.tokens, cfg.depth, cfg.batch_size)
        key = plan.key(cfg)
        record = store.load(key)
        if record is None:
            missing[cell] = missing.get(cell, 0) + 1
            labels.append(f"{cfg.label()}  (key {key})")
        else:
            rows.setdefault(cell, []).append(_row(cfg.to_dict(), record))
    return rows, missing, labels


def collect_results(grid: Grid) -> pd.DataFrame:
    """The runs of a results grid (`results = ...`: trained elsewhere, read by mupcheck.sources), as the
    collector's frame. Errors name the file, the row and the column."""
    s = grid.results
    if s is None:
        raise ValueError(f"{grid.path} trains its runs; collect them from the store")
    found = read_results(s.where(), grid.grid_dir, grid.path, dict(s.columns), s.duplicates, dict(s.picked),
                         dict(s.listed), SETTINGS_KEYS, s.ignore, dict(s.status))
    frame = found.frame
    # Depth and batch size: the table's columns where it has them (axes), else the grid's one value.
    for axis in ("depth", "batch_size"):
        if axis not in frame:
            frame = frame.assign(**{axis: getattr(grid, axis)})
    return records_frame([{str(k): v for k, v in row.items()} for row in frame.to_dict("records")])


def frame_of(records: Iterable[RunRecord]) -> pd.DataFrame:
    """The collector's frame of the given records, whatever grid they belong to (no plan, no store lookup):
    for records read from a store's folder directly. A record holds a swept key's value, not which key its
    grid swept, so `sweep_log2` stays NaN here; `collect` reads it off the plan."""
    return records_frame([_row(r.config, r) for r in records])


def collect_coarse(plan: Plan, store: Store) -> pd.DataFrame:
    """The grid's own runs only (what refinement is planned from). Raises MissingRunsError."""
    return records_frame(_gather(plan, store, plan.configs))


def _gather(plan: Plan, store: Store, configs: Iterable[RunConfig]) -> list[dict[str, Any]]:
    rows, missing = [], []
    for cfg in configs:
        key = plan.key(cfg)
        record = store.load(key)
        if record is None:
            missing.append(f"{cfg.label()}  (key {key})")
        else:
            rows.append(_row(cfg.to_dict(), record))
    if missing:
        raise MissingRunsError(missing, str(store.root))
    return rows


def device_time(result: RunResult) -> float:
    """The device time a run took of its own. A run's `wall_time_s` is the time of every step it went through;
    one at a time, a budget that shared a run went through steps the shared run took once: a budget read off it
    took none of its own (its evaluations are counted with the run), a decay branch its own steps, the shared
    run all of them. A batched run's time is already its share of its group's."""
    shared = result.shared
    if shared is None or result.engine == "fused" or shared.kind == "trunk":
        return result.wall_time_s
    if shared.kind == "prefix":
        return 0.0
    return result.wall_time_s * max(0, result.steps - shared.leaves_at) / max(1, result.steps)


def _row(config: dict[str, Any], record: RunRecord) -> dict[str, Any]:
    result = record.result
    row = {k: config[k] for k in ("parametrization", "width", "tokens", "lr_log2", "seed")}
    row.update({k: config.get(k, 0) for k in ("depth", "batch_size")})
    row["sweep_log2"] = config["sweep_log2"] if config.get("sweep") else math.nan  # the swept key's coordinate
    row.update({k: getattr(result, k) for k in ("loss", "train_loss", "diverged_step", "data_repeats",
                                                "wall_time_s", "tokens_per_s", "device")})
    row["status"] = result.judged_status()
    row["engine"] = result.engine_label
    row["device_time_s"] = device_time(result)
    row["shared"] = result.shared.kind if result.shared is not None else None
    row["key"] = record.key
    row.update({k: record.provenance.get(k) for k in ("date", "torch", "mup", "mupcheck", "mupcheck_commit")})
    return row
