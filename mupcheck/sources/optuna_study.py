"""Trials of an Optuna study, read from its storage: teams tune the rate with Optuna at a small width, then ask
whether it transfers.

    [results]
    source = "optuna"
    storage = "sqlite:///study.db"           # a path from the grid file's folder
    study = "lr-width-64"
    [results.columns]
    lr = "params.lr"
    loss = "value"                           # the objective (or user_attrs.val_loss)
    width = "user_attrs.width"

One row per trial, in Optuna's own names: `number`, `value` (a multi-objective study's `values_0`, ...),
`params.<name>`, `user_attrs.<name>`, and the intermediate values reported as the trial ran as its training
curve. Read with `optuna.load_study` (the `optuna` extra: `pip install 'mupcheck[optuna]'`). A trial's state
becomes mupcheck's status: COMPLETE is a result; a PRUNED trial stopped early on purpose, so its value is not
a final loss: left out, counted; a FAIL trial whose value or intermediate values end non-finite diverged, any
other is left out, counted; a RUNNING or WAITING trial is left out, counted. An objective that returns NaN
without reporting intermediate values is stored by Optuna as FAIL with no value, exactly like one that raised:
if yours returns NaN rather than raising, say so with `[results.status] failed = "diverged"`.

The storage is never written: a SQLite file is checked (an Optuna storage, not an MLflow database, an empty
file or no database at all: one line each) and read from a copy, since Optuna creates tables in any database
it opens.
"""

from __future__ import annotations

import contextlib
import json
import math
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


def raw_tables(source: Source, grid_dir: Path, where: Where) -> list[RawTable]:
    """The study's trials as one raw table (see the module docstring)."""
    try:  # an optional extra, imported where it is used (like ray)
        import optuna
    except ImportError:
        raise missing_extra(where, "optuna", "studies with Optuna") from None
    key = "results.storage"
    path = local_store(source, grid_dir) if source.storage.startswith("sqlite:///") else None
    if path is not None and not path.is_file():
        raise where.grid(f"no Optuna storage at {source.storage!r} ({path}; paths are taken from the grid file's "
                         "folder)", key=key)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with contextlib.ExitStack() as stack:
        uri = source.storage
        if path is not None:
            sqlite_kind(path, where, key, "optuna")
            uri = f"sqlite:///{stack.enter_context(read_only_copy(path))}"
        try:
            names = optuna.study.get_all_study_names(storage=uri)
            if source.study not in names:
                raise where.grid(f"no study {source.study!r} in {source.storage} (it has: "
                                 f"{', '.join(map(repr, sorted(names))) or 'none'})", key="results.study")
            trials = optuna.load_study(study_name=source.study, storage=uri).get_trials(deepcopy=False)
        except GridError:
            raise
        except Exception as e:  # noqa: BLE001  # a storage Optuna cannot read: one line, whatever it raised
            text = str(e).strip().splitlines()
            raise where.grid(f"Optuna cannot read {source.storage}: {type(e).__name__}: {text[0] if text else ''}",
                             key=key) from None
    rows = [_row(trial, optuna.trial.TrialState) for trial in trials]
    frame = pd.DataFrame(rows)
    info = ResultFile(f"Optuna {source.storage} study {source.study!r}", frame_digest(frame), len(trials))
    return [RawTable(f"{source.storage} study {source.study!r}", frame, info)]


def _row(trial: Any, states: Any) -> dict[str, Any]:
    """One trial's row: `status` (ok, diverged, or why it is not a result: NOT_RESULTS), `_logged` (what it
    reported: `value` where the objective returned one) and `_label` (how messages name it)."""
    row: dict[str, Any] = {"number": trial.number, "_label": f"trial {trial.number}"}
    values = trial.values or []
    if len(values) == 1:
        row["value"] = values[0]
    else:
        row.update({f"values_{k}": v for k, v in enumerate(values)})
    row.update({f"params.{k}": v for k, v in trial.params.items()})
    row.update({f"user_attrs.{k}": v for k, v in trial.user_attrs.items()})
    row["_logged"] = json.dumps(sorted(k for k in row if k == "value" or k.startswith(("values_", "user_attrs."))))
    curve = sorted(trial.intermediate_values.items())
    row["curve"] = json.dumps([[int(s), float(v)] for s, v in curve], allow_nan=True) if curve else ""
    state = trial.state
    if state == states.COMPLETE:
        row["status"] = "ok"
    elif state == states.PRUNED:
        row["status"] = "pruned"
    elif state == states.FAIL:
        ended = [v for _, v in curve] + list(values)
        # A non-finite value or last intermediate value: diverged. A trial with neither failed: Optuna stores an
        # objective that returned NaN the same way as one that raised, so only the grid can say which.
        row["status"] = "diverged" if ended and not all(math.isfinite(v) for v in ended if v is not None) else "failed"
    else:
        row["status"] = "still running"
    return row
