"""Runs in files: CSV (or TSV), JSONL and Parquet tables, read as raw tables of runs, and written back from a
store's records (`mupcheck export`).

    files.raw_tables(Source(path="sweeps/*.csv"), grid_dir, where)   # one raw table per file, in its own names
    write_results(runs_table(records, SETTINGS_KEYS), "runs.csv")      # a store's runs as such a table

Parquet goes through pandas and pyarrow (the `parquet` extra). A file is read as strings where its format
allows (CSV), so that `mupcheck.sources.tables` parses every value itself and names the row of a bad one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from mupcheck.errors import GridError
from mupcheck.result import RunRecord
from mupcheck.sources.base import RUN_KEY, RawTable, ResultFile, Source, Where

__all__ = ["files_of", "raw_tables", "read_file", "runs_table", "write_results"]


def raw_tables(source: Source, grid_dir: Path, where: Where) -> list[RawTable]:
    """One raw table per file the source's path (or glob) names, with its sha256 and row count."""
    tables = []
    for f in files_of(source.path, grid_dir, where):
        raw = read_file(f, where)
        tables.append(RawTable(str(f), raw, ResultFile(str(f), hashlib.sha256(f.read_bytes()).hexdigest()[:12],
                                                       len(raw))))
    return tables


def files_of(pattern: str, grid_dir: Path, where: Where) -> list[Path]:
    """The files a path or a glob names, from the grid file's folder; none is an error."""
    full = pattern if Path(pattern).is_absolute() else str(grid_dir / pattern)
    if any(c in pattern for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
        if not found:
            raise where.grid(f"no file matches {pattern!r} (globs are taken from the grid file's folder)")
        return found
    path = Path(full)
    if not path.is_file():
        raise where.grid(f"no such results file {pattern!r} (paths are taken from the grid file's folder: {path})")
    return [path]


def read_file(path: Path, where: Where) -> pd.DataFrame:
    """The file as a table of strings and numbers, by its suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            raw = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson"):
            raw = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".parquet":
            raw = pd.read_parquet(path)
        else:
            raise where.file(str(path), "unknown format: results are .csv, .tsv, .jsonl (.ndjson) or .parquet")
    except ImportError as e:
        raise where.file(str(path), f"reading Parquet needs pyarrow: pip install 'mupcheck[parquet]' ({e})") from None
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise where.file(str(path), f"cannot be read as {suffix[1:]}: {str(e).splitlines()[0]}") from None
    if raw.empty:
        raise where.file(str(path), "has no rows")
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def runs_table(records: list[RunRecord], settings: Collection[str]) -> pd.DataFrame:
    """Run records (a store's) as a results table that `read_results` reads back to the same runs: the
    coordinates, the loss, the engine's status, the first loss and the checkpoints' training losses (so
    that a run is judged unstable alike), and every setting (of `settings`) the run was trained with."""
    rows = []
    for record in records:
        config, result = record.config, record.result
        row = {k: config[k] for k in ("parametrization", "width", "tokens", "lr_log2", "seed")}
        row["lr"] = 2.0 ** float(config["lr_log2"])
        row["loss"] = result.loss if result.status != "diverged" else math.nan
        row["status"] = result.status
        row["initial_loss"] = result.initial_loss
        row["curve"] = json.dumps([c.train_loss for c in result.checkpoints])
        row.update({k: v for k, v in config.items() if k not in row and k in settings})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(list(RUN_KEY), ignore_index=True)


def write_results(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a results table by the file's suffix (.csv, .tsv, .jsonl, .parquet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        table.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        table.to_json(path, orient="records", lines=True, double_precision=15)  # pandas keeps 10 digits by default
    elif suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        raise GridError(str(path), None, "unknown format: write .csv, .tsv, .jsonl or .parquet")
    return path
