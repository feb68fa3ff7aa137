"""Runs logged to MLflow, read straight from its tracking store: an `mlruns/` folder, a SQLite (or other SQL)
database, or a tracking server.

    [results]
    source = "mlflow"
    tracking_uri = "sqlite:///mlflow.db"     # or "mlruns", or "http://host:5000"; paths from the grid's folder
    experiment = "lr-sweep"
    filter = "params.optimizer = 'adamw'"     # optional: MLflow's own search syntax
    curve = "train_loss"                      # optional: the metric whose history is the training curve
    [results.columns]
    lr = "params.lr"
    loss = "metrics.val_loss"
    width = "params.n_embd"

One row per run, with MLflow's own column names (`params.<name>`, `metrics.<name>`: the last value logged,
`tags.<name>`, `run_id`), read with MLflow's client (the `mlflow` extra: `pip install 'mupcheck[mlflow]'`).
MLflow's run status becomes mupcheck's: a FINISHED run is a result (judged like any: a non-finite loss is
diverged, a spiking curve unstable, and a run that never logged the loss metric is left out and counted, not
diverged); a FAILED or KILLED run whose loss (or curve) ends non-finite diverged, any other FAILED or KILLED
run is not a result and is left out, counted (`[results.status] failed = ...` translates it); a RUNNING or
SCHEDULED run is left out and counted. Nested runs (`mlflow.start_run(nested=True)`, the study run of Optuna's
or Ray Tune's MLflow callbacks) are read as MLflow's UI shows them: a parent run that lacks a param its
children have only holds them, and is left out and counted.

The store is never written: a SQLite database is checked (an MLflow store, not an Optuna database, an empty
file or no database at all: one line each) and read from a copy, since MLflow creates and migrates tables in
any database it opens; an mlruns/ folder must hold experiments; a server is asked once, with a 10 s timeout
(MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_TIMEOUT in the environment wait longer). An mlruns/
folder is MLflow's file store, which MLflow 3 keeps only for reading old runs: mupcheck opts in to it
(`MLFLOW_ALLOW_FILE_STORE`) while it reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from mupcheck.errors import GridError
from mupcheck.sources.base import (
    RawTable,
    ResultFile,
    Source,
    Where,
    frame_digest,
    local_store,
    missing_extra,
    read_only_copy,
    sqlite_kind,
)

__all__ = ["raw_tables"]

_PAGE = 1000  # runs per search request


def raw_tables(source: Source, grid_dir: Path, where: Where) -> list[RawTable]:
    """The experiment's runs as one raw table (see the module docstring)."""
    try:  # an optional extra, imported where it is used (like ray)
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise missing_extra(where, "mlflow", "runs with MLflow's client") from None
    path = local_store(source, grid_dir)
    key = "results.tracking_uri"
    if path is not None and not path.exists():  # MLflow would create an empty store and find no experiment
        raise where.grid(f"no MLflow store at {source.tracking_uri!r} ({path}; paths are taken from the grid "
                         "file's folder)", key=key)
    with contextlib.ExitStack() as stack:
        if path is not None and path.is_file():
            sqlite_kind(path, where, key, "mlflow")
            uri = f"sqlite:///{stack.enter_context(read_only_copy(path))}"
        elif path is not None:
            _check_file_store(path, source, where)
            uri = path.as_uri()
        else:
            uri = source.tracking_uri
        stack.enter_context(_quiet())
        stack.enter_context(_file_store_allowed(uri))
        stack.enter_context(_client_limits())
        try:
            rows, left_out = _read(MlflowClient(tracking_uri=uri), source, where)
        except GridError:
            raise
        except Exception as e:  # noqa: BLE001  # a store the client cannot read: one line, whatever the library raised
            raise where.grid(f"MLflow cannot read {source.tracking_uri}: {_first_line(e)}{_server_hint(uri)}",
                             key=key) from None
    frame = pd.DataFrame(rows)
    name = f"{source.tracking_uri} experiment {source.experiment!r}"
    info = ResultFile(f"MLflow {name}" + (f" where {source.filter}" if source.filter else ""), frame_digest(frame),
                      len(frame) + sum(left_out.values()))
    return [RawTable(name, frame, info, tuple(sorted(left_out.items())))]


def _read(client: Any, source: Source, where: Where) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(a row per run, (why, how many) of the runs left out here: parent runs that are only containers)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(source.experiment)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise where.grid(f"no experiment {source.experiment!r} in {source.tracking_uri} (it has: "
                         f"{', '.join(map(repr, names)) or 'none'})", key="results.experiment")
    try:
        runs = list(_runs(client, experiment.experiment_id, source.filter))
    except MlflowException as e:
        if not source.filter:
            raise
        raise where.grid(f"MLflow cannot search {source.tracking_uri} with filter {source.filter!r}: "
                         f"{_first_line(e)}", key="results.filter") from None
    containers = _containers(runs)
    rows = [_row(client, run, source.curve) for run in runs if run.info.run_id not in containers]
    if source.curve and rows and not any(row.get("curve") for row in rows):
        logged = sorted({k.removeprefix("metrics.") for row in rows for k in row if k.startswith("metrics.")})
        raise where.grid(f"no run of experiment {source.experiment!r} logged the metric {source.curve!r} (they "
                         f"logged: {', '.join(map(repr, logged)) or 'no metric'})", key="results.curve")
    left_out = {"parent runs that only hold nested runs": len(containers)} if containers else {}
    return rows, left_out


def _containers(runs: list[Any]) -> set[str]:
    """The parent runs (`mlflow.start_run(nested=True)`, a sweep tool's study run) that hold nested runs and
    lack a param their children have: containers, not results. MLflow's UI shows them as a run's group."""
    children: dict[str, list[Any]] = {}
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            children.setdefault(parent, []).append(run)
    out = set()
    for run in runs:
        kids = children.get(run.info.run_id)
        if kids and not set().union(*(k.data.params for k in kids)) <= set(run.data.params):
            out.add(run.info.run_id)
    return out


def _check_file_store(path: Path, source: Source, where: Where) -> None:
    """An mlruns/ folder holds one folder per experiment, each with a meta.yaml; anything else is not a store
    (MLflow would write a default experiment into it)."""
    if not path.is_dir() or not any(path.glob("*/meta.yaml")):
        raise where.grid(f"{path} is not an MLflow file store (an mlruns/ folder holds a folder with a meta.yaml per "
                         f"experiment), from tracking_uri = {source.tracking_uri!r}", key="results.tracking_uri")


@contextlib.contextmanager
def _client_limits() -> Iterator[None]:
    """MLflow's client retries an unreachable server for minutes (7 retries with backoff, 120 s per request: 4 min
    22 s measured in issue 42); a report asks once, quickly. A value the user set in the environment wins."""
    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    unset = [k for k in limits if k not in os.environ]
    for k in unset:
        os.environ[k] = limits[k]
    try:
        yield
    finally:
        for k in unset:
            os.environ.pop(k, None)


def _server_hint(uri: str) -> str:
    if not uri.startswith(("http://", "https://")):
        return ""
    return ("; mupcheck asks a server once, with a 10 s timeout: set MLFLOW_HTTP_REQUEST_MAX_RETRIES and "
            "MLFLOW_HTTP_REQUEST_TIMEOUT to wait longer")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3 refuses its file store (`mlruns/`) unless asked; reading old runs from one is what it is kept for."""
    if not uri.startswith("file://"):
        yield
        return
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow logs its database migrations at INFO, and its SQL store warns of its own use of SQLAlchemy (a
    DeprecationWarning MLflow must fix): neither is what a report's reader asked about."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
            yield
    finally:
        logger.setLevel(level)


def _runs(client: Any, experiment_id: str, filter_string: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=_PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _row(client: Any, run: Any, curve: str) -> dict[str, Any]:
    """One run's row: its params, last metrics and tags in MLflow's names, `status` (ok, diverged, or why it is not
    a result: NOT_RESULTS), `_logged` (the metrics it logged: a run that never logged the loss is not a run that
    diverged) and `_label` (how messages name it)."""
    info, data = run.info, run.data
    row: dict[str, Any] = {"run_id": info.run_id, "run_name": info.run_name,
                           "_label": f"run {info.run_name!r} ({info.run_id[:8]})",
                           "_logged": json.dumps(sorted(f"metrics.{k}" for k in data.metrics))}
    row.update({f"params.{k}": v for k, v in data.params.items()})
    row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
    row.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
    history = []
    if curve:
        history = [(m.step, m.value) for m in sorted(client.get_metric_history(info.run_id, curve),
                                                     key=lambda m: (m.step, m.timestamp))]
        row["curve"] = json.dumps(history) if history else ""
    state = info.status
    ended_badly = any(not math.isfinite(v) for v in data.metrics.values()) or (history and
                                                                                not math.isfinite(history[-1][1]))
    if state == "FINISHED":
        row["status"] = "ok"
    elif state in ("RUNNING", "SCHEDULED"):
        row["status"] = "still running"
    elif ended_badly:
        row["status"] = "diverged"  # a FAILED or KILLED run that a non-finite loss stopped
    else:
        row["status"] = state.lower()  # failed or killed: not a result, unless [results.status] says otherwise
    return row
