"""What every source of results shares: where a grid's runs come from, a raw table of them, and how a message
names a place in it.

    source = Source(kind="mlflow", tracking_uri="sqlite:///mlflow.db", experiment="sweep")
    RawTable(name, frame, info)    # one row per run, in the source's own column names, with its provenance

The readers (`tables` for files, `mlflow_store`, `tensorboard_logs`, `optuna_study`) each turn their source
into raw tables; `tables` then maps, validates and judges every raw table alike. Plain values only: the
readers sit below the grid's schema (`mupcheck.spec` builds a `Source` from its `[results]` table), which
parses every grid at each pytest collection: this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mupcheck.errors import GridError

if TYPE_CHECKING:  # pandas is imported by the readers, not here: the grid's schema imports this module
    import pandas as pd

__all__ = ["KEY_HELP", "KINDS", "NOT_RESULTS", "OPTIONAL_KEYS", "REQUIRED_KEYS", "RUN_KEY", "SQLITE_TABLES", "RawTable",
           "ResultFile", "Source", "Where", "frame_digest", "local_store", "missing_extra",
           "read_only_copy", "sqlite_kind"]

# The sources a `[results]` table may name (`source = "..."`): files, or a tracking system's own store.
KINDS = ("table", "mlflow", "tensorboard", "optuna")
# What a tracking system's reader writes as a run's status where the run is not a result: left out and counted,
# unless the grid's [results.status] translates it (an Optuna trial whose objective returned NaN is stored as
# FAIL with no value, like one that raised: `failed = "diverged"` says which yours are).
NOT_RESULTS = ("still running", "failed", "killed", "pruned")
# The tables that tell the tracking systems' SQLite databases apart.
SQLITE_TABLES = {"mlflow": frozenset({"experiments", "runs"}), "optuna": frozenset({"studies", "trials"})}
# What makes one run: two rows with the same values of these are two reruns of it.
RUN_KEY = ("parametrization", "width", "tokens", "lr_log2", "seed")
# The `[results]` keys each kind needs, and those it may add (every other source key belongs to another kind).
REQUIRED_KEYS = {"table": ("path",), "mlflow": ("tracking_uri", "experiment"), "tensorboard": ("logdir",),
                 "optuna": ("storage", "study")}
OPTIONAL_KEYS = {"table": (), "mlflow": ("filter", "curve"), "tensorboard": ("pattern", "curve"), "optuna": ()}
# What each of those keys holds, for messages.
KEY_HELP = {
    "path": "the results file (or a glob), from the grid file's folder",
    "tracking_uri": "the MLflow tracking store: an mlruns/ folder, sqlite:///mlflow.db, or a server's URI",
    "experiment": "the MLflow experiment's name",
    "filter": "an MLflow search filter (\"params.optimizer = 'adamw'\")",
    "curve": "the metric (MLflow) or scalar tag (TensorBoard) whose history is the training curve",
    "logdir": "the TensorBoard log folder, one folder of event files per run, from the grid file's folder",
    "pattern": "the run folder's name with {fields} (\"w{width}_lr{lr}_s{seed}\")",
    "storage": "the Optuna storage (sqlite:///study.db, from the grid file's folder)",
    "study": "the Optuna study's name",
}


@dataclass(frozen=True)
class Source:
    """Where a results grid's runs come from, with what each kind needs (REQUIRED_KEYS, OPTIONAL_KEYS: the
    `[results]` keys that set them)."""

    kind: str = "table"
    path: str = ""  # table: a file or a glob; tensorboard: the log folder (one subfolder per run)
    tracking_uri: str = ""  # mlflow: an mlruns/ folder, sqlite:///mlflow.db, or a server's URI
    experiment: str = ""  # mlflow: the experiment's name
    filter: str = ""  # mlflow: a search filter ("params.optimizer = 'adamw'")
    curve: str = ""  # mlflow: the metric, tensorboard: the scalar tag whose history is the training curve
    pattern: str = ""  # tensorboard: the run folder's name, with {fields} (w{width}_lr{lr}_s{seed})
    storage: str = ""  # optuna: the study's storage (sqlite:///study.db)
    study: str = ""  # optuna: the study's name


@dataclass(frozen=True)
class ResultFile:
    """One input that was read, for provenance: a file, or a tracking system's run table."""

    path: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class RawTable:
    """One table of runs as a source gave it: their columns, one row per run; `left_out` counts the runs the
    source knew of but are not results (still running, killed, pruned, failed), by reason."""

    name: str  # what messages call it: a file's path, "sqlite:///mlflow.db experiment 'sweep'"
    frame: pd.DataFrame
    info: ResultFile
    left_out: tuple[tuple[str, int], ...] = field(default=())


class Where:
    """Names a place in the input for messages: the grid's `results` key, a file, a row, a column."""

    def __init__(self, grid_path: str):
        self.grid_path = grid_path

    def grid(self, message: str, key: str = "results") -> GridError:
        return GridError(self.grid_path, key, message)

    def file(self, path: str, message: str) -> GridError:
        return GridError(path, None, message)

    def cell(self, path: str, row: int | str, column: str, message: str) -> GridError:
        return GridError(f"{path}: row {row}", column, message)


def frame_digest(frame: pd.DataFrame) -> str:
    """A short hash of a table's content (a tracking system has no file to hash): its CSV text."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:12]


def missing_extra(where: Where, kind: str, reader: str) -> GridError:
    """The one line for a source whose optional extra is not installed."""
    return where.grid(f"source = \"{kind}\" reads {reader}: pip install 'mupcheck[{kind}]'", key="results.source")


@contextlib.contextmanager
def read_only_copy(path: Path) -> Iterator[Path]:
    """A copy of a SQLite database (with its -wal and -journal files) in a temporary folder, for the tracking
    library to open: MLflow and Optuna create tables, migrate schemas and take locks in any database they open,
    and a store mupcheck was asked to read must keep its bytes (issue 42: an empty file got 71 MLflow tables)."""
    with tempfile.TemporaryDirectory(prefix="mupcheck-read-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        for suffix in ("-wal", "-journal"):
            side = path.with_name(path.name + suffix)
            if side.is_file():
                shutil.copyfile(side, copy.with_name(copy.name + suffix))
        yield copy


def sqlite_kind(path: Path, where: Where, key: str, expected: str) -> None:
    """Check that a SQLite file is the tracking system's store that `expected` ("mlflow" or "optuna") reads: one
    line naming the store and what is wrong where it is not a database, is empty, or is the other system's.
    Read from a read-only copy (`read_only_copy`)."""
    label = {"mlflow": "an MLflow tracking store", "optuna": "an Optuna storage"}
    try:
        with read_only_copy(path) as copy, contextlib.closing(sqlite3.connect(copy)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise where.grid(f"{path} is not {label[expected]}: not a SQLite database ({e})", key=key) from None
    if SQLITE_TABLES[expected] <= tables:
        return
    if not tables:
        raise where.grid(f"{path} is not {label[expected]}: an empty database (no tables)", key=key)
    other = next((k for k, need in SQLITE_TABLES.items() if k != expected and need <= tables), None)
    if other is not None:
        raise where.grid(f"{path} is {label[other]}, not {label[expected]}: set source = \"{other}\" in [results]",
                         key=key)
    raise where.grid(f"{path} is a SQLite database, but not {label[expected]} (its tables: "
                     f"{', '.join(sorted(tables)[:8])})", key=key)


def local_store(source: Source, grid_dir: Path) -> Path | None:
    """The file or folder on this machine that holds a tracking system's runs (an mlruns/ folder, a SQLite file,
    a log folder), with a relative path taken from the grid file's folder, as every path in a grid file is;
    None for a server's URI."""
    given = {"mlflow": source.tracking_uri, "optuna": source.storage, "tensorboard": source.path}[source.kind]
    # Every form the libraries accept for a file: sqlite:///rel.db, sqlite:////abs.db, file:///abs, file:rel
    for scheme in ("sqlite:///", "file://", "file:"):
        if given.startswith(scheme):
            given = given.removeprefix(scheme)
            break
    else:
        if "://" in given:
            return None
    path = Path(given)
    return path if path.is_absolute() else (grid_dir / path).resolve()
