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
other is left out, counted; a RUNNING or WAITING trial is left out, counted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from mupcheck.sources.base import RawTable, ResultFile, Source, Where, frame_digest, local_store, missing_extra

__all__ = ["raw_tables"]


def raw_tables(source: Source, grid_dir: Path, where: Where) -> list[RawTable]:
    """The study's trials as one raw table (see the module docstring)."""
    try:  # an optional extra, imported where it is used (like ray)
        import optuna
    except ImportError:
        raise missing_extra(where, "optuna", "studies with Optuna") from None
    path = local_store(source, grid_dir) if source.storage.startswith("sqlite:///") else None
    if path is not None and not path.is_file():
        raise where.grid(f"no Optuna storage at {source.storage!r} ({path}; paths are taken from the grid file's "
                         "folder)", key="results.storage")
    uri = source.storage if path is None else f"sqlite:///{path}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = optuna.study.get_all_study_names(storage=uri)
        if source.study not in names:
            raise where.grid(f"no study {source.study!r} in {source.storage} (it has: "
                             f"{', '.join(map(repr, sorted(names))) or 'none'})", key="results.study")
        study = optuna.load_study(study_name=source.study, storage=uri)
        trials = study.get_trials(deepcopy=False)
    except (optuna.exceptions.OptunaError, ValueError, RuntimeError) as e:
        raise where.grid(f"Optuna cannot read {source.storage}: {str(e).splitlines()[0]}",
                         key="results.storage") from None
    rows: list[dict[str, Any]] = []
    left_out: dict[str, int] = {}
    for trial in trials:
        row, why = _row(trial, optuna.trial.TrialState)
        if why:
            left_out[why] = left_out.get(why, 0) + 1
        else:
            rows.append(row)
    frame = pd.DataFrame(rows)
    info = ResultFile(f"Optuna {source.storage} study {source.study!r}", frame_digest(frame), len(trials))
    return [RawTable(f"{source.storage} study {source.study!r}", frame, info, tuple(sorted(left_out.items())))]


def _row(trial: Any, states: Any) -> tuple[dict[str, Any], str]:
    """(one trial's row, why it is left out: "" for a result)."""
    row: dict[str, Any] = {"number": trial.number}
    values = trial.values or []
    if len(values) == 1:
        row["value"] = values[0]
    else:
        row.update({f"values_{k}": v for k, v in enumerate(values)})
    row.update({f"params.{k}": v for k, v in trial.params.items()})
    row.update({f"user_attrs.{k}": v for k, v in trial.user_attrs.items()})
    curve = sorted(trial.intermediate_values.items())
    row["curve"] = json.dumps([[int(s), float(v)] for s, v in curve], allow_nan=True) if curve else ""
    state = trial.state
    if state == states.COMPLETE:
        row["status"] = "ok"
        return row, ""
    if state == states.PRUNED:
        return row, "pruned"
    if state == states.FAIL:
        ended = [v for _, v in curve] + list(values)
        if ended and not all(math.isfinite(v) for v in ended if v is not None):
            row["status"] = "diverged"
            return row, ""
        return row, "failed"
    return row, "still running"
