"""Collector: run records -> a long-form DataFrame -> the optimal learning rate of each cell.

    df = collect(plan, store)                     # one row per run; a missing run is an error
    optima = find_optima(df)                      # {(parametrization, width, tokens): CellOptimum}

A cell is one (parametrization, width, tokens). Its optimum is the argmin over `lr_log2` of the
seed-mean loss, refined by the parabola through the minimum and its two neighbours (a sub-grid
estimate), with a bootstrap interval over seeds when there are two or more. A learning rate at which
any seed diverged counts as worse than every finite loss: it is never silently dropped. Each cell
carries flags: an optimum on the edge of the grid, too few converged points, diverged runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mupcheck.errors import StoreError
from mupcheck.fmt import format_tokens
from mupcheck.result import RunRecord
from mupcheck.store import Store

if TYPE_CHECKING:  # the plan holds torch objects; the analysis only reads its configs and keys
    from mupcheck.plan import Plan

__all__ = ["collect", "records_frame", "find_optima", "CellOptimum", "MissingRunsError", "CELL", "COLUMNS"]

CELL = ("parametrization", "width", "tokens")
COLUMNS = ["parametrization", "width", "tokens", "lr_log2", "seed", "loss", "status", "train_loss",
           "diverged_step", "data_repeats", "wall_time_s", "tokens_per_s", "device", "engine", "key",
           "date", "torch", "mup", "mupcheck", "mupcheck_commit"]  # the last five: each run's provenance
_BOOTSTRAP = 500


class MissingRunsError(StoreError):
    """Runs of the grid have no record in the store."""

    def __init__(self, missing: list[str], store_root: str):
        self.missing = missing
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        super().__init__(f"{len(missing)} run(s) missing from the store {store_root} (train them with "
                         f"`mupcheck run`):\n  {shown}")


def collect(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per run of the plan, columns named as in the grid. Raises MissingRunsError naming absent runs."""
    rows, missing = [], []
    for cfg in plan.configs:
        key = plan.key(cfg)
        record = store.load(key)
        if record is None:
            missing.append(f"{cfg.label()}  (key {key})")
        else:
            rows.append(_row(cfg.to_dict(), record))
    if missing:
        raise MissingRunsError(missing, str(store.root))
    return records_frame(rows)


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
    """The optimal learning rate of one cell, with the curve it was read from."""

    parametrization: str
    width: int
    tokens: int
    lr_log2: float  # refined optimum; NaN when every learning rate diverged
    grid_lr_log2: float  # the argmin on the grid
    loss: float  # loss at the refined optimum (parabola) or at the argmin
    interval: tuple[float, float] | None  # bootstrap 95% interval over seeds
    lrs: tuple[float, ...]  # the curve: lr_log2 values ...
    losses: tuple[float, ...]  # ... and seed-mean losses (inf where any seed diverged)
    n_seeds: int
    parabola: tuple[float, float, float] | None  # (a, b, c) of a*x^2 + b*x + c around the minimum
    flags: tuple[str, ...] = field(default=())

    @property
    def cell(self) -> tuple[str, int, int]:
        return (self.parametrization, self.width, self.tokens)

    @property
    def found(self) -> bool:
        return math.isfinite(self.lr_log2)

    def loss_at(self, x: float) -> float:
        """The cell's loss at lr 2^x, read off the fitted curve (parabola near the minimum, else linear)."""
        lrs, losses = np.asarray(self.lrs), np.asarray(self.losses)
        if self.parabola is not None:
            i = int(np.searchsorted(lrs, self.grid_lr_log2))
            if lrs[i - 1] <= x <= lrs[i + 1]:
                a, b, c = self.parabola
                return float(a * x * x + b * x + c)
        if x <= lrs[0]:
            return float(losses[0])
        if x >= lrs[-1]:
            return float(losses[-1])
        j = int(np.searchsorted(lrs, x))
        lo, hi = losses[j - 1], losses[j]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return math.inf
        t = (x - lrs[j - 1]) / (lrs[j] - lrs[j - 1])
        return float(lo + t * (hi - lo))

    def describe(self) -> str:
        if not self.found:
            return "no optimum (every learning rate diverged)"
        text = f"lr* = 2^{self.lr_log2:.2f}"
        if self.interval:
            text += f" [{self.interval[0]:.2f}, {self.interval[1]:.2f}]"
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


def _refine(lrs: np.ndarray, curve: np.ndarray) -> tuple[float, float, tuple[float, float, float] | None]:
    """(refined x, loss there, parabola) around the argmin of a curve; NaN if nothing is finite."""
    if not np.isfinite(curve).any():
        return math.nan, math.nan, None
    i = int(np.argmin(curve))
    x, y = float(lrs[i]), float(curve[i])
    if i == 0 or i == len(lrs) - 1 or not np.isfinite(curve[i - 1:i + 2]).all():
        return x, y, None  # on the edge, or a diverged neighbour: no bracket to fit
    a, b, c = np.polyfit(lrs[i - 1:i + 2], curve[i - 1:i + 2], 2)
    if a <= 0:
        return x, y, None
    xr = float(np.clip(-b / (2 * a), lrs[i - 1], lrs[i + 1]))
    return xr, float(a * xr * xr + b * xr + c), (float(a), float(b), float(c))


def cell_optimum(cell: tuple[str, int, int], group: pd.DataFrame) -> CellOptimum:
    """The optimum of one cell from its rows (any number of seeds)."""
    lrs, seeds, matrix = _loss_matrix(group)
    if np.isnan(matrix).any():
        raise StoreError(f"cell {cell}: some (lr, seed) pairs have no loss; every run of a cell is needed")
    curve = matrix.mean(axis=1)  # inf wherever any seed diverged
    x, y, parabola = _refine(lrs, curve)
    interval = _bootstrap(lrs, matrix) if len(seeds) >= 2 and math.isfinite(x) else None
    opt = CellOptimum(cell[0], int(cell[1]), int(cell[2]), x, float(lrs[np.argmin(curve)]) if math.isfinite(x)
                      else math.nan, y, interval, tuple(lrs), tuple(curve), len(seeds), parabola)
    return _with_flags(opt, group)


def _bootstrap(lrs: np.ndarray, matrix: np.ndarray) -> tuple[float, float]:
    # Seeds are resampled as whole curves: one seed fixes init and data order at every learning rate.
    rng = np.random.default_rng(0)
    n = matrix.shape[1]
    draws = [_refine(lrs, matrix[:, rng.integers(0, n, n)].mean(axis=1))[0] for _ in range(_BOOTSTRAP)]
    lo, hi = np.percentile([d for d in draws if math.isfinite(d)], [2.5, 97.5])
    return float(lo), float(hi)


def _with_flags(opt: CellOptimum, group: pd.DataFrame) -> CellOptimum:
    flags = []
    where = f"{opt.parametrization} width={opt.width} tokens={format_tokens(opt.tokens)}"
    finite = int(np.isfinite(opt.losses).sum())
    if not opt.found:
        flags.append(f"{where}: every learning rate diverged; extend lr_log2 toward lower values")
    elif opt.grid_lr_log2 == opt.lrs[0]:
        flags.append(f"{where}: optimum on the lower edge of lr_log2 (2^{opt.lrs[0]:g}); the true optimum may "
                     "lie outside: extend lr_log2 toward lower values")
    elif opt.grid_lr_log2 == opt.lrs[-1]:
        flags.append(f"{where}: optimum on the upper edge of lr_log2 (2^{opt.lrs[-1]:g}); the true optimum may "
                     "lie outside: extend lr_log2 toward higher values")
    if opt.found and finite < 3:
        flags.append(f"{where}: only {finite} learning rate(s) converged; too few to locate the optimum")
    diverged = group[group["status"] == "diverged"]
    if len(diverged):
        lrs = ", ".join(f"2^{x:g}" for x in sorted(set(diverged["lr_log2"])))
        flags.append(f"{where}: {len(diverged)} run(s) diverged (at lr {lrs}); counted as worse than any finite loss")
    return CellOptimum(**{**opt.__dict__, "flags": tuple(flags)})
