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
diverged, a spiking curve unstable); a FAILED or KILLED run whose loss (or curve) ends non-finite diverged,
any other FAILED or KILLED run is not a result and is left out, counted; a RUNNING or SCHEDULED run is left out
and counted. An `mlruns/` folder is MLflow's file store, which MLflow 3 keeps only for reading old runs:
mupcheck opts in to it (`MLFLOW_ALLOW_FILE_STORE`) while it reads.
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

from mupcheck.sources.base import RawTable, ResultFile, Source, Where, frame_digest, local_store, missing_extra

__all__ = ["raw_tables", "tracking_uri"]

_PAGE = 1000  # runs per search request


def tracking_uri(source: Source, grid_dir: Path) -> str:
    """The tracking URI with a store on disk (mlruns/, sqlite:///x.db) taken from the grid file's folder; a
    server's URI as it is."""
    path = local_store(source, grid_dir)
    if path is None:
        return source.tracking_uri
    return f"sqlite:///{path}" if source.tracking_uri.startswith("sqlite:///") else path.as_uri()


def raw_tables(source: Source, grid_dir: Path, where: Where) -> list[RawTable]:
    """The experiment's runs as one raw table (see the module docstring)."""
    try:  # an optional extra, imported where it is used (like ray)
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise missing_extra(where, "mlflow", "runs with MLflow's client") from None
    path = local_store(source, grid_dir)
    if path is not None and not path.exists():  # MLflow would create an empty store and find no experiment
        raise where.grid(f"no MLflow store at {source.tracking_uri!r} ({path}; paths are taken from the grid "
                         "file's folder)", key="results.tracking_uri")
    uri = tracking_uri(source, grid_dir)
    with _quiet(), _file_store_allowed(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
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
                                 f"{str(e).splitlines()[0]}", key="results.filter") from None
            rows: list[dict[str, Any]] = []
            left_out: dict[str, int] = {}
            for run in runs:
                row, why = _row(client, run, source.curve)
                if why:
                    left_out[why] = left_out.get(why, 0) + 1
                else:
                    rows.append(row)
        except MlflowException as e:
            raise where.grid(f"MLflow cannot read {source.tracking_uri}: {str(e).splitlines()[0]}",
                             key="results.tracking_uri") from None
    frame = pd.DataFrame(rows)
    name = f"{source.tracking_uri} experiment {source.experiment!r}"
    info = ResultFile(f"MLflow {name}" + (f" where {source.filter}" if source.filter else ""), frame_digest(frame),
                      len(frame) + sum(left_out.values()))
    return [RawTable(name, frame, info, tuple(sorted(left_out.items())))]


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


def _row(client: Any, run: Any, curve: str) -> tuple[dict[str, Any], str]:
    """(one run's row, why it is left out: "" for a result)."""
    info, data = run.info, run.data
    row: dict[str, Any] = {"run_id": info.run_id, "run_name": info.run_name}
    row.update({f"params.{k}": v for k, v in data.params.items()})
    row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
    row.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
    history = []
    if curve:
        history = [(m.step, m.value) for m in sorted(client.get_metric_history(info.run_id, curve),
                                                     key=lambda m: (m.step, m.timestamp))]
        row["curve"] = json.dumps(history) if history else ""
    state = info.status
    if state in ("RUNNING", "SCHEDULED"):
        return row, "still running"
    ended_badly = any(not math.isfinite(v) for v in data.metrics.values()) or (history and
                                                                                not math.isfinite(history[-1][1]))
    if state == "FINISHED":
        row["status"] = "ok"
    elif ended_badly:
        row["status"] = "diverged"  # a FAILED or KILLED run that a non-finite loss stopped
    else:
        return row, state.lower()  # failed or killed: not a result
    return row, ""
