"""Collector: run records -> a long-form DataFrame -> the optimal learning rate of each cell.

    df = collect(plan, store)                     # one row per run; a missing run is an error
    optima = find_optima(df)                      # {(parametrization, width, tokens): CellOptimum}

A cell is one (parametrization, width, tokens). Its optimum is fitted on each seed's curve and on the
seed-mean curve (`mupcheck.analysis.curves`: an asymmetric parabola over >= 5 points around the
argmin). With two or more seeds the cell's optimum is the mean of the per-seed optima, with a 95%
Student-t interval over seeds; with one seed there is no interval. A learning rate at which any seed
diverged counts as worse than every finite loss: it is never silently dropped. An optimum on the edge
of the measured rates is censored (it lies beyond), never used as if exact. Each cell carries flags:
censored, too few converged points, diverged runs. When the grid has a `[refine]` table, `collect`
also gathers the extra rates around each cell's coarse argmin (`mupcheck.analysis.refine`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mupcheck.analysis.curves import FIT_WINDOW, CurveFit, fit_minimum, t_interval
from mupcheck.analysis.refine import refinement_configs
from mupcheck.errors import StoreError
from mupcheck.fmt import format_tokens
from mupcheck.result import RunRecord
from mupcheck.spec import RunConfig
from mupcheck.store import Store

if TYPE_CHECKING:  # the plan holds torch objects; the analysis only reads its configs and keys
    from mupcheck.plan import Plan

__all__ = ["CELL", "COLUMNS", "CellOptimum", "MissingRunsError", "collect", "collect_coarse", "find_optima",
           "records_frame"]

CELL = ("parametrization", "width", "tokens")
COLUMNS = ["parametrization", "width", "tokens", "lr_log2", "seed", "loss", "status", "train_loss",
           "diverged_step", "data_repeats", "wall_time_s", "tokens_per_s", "device", "engine", "key",
           "date", "torch", "mup", "mupcheck", "mupcheck_commit"]  # the last five: each run's provenance
# A run this close (log2) to a rate counts as measured there (refined grids step by 0.25).
MEASURED_WITHIN = 0.125


class MissingRunsError(StoreError):
    """Runs of the grid have no record in the store."""

    def __init__(self, missing: list[str], store_root: str):
        self.missing = missing
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        super().__init__(f"{len(missing)} run(s) missing from the store {store_root} (train them with "
                         f"`mupcheck run`):\n  {shown}")


def collect(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per run of the plan (and its refinement runs, with a `[refine]` table), columns named as in
    the grid. Raises MissingRunsError naming absent runs."""
    rows = _gather(plan, store, plan.configs)
    extra = refinement_configs(plan.grid, records_frame(rows))
    return records_frame(rows + _gather(plan, store, extra)) if extra else records_frame(rows)


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


def _row(config: dict[str, Any], record: RunRecord) -> dict[str, Any]:
    result = record.result
    row = {k: config[k] for k in ("parametrization", "width", "tokens", "lr_log2", "seed")}
    row.update({k: getattr(result, k) for k in ("loss", "status", "train_loss", "diverged_step", "data_repeats",
                                                "wall_time_s", "tokens_per_s", "device")})
    row["engine"] = result.engine_label
    row["key"] = record.key
    row.update({k: record.provenance.get(k) for k in ("date", "torch", "mup", "mupcheck", "mupcheck_commit")})
    return row


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with the collector's columns from row dicts (missing optional columns become NaN)."""
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    df["loss"] = df["loss"].astype(float)
    return df[COLUMNS].sort_values(["parametrization", "width", "tokens", "lr_log2", "seed"], ignore_index=True)


@dataclass(frozen=True)
class CellOptimum:
    """The optimal learning rate of one cell: the curves it was read from and the fits."""

    parametrization: str
    width: int
    tokens: int
    lrs: tuple[float, ...]  # the curve: every lr_log2 measured in the cell ...
    losses: tuple[float, ...]  # ... and the seed-mean loss (inf where any seed diverged)
    fit: CurveFit  # of the seed-mean curve
    seed_optima: tuple[tuple[int, float], ...]  # (seed, its own optimum; NaN when censored or diverged)
    seed_losses: tuple[tuple[int, tuple[float, ...]], ...]  # (seed, its curve over lrs)
    flags: tuple[str, ...] = field(default=())

    @property
    def cell(self) -> tuple[str, int, int]:
        return (self.parametrization, self.width, self.tokens)

    @property
    def n_seeds(self) -> int:
        return len(self.seed_optima)

    @property
    def found(self) -> bool:
        """An optimum inside the measured rates, with at least 3 converged rates to locate it."""
        return self.fit.found and int(np.isfinite(self.losses).sum()) >= 3

    @property
    def censored(self) -> str | None:
        return self.fit.censored

    @property
    def lr_log2(self) -> float:
        """The optimum: the mean of the per-seed optima with two or more seeds, else the fit's (the edge
        rate when censored; NaN when every rate diverged)."""
        per_seed = [x for _, x in self.seed_optima]
        if len(per_seed) >= 2 and self.found and all(math.isfinite(x) for x in per_seed):
            return float(np.mean(per_seed))
        return self.fit.x0

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% interval over seeds (None with one seed, or when a seed's optimum is censored)."""
        return t_interval([x for _, x in self.seed_optima]) if self.found else None

    @property
    def seed_sd(self) -> float:
        """Seed-to-seed standard deviation of the optimum, log2 (NaN with fewer than two seeds)."""
        per_seed = [x for _, x in self.seed_optima]
        return float(np.std(per_seed, ddof=1)) if len(per_seed) >= 2 and all(map(math.isfinite, per_seed)) \
            else math.nan

    @property
    def grid_lr_log2(self) -> float:
        """The measured rate with the lowest seed-mean loss."""
        if not np.isfinite(self.losses).any():
            return math.nan
        return float(self.lrs[int(np.argmin(self.losses))])

    @property
    def loss(self) -> float:
        """The lowest seed-mean loss measured: a real run, never a fit dipping below every run."""
        finite = [y for y in self.losses if math.isfinite(y)]
        return min(finite) if finite else math.nan

    def loss_at(self, x: float) -> tuple[float, str]:
        """The cell's seed-mean loss at lr 2^x and where it comes from: a run within MEASURED_WITHIN
        log2 ("measured"), the fitted curve inside the measured range ("fitted"), or nothing beyond it
        (NaN, "outside the measured rates")."""
        lrs = np.asarray(self.lrs)
        j = int(np.argmin(np.abs(lrs - x)))
        if abs(lrs[j] - x) <= MEASURED_WITHIN:
            return float(self.losses[j]), "measured"
        if not lrs[0] <= x <= lrs[-1]:
            return math.nan, "outside the measured rates"
        if self.fit.fitted and abs(x - self.fit.x0) <= FIT_WINDOW:
            return self.fit.loss_at(x), "fitted"
        # Far from the minimum: between the two measured neighbours (inf if either diverged).
        k = int(np.searchsorted(lrs, x))
        lo, hi = self.losses[k - 1], self.losses[k]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return math.inf, "interpolated"
        w = (x - lrs[k - 1]) / (lrs[k] - lrs[k - 1])
        return float(lo + w * (hi - lo)), "interpolated"

    def describe(self) -> str:
        if not np.isfinite(self.losses).any():
            return "no optimum (every learning rate diverged)"
        if self.censored:
            side = "below" if self.censored == "low" else "above"
            return f"lr* {side} the measured rates (at or {side} 2^{self.fit.x0:g}: censored)"
        text = f"lr* = 2^{self.lr_log2:.2f}"
        if self.interval:
            text += f" [{self.interval[0]:.2f}, {self.interval[1]:.2f}] over {self.n_seeds} seeds"
        else:
            text += f" ({self.n_seeds} seed: no interval)" if self.n_seeds == 1 else ""
        return text


def find_optima(df: pd.DataFrame) -> dict[tuple[str, int, int], CellOptimum]:
    """The optimum of every (parametrization, width, tokens) cell of a collected frame."""
    out = {}
    for (par, width, tokens), group in df.groupby(list(CELL), sort=True):
        cell = (str(par), int(width), int(tokens))  # type: ignore[call-overload]  # pandas types keys as Hashable
        out[cell] = cell_optimum(cell, group)
    return out


def _loss_matrix(group: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lrs, seeds, losses[lr, seed]) with +inf for diverged runs."""
    values = group.assign(loss=np.where(group["status"] == "diverged", np.inf, group["loss"]))
    table = values.pivot_table(index="lr_log2", columns="seed", values="loss", aggfunc="first", dropna=False)
    return table.index.to_numpy(float), table.columns.to_numpy(), table.to_numpy(float)


def cell_optimum(cell: tuple[str, int, int], group: pd.DataFrame) -> CellOptimum:
    """The optimum of one cell from its rows (any number of seeds)."""
    lrs, seeds, matrix = _loss_matrix(group)
    if np.isnan(matrix).any():
        raise StoreError(f"cell {cell}: some (lr, seed) pairs have no loss; every run of a cell is needed")
    curve = matrix.mean(axis=1)  # inf wherever any seed diverged
    fits = [fit_minimum(lrs, matrix[:, k]) for k in range(len(seeds))]
    opt = CellOptimum(cell[0], int(cell[1]), int(cell[2]), tuple(lrs), tuple(curve), fit_minimum(lrs, curve),
                      tuple((int(s), f.x0 if f.found else math.nan) for s, f in zip(seeds, fits)),
                      tuple((int(s), tuple(matrix[:, k])) for k, s in enumerate(seeds)))
    return dataclasses.replace(opt, flags=_flags(opt, group))


def _flags(opt: CellOptimum, group: pd.DataFrame) -> tuple[str, ...]:
    flags = []
    where = f"{opt.parametrization} width={opt.width} tokens={format_tokens(opt.tokens)}"
    finite = int(np.isfinite(opt.losses).sum())
    if not np.isfinite(opt.losses).any():
        flags.append(f"{where}: every learning rate diverged; extend lr_log2 toward lower values")
    elif opt.censored == "low":
        flags.append(f"{where}: optimum on the lower edge of lr_log2 (2^{opt.lrs[0]:g}): censored, the true optimum "
                     "lies below; extend lr_log2 toward lower values")
    elif opt.censored == "high":
        flags.append(f"{where}: optimum on the upper edge of lr_log2 (2^{opt.lrs[-1]:g}): censored, the true "
                     "optimum lies above; extend lr_log2 toward higher values")
    elif opt.n_seeds >= 2 and opt.interval is None:
        flags.append(f"{where}: some seeds' own optima are censored or diverged; no interval over seeds")
    if finite and not opt.censored and finite < 3:
        flags.append(f"{where}: only {finite} learning rate(s) converged; too few to locate the optimum")
    diverged = group[group["status"] == "diverged"]
    if len(diverged):
        lrs = ", ".join(f"2^{x:g}" for x in sorted(set(diverged["lr_log2"])))
        flags.append(f"{where}: {len(diverged)} run(s) diverged (at lr {lrs}); counted as worse than any finite loss")
    return tuple(flags)
