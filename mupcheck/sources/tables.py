"""Results trained elsewhere, as runs: a sweep's CSV, JSONL or Parquet file, or a tracking system's store.

    rows = read_results("runs.csv", grid_dir="grids", grid_path="grids/theirs.toml", pick={"schedule": "cosine"})
    read_results(Source(kind="optuna", storage="sqlite:///study.db", study="lr"), ...)   # a tracking system
    rows.frame        # one row per run: parametrization, width, tokens, lr_log2, seed, loss, status, ...
    rows.files        # (what was read, sha256, rows) of every input: the report's provenance
    rows.left_out     # (why, how many) of the runs that are not results (still running, pruned, ...)
    write_results(runs_table(records), "runs.csv")   # the other way: a store's records as such a table

A grid names its results instead of a model (`results = "runs.csv"`, or a `[results]` table with a
`[results.columns]` mapping). A tracking system's store (`source = "mlflow"`, `"tensorboard"`, `"optuna"`) is
read by its own module into a raw table of one row per run, in its own column names; from there every source
is mapped, validated and judged alike. The files are CSV, JSONL or Parquet (Parquet through pandas and pyarrow, an
optional extra), or a glob of several. Only the rate (`lr` or `lr_log2`) and `loss` are required; the other
columns, after mapping: `width`, `tokens`, `seed`, `parametrization` (`mup`, `sp`, `custom`), `depth` and
`batch_size` (axes, as in a grid that trains), `params` (the model's parameter count: a size ladder is ordered
by it), `status` (`ok`, `diverged`, `unstable`; a non-finite or empty loss means diverged), `initial_loss`, a
training curve (`curve`: an inline JSON list of losses, or the path of a CSV with `step` and `loss` columns
or of a JSON list, relative to the results file; or columns `train_loss@<step>`), and any setting a grid can
hold (`schedule`, `optimizer`, ...), which the grid picks one value of. A missing axis column is filled by
the one value the grid lists (`tokens = 1e9`), else it means one value: seed 0, width and tokens 0 ("not
stated"). A column that is empty in every row counts as absent. A curve lets the suite judge a run
*unstable* as it judges its own runs (`mupcheck.result.RunResult.judged_status`).

An export whose column names clash with mupcheck's (MLflow's own `status`, `FINISHED`) is mapped, ignored
(`ignore = ["status"]`, or `status = ""` in `[results.columns]`) or translated (`[results.status]`: their
value = `ok`, `unstable`, `diverged`, or `skip` for a run that is not a result, left out and counted).

Every problem is one line naming the file, the row (1-based, as a spreadsheet counts data rows) and the
column: a missing column, an unparsable or out-of-range number, an unknown status, two rows of the same
run (unless `duplicates = "mean"`: GPU reruns of one seed differ by 0.2-3.7% on an H100, so averaging is
a choice the grid must make), an empty file.

pandas is imported when a grid reads results, not when a grid file is parsed: the pytest plugin parses
grids at every collection, and importing pandas costs 0.8 s there (`python -X importtime`, the project's
2-core CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mupcheck.fmt import format_tokens
from mupcheck.result import Checkpoint, RunResult
from mupcheck.sources import files, mlflow_store, optuna_study, tensorboard_logs
from mupcheck.sources.base import NOT_RESULTS, RUN_KEY, RawTable, ResultFile, Source, Where, local_store
from mupcheck.vocab import PARAMETRIZATIONS, SKIP, STATUSES

__all__ = ["REQUIRED", "Results", "derived_axes", "read_results"]

REQUIRED = ("loss",)  # and `lr` or `lr_log2`
# The axes a table may leave out, with what a missing column means when the grid lists no single value for it.
AXIS_DEFAULTS = {"width": 0, "tokens": 0, "seed": 0, "parametrization": "mup"}
# Settings that are axes: several values in a table are cells to compare, not two experiments.
AXIS_SETTINGS = ("depth", "batch_size")
# What an empty cell may read as.
_EMPTY_WORDS = ("", "nan", "none", "null", "na", "n/a")
# The grid's axis keys and the columns they select.
AXIS_COLUMNS = {"widths": "width", "tokens": "tokens", "lr_log2": "lr_log2", "seeds": "seed",
                "parametrization": "parametrization", "depths": "depth", "batch_sizes": "batch_size"}
_CURVE_PREFIX = "train_loss@"


@dataclass(frozen=True)
class Results:
    """The runs of a results grid and where they came from."""

    frame: pd.DataFrame  # parametrization, width, tokens, lr_log2, seed, loss (NaN: diverged), status, key, ...
    files: tuple[ResultFile, ...]
    combined: int  # rows merged into others by duplicates = "mean"
    columns: tuple[str, ...] = ()  # the columns the source gave, after mapping (not empty in every row)
    # (why, how many) of the runs left out: not results (still running, killed, pruned, failed), or skipped by
    # the grid's [results.status]
    left_out: tuple[tuple[str, int], ...] = ()


def read_results(source: Source | str, grid_dir: str | Path, grid_path: str, columns: dict[str, str] | None = None,
                 duplicates: str = "error", pick: dict[str, Any] | None = None,
                 axes: dict[str, tuple[Any, ...]] | None = None, settings: Collection[str] = (),
                 ignore: Collection[str] = (), status_map: dict[str, str] | None = None) -> Results:
    """Read, map, validate and combine the runs of a results grid, from its source (files, or a tracking
    system's store: `Source.kind`; a string is the path of a file or a glob).

    `columns` maps our names to theirs (to "" to ignore ours); `pick` holds grid settings the user set (a
    results column of the same name keeps the rows that match it); `axes` holds axes the grid lists (widths,
    tokens, lr_log2, seeds, parametrization, depths, batch_sizes), which keep only those values and must each be
    found, or fill a missing column with the one value listed; `settings` names the columns that are grid
    settings (a setting with several values and none picked is two experiments: an error); `ignore` names
    their columns to drop; `status_map` translates their status values (to STATUSES or `skip`)."""
    where = Where(grid_path)
    source = Source(path=source) if isinstance(source, str) else source
    stamp = _stamp(source, Path(grid_dir), where)
    memo = (source, str(grid_dir), stamp, grid_path, _frozen(columns), duplicates, _frozen(pick), _frozen(axes),
            tuple(sorted(settings)), tuple(ignore), _frozen(status_map))
    if stamp is None or memo not in _READ:
        readers = {"table": files.raw_tables, "mlflow": mlflow_store.raw_tables,
                   "tensorboard": tensorboard_logs.raw_tables, "optuna": optuna_study.raw_tables}
        raws = readers[source.kind](source, Path(grid_dir), where)
        found = _judge_tables(raws, where, columns or {}, duplicates, pick or {}, axes or {}, set(settings), ignore,
                              status_map or {})
        _READ.clear()  # one source at a time: a grid is parsed, then its runs collected, from the same read
        _READ[memo] = found
    found = _READ[memo]
    return dataclasses.replace(found, frame=found.frame.copy())


# The last source read and what it was read with: parsing a results grid reads its table to learn its axes, and
# collecting its runs reads it again (a 20,000-row table takes seconds).
_READ: dict[Any, Results] = {}


def _stamp(source: Source, grid_dir: Path, where: Where) -> tuple | None:
    """What says a source has not changed since it was read: its files' sizes and times (None: no such files,
    read it again)."""
    if source.kind == "table":
        paths = files.files_of(source.path, grid_dir, where)
    else:
        target = local_store(source, grid_dir)
        if target is None:  # a server: no file says whether it changed
            return None
        if target.is_file():
            paths = [target]
        elif target.is_dir():
            paths = sorted(p for p in target.rglob("*") if p.is_file())
        else:
            return None
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in paths)


def _frozen(value: Any) -> Any:
    """A hashable copy of an argument made of dicts, lists and tuples."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _judge_tables(raws: list[RawTable], where: Where, columns: dict[str, str], duplicates: str,
                  pick: dict[str, Any], axes: dict[str, tuple[Any, ...]], settings: set[str], ignore: Collection[str],
                  status_map: dict[str, str]) -> Results:
    """Map, validate, translate and combine the raw tables' runs (the same for every source)."""
    frames, given = [], set()
    left_out: dict[str, int] = {}
    for table in raws:
        for reason, n in table.left_out:
            left_out[reason] = left_out.get(reason, 0) + n
        if table.frame.empty:
            continue
        raw = _prepare(table.frame, table.name, columns, ignore, where)
        given |= {c for c in raw.columns if not c.startswith("_")}
        raw, dropped = _translate_status(raw, table.name, status_map, where)
        raw, unlogged = _unlogged(raw, columns.get("loss") or "loss")
        for why, n in (*dropped.items(), *unlogged.items()):
            left_out[why] = left_out.get(why, 0) + n
        if raw.empty:
            continue
        frames.append(_runs(raw, table.name, where, axes))
    if not frames:
        reasons = ", ".join(f"{n} {why}" for why, n in left_out.items()) or "none read"
        raise where.grid(f"no run to judge: every run was left out ({reasons})")
    frame = pd.concat(frames, ignore_index=True)
    frame = _pick(frame, pick, settings, where)
    frame = _select(frame, axes, given, where)
    frame, combined = _combine(frame, duplicates, where)
    return Results(frame.sort_values(_run_key(frame), ignore_index=True), tuple(t.info for t in raws), combined,
                   tuple(sorted(given)), tuple(sorted(left_out.items())))


def _prepare(raw: pd.DataFrame, path: str, mapping: dict[str, str], ignore: Collection[str],
             where: Where) -> pd.DataFrame:
    """Drop the columns to ignore, map the others to our names, drop columns empty in every row, and check
    that the required ones are there."""
    dropped = set(ignore) | {theirs for ours, theirs in mapping.items() if not theirs}
    if mapping.get("status") and mapping["status"] != "status":
        dropped.add("status")  # the grid maps its own column to status (an Optuna state tag): the reader's yields
    for ours, theirs in mapping.items():
        if theirs and theirs not in raw.columns:
            raise where.file(path, f"no column {theirs!r} (mapped to `{ours}` by [results.columns]); its columns: "
                                   f"{', '.join(map(repr, raw.columns))}")
    ignored_ours = {ours for ours, theirs in mapping.items() if not theirs}
    raw = raw.drop(columns=[c for c in raw.columns if c in dropped or (c in ignored_ours and c not in
                                                                        {t for t in mapping.values() if t})])
    raw = raw.rename(columns={theirs: ours for ours, theirs in mapping.items() if theirs})
    if raw.columns.duplicated().any():
        twice = sorted(set(raw.columns[raw.columns.duplicated()]))
        raise where.file(path, f"two columns are named `{twice[0]}` after [results.columns] maps them: map one "
                               "of them to another name, or ignore it (ignore = [...] in [results])")
    raw = raw[[c for c in raw.columns if not _empty(raw[c])]]
    for name in REQUIRED:
        if name not in raw.columns:
            raise where.file(path, f"no column `{name}`; its columns: {', '.join(map(repr, raw.columns))} (map one "
                                   f"in the grid: [results.columns] {name} = \"their name\")")
    if "lr" not in raw.columns and "lr_log2" not in raw.columns:
        raise where.file(path, "no column `lr` or `lr_log2` (map one in the grid: [results.columns] lr = \"...\")")
    return raw


def _empty(column: pd.Series) -> bool:
    """Every value of the column is empty (a blank cell, NaN, None): as if the column were not there."""
    for value in column.tolist():
        if isinstance(value, str):
            if value.strip().lower() not in _EMPTY_WORDS:
                return False
        elif not (value is None or (isinstance(value, float) and math.isnan(value))):
            return False
    return True


def _translate_status(raw: pd.DataFrame, path: str, status_map: dict[str, str],
                      where: Where) -> tuple[pd.DataFrame, dict[str, int]]:
    """Their status values as ours (`[results.status]`). Rows translated to `skip`, and runs a tracking system's
    reader marks as not results (NOT_RESULTS: still running, failed, killed, pruned) unless the map translates
    them, are left out and counted, by reason."""
    if "status" not in raw.columns:
        return raw, {}
    table = {k.strip().lower(): v for k, v in status_map.items()}
    values, reasons = [], []
    for k, value in enumerate(raw["status"].tolist()):
        text = str(value).strip()
        ours = table.get(text.lower(), text)
        if ours in NOT_RESULTS:
            ours, why = SKIP, ours
        else:
            why = "[results.status] skip"
        if ours not in (*STATUSES, SKIP) and table:
            raise where.cell(path, k + 1, "status", f"{text!r} is not one of {', '.join(STATUSES)}, and "
                                                    "[results.status] does not translate it")
        values.append(ours)
        reasons.append(why)
    keep = np.array(values) != SKIP
    out = raw.assign(status=values)[keep]
    out.index = raw.index[keep]  # the rows keep their numbers, for messages
    dropped: dict[str, int] = {}
    for why in np.array(reasons, dtype=object)[~keep]:
        dropped[why] = dropped.get(why, 0) + 1
    return out, dropped


def _unlogged(raw: pd.DataFrame, loss: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Runs a tracking system holds that never logged the loss metric (`_logged`: what each logged): not a
    divergence, but no result either; left out and counted. A run that diverged keeps its status."""
    if "_logged" not in raw.columns:
        return raw, {}
    logged = np.array([loss in json.loads(v) if isinstance(v, str) else True for v in raw["_logged"]])
    keep = logged | (raw["status"].astype(str) == "diverged").to_numpy() if "status" in raw else logged
    out = raw[keep].drop(columns="_logged")
    return out, ({f"logged no `{loss}`": int((~keep).sum())} if (~keep).any() else {})


def _runs(raw: pd.DataFrame, path: str, where: Where, axes: dict[str, tuple[Any, ...]]) -> pd.DataFrame:
    """Parse every value, fill the axes the table leaves out, and judge each run's status."""
    rows = raw.index.to_numpy() + 1
    if "_label" in raw.columns:  # a tracking system's run: messages name it, not only its row
        rows = np.array([f"{n} ({label})" for n, label in zip(rows, raw["_label"])], dtype=object)
        raw = raw.drop(columns="_label")
    raw = raw.reset_index(drop=True)
    out = pd.DataFrame({"_file": path, "_row": rows})
    listed = {AXIS_COLUMNS[k]: v for k, v in axes.items()}
    for column, minimum in (("width", 1), ("tokens", 1), ("seed", 0)):
        out[column] = (_integers(raw, column, path, where, minimum, rows) if column in raw.columns
                       else _filled(column, listed, path, where))
    out["lr_log2"] = _rates(raw, path, where, rows)
    out["parametrization"] = (_choices(raw, "parametrization", PARAMETRIZATIONS, "mup", path, where, rows)
                              if "parametrization" in raw.columns else _filled("parametrization", listed, path, where))
    for column in AXIS_SETTINGS:
        if column in raw.columns:
            out[column] = _integers(raw, column, path, where, 1, rows)
    if "params" in raw.columns:
        params = _numbers(raw, "params", path, where, rows=rows)
        bad = np.flatnonzero(~np.isfinite(params) | (params <= 0))
        if len(bad):
            raise where.cell(path, int(rows[bad[0]]), "params", f"must be a positive parameter count, got "
                                                                 f"{raw['params'].iloc[bad[0]]!r}")
        out["params"] = params
    loss = _numbers(raw, "loss", path, where, empty_is_nan=True, rows=rows)
    status = _choices(raw, "status", STATUSES, "ok", path, where, rows)
    # A run whose loss is not finite diverged, whatever its status says.
    status = np.where(np.isfinite(loss), status, "diverged")
    initial = (_numbers(raw, "initial_loss", path, where, empty_is_nan=True, rows=rows) if "initial_loss" in raw
               else None)
    curves = _curves(raw, path, where, rows)
    judged = []
    for k in range(len(raw)):
        curve = curves[k] if curves else ()
        first = float(initial[k]) if initial is not None and math.isfinite(initial[k]) else (
            curve[0].train_loss if curve else None)
        judged.append(_judge(str(status[k]), float(loss[k]), first, curve))
    out["status"] = judged
    out["loss"] = np.where(np.array(judged) == "diverged", np.nan, loss)
    for extra in raw.columns:
        if extra not in out.columns and extra not in ("lr", "curve", "initial_loss", "status") \
                and not extra.startswith(_CURVE_PREFIX):
            out[extra] = raw[extra].to_numpy()
    out["key"] = [f"{path}:{r}" for r in out["_row"]]
    return out


def _judge(status: str, loss: float, first: float | None, curve: tuple[Checkpoint, ...]) -> str:
    """The run's status as mupcheck judges its own runs (a spike or no progress makes it unstable)."""
    if status != "ok" or not curve:
        return status
    result = RunResult(status="ok", loss=loss, train_loss=curve[-1].train_loss, initial_loss=first, diverged_step=None,
                       steps=curve[-1].step, steps_trained=curve[-1].step, checkpoints=curve, wall_time_s=0.0,
                       tokens_per_s=None, device="imported", data_repeats=math.nan, weight_decay=0.0, tau_steps=None,
                       tau_frac_of_run=None)
    return result.judged_status()


def _parse_number(value: Any) -> float | None:
    """A float from a cell (None when it cannot be one); empty and 'nan'-like cells give NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    text = str(value).strip()
    if text.lower() in _EMPTY_WORDS:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _filled(column: str, listed: dict[str, tuple[Any, ...]], path: str, where: Where) -> Any:
    """A column the table leaves out: the one value the grid lists for it, else what it means (AXIS_DEFAULTS)."""
    values = listed.get(column)
    if values is None:
        return AXIS_DEFAULTS[column]
    if len(values) == 1:
        return values[0]
    raise where.file(path, f"has no `{column}` column, and the grid lists several values for it "
                           f"({', '.join(map(str, values))}): map the column, or list one value to fill it")


def _numbers(raw: pd.DataFrame, column: str, path: str, where: Where, empty_is_nan: bool = False,
             rows: np.ndarray | None = None) -> np.ndarray:
    values = []
    for k, value in enumerate(raw[column].tolist()):
        x = _parse_number(value)
        if x is None or (math.isnan(x) and not empty_is_nan):
            raise where.cell(path, _row(rows, k), column, f"{value!r} is not a number")
        values.append(x)
    return np.array(values, dtype=float)


def _row(rows: np.ndarray | None, k: int) -> int | str:
    """The 1-based row number of the k-th row read (rows left out before keep their numbers), with the run's name
    where a tracking system gave one."""
    if rows is None:
        return k + 1
    return rows[k] if isinstance(rows[k], str) else int(rows[k])


def _integers(raw: pd.DataFrame, column: str, path: str, where: Where, minimum: int,
              rows: np.ndarray | None = None) -> np.ndarray:
    values = _numbers(raw, column, path, where, rows=rows)
    for k, x in enumerate(values):
        if not math.isfinite(x) or x != round(x) or x < minimum or abs(x) > 2**62:
            raise where.cell(path, _row(rows, k), column, f"must be an integer >= {minimum}, got "
                                                          f"{raw[column].iloc[k]!r}")
    return values.astype(np.int64)


def _rates(raw: pd.DataFrame, path: str, where: Where, rows: np.ndarray | None = None) -> np.ndarray:
    """log2 of the learning rate, from `lr_log2` or `lr` (rounded to 1e-6, so that a rate written the same in
    every cell is one rate); both columns must then agree."""
    out = None
    if "lr_log2" in raw.columns:
        out = _numbers(raw, "lr_log2", path, where, rows=rows)
        bad = np.flatnonzero(~np.isfinite(out) | (np.abs(out) > 64))
        if len(bad):
            raise where.cell(path, _row(rows, int(bad[0])), "lr_log2",
                             f"must be a finite log2 of a rate (|x| <= 64), got {raw['lr_log2'].iloc[bad[0]]!r}")
    if "lr" in raw.columns:
        lr = _numbers(raw, "lr", path, where, rows=rows)
        bad = np.flatnonzero(~np.isfinite(lr) | (lr <= 0))
        if len(bad):
            raise where.cell(path, _row(rows, int(bad[0])), "lr", f"must be a positive learning rate, got "
                                                           f"{raw['lr'].iloc[bad[0]]!r}")
        from_lr = np.log2(lr)
        if out is not None:
            off = np.flatnonzero(np.abs(from_lr - out) > 1e-3)
            if len(off):
                raise where.cell(path, _row(rows, int(off[0])), "lr",
                                 f"log2 of {lr[off[0]]:g} is {from_lr[off[0]]:.4f}, but `lr_log2` says "
                                 f"{out[off[0]]:g}; keep one of them")
        out = from_lr if out is None else out
    assert out is not None
    return np.round(out, 6)


def _choices(raw: pd.DataFrame, column: str, allowed: tuple[str, ...], default: str, path: str,
             where: Where, rows: np.ndarray | None = None) -> np.ndarray:
    if column not in raw.columns:
        return np.full(len(raw), default, dtype=object)
    values = [str(v).strip().lower() if str(v).strip() else default for v in raw[column].tolist()]
    for k, v in enumerate(values):
        if v not in allowed:
            hint = (" (a tracking system's own status? translate it in the grid, [results.status] "
                    f"{str(raw[column].iloc[k]).strip()} = \"ok\", or leave the column out: ignore = [\"status\"] "
                    "in [results])" if column == "status" else "")
            raise where.cell(path, _row(rows, k), column, f"{raw[column].iloc[k]!r} is not one of "
                                                          f"{', '.join(allowed)}{hint}")
    return np.array(values, dtype=object)


def _curves(raw: pd.DataFrame, path: str, where: Where,
            rows: np.ndarray | None = None) -> list[tuple[Checkpoint, ...]] | None:
    """Each run's training curve, from `curve` (inline JSON list, or a file) or `train_loss@<step>` columns."""
    stepped = sorted((c for c in raw.columns if c.startswith(_CURVE_PREFIX)), key=lambda c: _step_of(c, path, where))
    if "curve" not in raw.columns and not stepped:
        return None
    out = []
    for k in range(len(raw)):
        if stepped:
            points = [(_step_of(c, path, where), _parse_number(raw[c].iloc[k])) for c in stepped]
            for (_, v), c in zip(points, stepped):
                if v is None:
                    raise where.cell(path, _row(rows, k), c, f"{raw[c].iloc[k]!r} is not a number")
            curve = [(s, float(v)) for s, v in points if v is not None and math.isfinite(v)]
        else:
            curve = _curve_cell(raw["curve"].iloc[k], Path(path).parent, path, _row(rows, k), where)
        if len(curve) < 2:
            curve = []  # one point is a final loss, not a curve: it cannot spike or fail to fall
        out.append(tuple(Checkpoint(step=int(s), tokens=0, train_loss=v, val_loss=v) for s, v in curve))
    return out


def _step_of(column: str, path: str, where: Where) -> int:
    step = _parse_number(column[len(_CURVE_PREFIX):])
    if step is None or not math.isfinite(step) or step < 0:
        raise where.file(path, f"column {column!r}: the part after '@' must be a step number")
    return int(step)


def _curve_cell(value: Any, base: Path, path: str, row: int | str, where: Where) -> list[tuple[int, float]]:
    """An inline JSON list (of losses at evenly spaced steps, or of [step, loss] pairs, as a tracking system's
    metric history gives them), or a file: CSV with `step` and `loss`, or such a JSON list."""
    text = "" if value is None else str(value).strip()
    if not text or text.lower() == "nan":
        return []
    try:
        if text.startswith("["):
            return _curve_points(json.loads(text))
        file = base / text
        if file.suffix.lower() == ".json":
            return _curve_points(json.loads(file.read_text(encoding="utf-8")))
        table = pd.read_csv(file)
        if not {"step", "loss"} <= set(table.columns):
            raise where.cell(path, row, "curve", f"{file} needs columns `step` and `loss`, has "
                                                 f"{', '.join(map(str, table.columns))}")
        return [(int(s), float(v)) for s, v in zip(table["step"], table["loss"])]
    except (OSError, ValueError, TypeError, pd.errors.ParserError) as e:
        raise where.cell(path, row, "curve", f"cannot read the curve {text[:60]!r}: {str(e).splitlines()[0]}") from None


def _curve_points(items: list[Any]) -> list[tuple[int, float]]:
    """[loss, ...] at steps 1, 2, ... or [[step, loss], ...]; raises ValueError or TypeError on anything else."""
    if not isinstance(items, list):
        raise ValueError("not a list")
    if items and all(isinstance(v, list) for v in items):
        if any(len(v) != 2 for v in items):
            raise ValueError("a [step, loss] pair has not two numbers")
        return [(int(step), float(v)) for step, v in items]
    return [(k + 1, float(v)) for k, v in enumerate(items)]


def _pick(frame: pd.DataFrame, pick: dict[str, Any], settings: set[str], where: Where) -> pd.DataFrame:
    """Grid settings that are also result columns: keep the rows that match the grid; a column with several
    values and no grid setting to pick one is an error (two schedules are two experiments)."""
    for column in [c for c in frame.columns if not c.startswith("_") and c not in (*RUN_KEY, *AXIS_SETTINGS, "loss",
                                                                                   "status", "key", "params")]:
        values = frame[column].astype(str).str.strip()
        if column in pick:
            keep = values == str(pick[column])
            if not keep.any():
                raise where.grid(f"no result has {column} = {pick[column]!r} (the results have "
                                 f"{', '.join(sorted(set(values)))})", key=column)
            frame = frame[keep.to_numpy()]
        elif values.nunique() > 1 and column in settings and column not in AXIS_SETTINGS:
            raise where.grid(f"the results have several `{column}` values ({', '.join(sorted(set(values))[:6])}): "
                             f"set {column} = ... in the grid to judge one of them", key=column)
    return frame


def _select(frame: pd.DataFrame, axes: dict[str, tuple[Any, ...]], given: set[str], where: Where) -> pd.DataFrame:
    """Keep the values of the axes the grid lists; each listed value must have rows. (An axis the table left out
    was filled with the one value listed.)"""
    for key, values in axes.items():
        column = AXIS_COLUMNS[key]
        if column not in given and column != "lr_log2":
            continue
        have = set(frame[column].tolist())
        missing = [v for v in values if v not in have]
        if missing:
            raise where.grid(f"{missing[0]!r} is listed, but no result has {column} = {missing[0]!r}", key=key)
        frame = frame[frame[column].isin(values)]
    return frame


def _combine(frame: pd.DataFrame, duplicates: str, where: Where) -> tuple[pd.DataFrame, int]:
    """One row per run. Two rows of one run are an error, unless duplicates = "mean": their mean loss, and the
    worst status (a rerun that diverged makes the rate unreliable)."""
    key = _run_key(frame)
    dup = frame.duplicated(key, keep=False)
    if not dup.any():
        return frame, 0
    for _, group in frame[dup].groupby(key, sort=False):
        differ = _differing(frame, group)
        if differ:  # not reruns: runs that differ in a column the mapping left out (issue 42: four widths)
            column = differ[0]
            values = ", ".join(map(str, sorted(set(group[column].astype(str)))[:6]))
            raise where.grid(f"{len(group)} runs look like reruns of one run, but differ in `{column}` ({values}): "
                             f"map it to the axis it is ([results.columns] width = \"{column}\", say), keep one "
                             f"value of it (a filter, or a grid setting of that name), or, if it does not change a "
                             f"run (a host name), ignore it: ignore = [\"{column}\"] in [results]",
                             key="results.columns")
    if duplicates != "mean":
        first = frame[dup].iloc[0]
        same = frame[dup & (frame[key] == first[key]).all(axis=1)]
        rows = " and ".join(f"{f}: row {r}" for f, r in zip(same["_file"], same["_row"]))
        losses = ", ".join("diverged" if not math.isfinite(x) else f"{x:g}" for x in same["loss"])
        run = " ".join([str(first["parametrization"]), f"width={first['width']}",
                        f"tokens={format_tokens(int(first['tokens']))}",
                        *(f"{a}={first[a]}" for a in AXIS_SETTINGS if a in key),
                        f"lr=2^{first['lr_log2']:g}", f"seed={first['seed']}"])
        raise where.grid(f"{rows} are the same run ({run}) with losses {losses}; set duplicates = \"mean\" in "
                         "[results] to average reruns, or remove one", key="results")
    rank = {s: k for k, s in enumerate(STATUSES)}
    merged = []
    for _, group in frame.groupby(key, sort=False):
        row = group.iloc[0].copy()
        if len(group) > 1:
            row["status"] = max(group["status"], key=lambda s: rank[s])
            finite = group["loss"][np.isfinite(group["loss"])]
            row["loss"] = float(finite.mean()) if row["status"] != "diverged" and len(finite) else math.nan
            row["key"] = " + ".join(group["key"])
        merged.append(row)
    return pd.DataFrame(merged).reset_index(drop=True), int(dup.sum() - len(frame[dup].groupby(key)))


# Columns that differ between true reruns: who and when, and what they measured.
_PER_RUN = ("loss", "status", "key", "curve", "initial_loss", "params", "run_id", "run_name", "run", "number")


def _differing(frame: pd.DataFrame, group: pd.DataFrame) -> list[str]:
    """The columns in which rows of one run key differ, among those that hold settings (few values across the
    table: a metric has nearly one per run); what tells runs apart that the mapping did not."""
    out = []
    for column in frame.columns:
        if column.startswith(("_", "metrics.")) or column in _PER_RUN or column in RUN_KEY or column in AXIS_SETTINGS:
            continue
        values = frame[column].astype(str)
        if values.nunique() <= max(2, len(frame) // 2) and group[column].astype(str).nunique() > 1:
            out.append(column)
    return out


def _run_key(frame: pd.DataFrame) -> list[str]:
    """What identifies a run: its coordinates, with depth and batch size where the table has them (axes)."""
    return [*RUN_KEY[:3], *(a for a in AXIS_SETTINGS if a in frame), *RUN_KEY[3:]]


def derived_axes(frame: pd.DataFrame) -> dict[str, tuple[Any, ...]]:
    """The grid's axes as the results have them (depths and batch sizes where the table has them)."""
    pars = sorted(set(frame["parametrization"]), key=lambda p: PARAMETRIZATIONS.index(p))
    out: dict[str, tuple[Any, ...]] = {
        "widths": tuple(sorted(int(w) for w in set(frame["width"]))),
        "tokens": tuple(sorted(int(t) for t in set(frame["tokens"]))),
        "lr_log2": tuple(sorted(float(x) for x in set(frame["lr_log2"]))),
        "seeds": tuple(sorted(int(s) for s in set(frame["seed"]))),
        "parametrization": tuple(pars)}
    for key, column in (("depths", "depth"), ("batch_sizes", "batch_size")):
        if column in frame:
            out[key] = tuple(sorted(int(v) for v in set(frame[column])))
    return out
