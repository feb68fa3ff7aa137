"""Runs logged as TensorBoard event files (`torch.utils.tensorboard.SummaryWriter`, nanoGPT-style trainers,
torchtitan, Lightning): one folder per run under a log folder.

    [results]
    source = "tensorboard"
    logdir = "runs"                          # from the grid file's folder
    pattern = "w{width}_lr{lr}_s{seed}"      # optional: the run folder's name gives settings
    curve = "train/loss"                     # optional: the scalar tag whose history is the training curve
    [results.columns]
    loss = "val/loss"                        # a scalar tag: its last value is the run's loss

A run is a folder that holds event files (`events.out.tfevents.*`). Its row has the fields its name gives
through `pattern` (`{name}` matches anything but `/` and `_`; the rest is matched as written), the
hyperparameters of TensorBoard's hparams plugin (`SummaryWriter.add_hparams` writes them in the run's folder or
a folder inside it), and the last value of every scalar tag, named by its tag. A run whose folder name does not
fit the pattern is left out and counted. One writer with one `add_hparams` call per trial (the PyTorch docs'
example) leaves one folder per call inside the writer's: each is then a run, with that call's hyperparameters
and metrics (the pattern, if any, reads the writer's folder name). A run that never logged the loss tag is left
out and counted, not diverged; a `curve` tag that no run logged is one line. Read with TensorBoard's own event
reader (the `tensorboard` extra: `pip install 'mupcheck[tensorboard]'`); tbparse, a wrapper over it, has had no
release since 2024.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mupcheck.sources.base import RawTable, ResultFile, Source, Where, frame_digest, local_store, missing_extra

__all__ = ["pattern_regex", "raw_tables"]

_EVENTS = "events.out.tfevents"


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """'w{width}_lr{lr}_s{seed}' as a regular expression with a named group per field."""
    parts = re.split(r"\{(\w+)\}", pattern)
    regex = "".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>[^/_]+)" for k, p in enumerate(parts))
    return re.compile(f"^{regex}$")


def raw_tables(source: Source, grid_dir: Path, where: Where) -> list[RawTable]:
    """The log folder's runs as one raw table (see the module docstring)."""
    try:  # an optional extra, imported where it is used (like ray)
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.plugins.hparams import plugin_data_pb2
    except ImportError:
        raise missing_extra(where, "tensorboard", "event files with TensorBoard's reader") from None
    logdir = local_store(source, grid_dir)
    if logdir is None or not logdir.is_dir():
        raise where.grid(f"no log folder {source.path!r} ({logdir}; paths are taken from the grid file's folder)",
                         key="results.logdir")
    try:
        regex = pattern_regex(source.pattern) if source.pattern else None
    except re.error as e:
        raise where.grid(f"{source.pattern!r} is not a pattern of folder names: {e}", key="results.pattern") from None
    folders = sorted({p.parent for p in logdir.rglob(f"{_EVENTS}*")})
    # A folder inside a run's folder is part of that run (SummaryWriter.add_hparams writes its summary there) ...
    tops = [f for f in folders if not any(other in f.parents for other in folders)]
    if not tops:
        raise where.grid(f"no event files ({_EVENTS}.*) under {source.path!r}", key="results.logdir")
    rows, left_out = [], 0
    for top in tops:
        # ... unless it holds several hparams sessions: one writer, one add_hparams call per trial (the PyTorch
        # docs' pattern), each call in a folder of its own with its hparams and metrics. Each is then a run.
        trials = [f for f in _event_folders(top)[1:] if _hparams([f], EventAccumulator, plugin_data_pb2)]
        units = [(t, [t]) for t in trials] if len(trials) >= 2 else [(top, _event_folders(top))]
        for run, parts in units:
            name = run.relative_to(logdir).as_posix()
            row: dict[str, Any] = {"run": name, "_label": f"run {name!r}"}
            if regex is not None:
                match = regex.match(top.name)
                if match is None:
                    left_out += 1
                    continue
                row.update(match.groupdict())
            row.update(_hparams(parts, EventAccumulator, plugin_data_pb2))
            scalars = _scalars(parts, EventAccumulator)
            row.update({tag: values[-1][1] for tag, values in scalars.items() if values})
            row["_logged"] = json.dumps(sorted(scalars))
            if source.curve:
                row["curve"] = json.dumps(scalars.get(source.curve, []), allow_nan=True)
            rows.append(row)
    if source.curve and rows and not any(json.loads(r["curve"]) for r in rows):
        tags = sorted({t for r in rows for t in json.loads(r["_logged"])})
        raise where.grid(f"no run under {source.path!r} logged the scalar tag {source.curve!r} (they logged: "
                         f"{', '.join(map(repr, tags[:12])) or 'no scalar'})", key="results.curve")
    frame = pd.DataFrame(rows)
    info = ResultFile(f"TensorBoard logs {source.path}" + (f" ({source.pattern})" if source.pattern else ""),
                      frame_digest(frame), len(rows) + left_out)
    why = (("folder name does not fit the pattern", left_out),) if left_out else ()
    return [RawTable(f"{source.path} (TensorBoard)", frame, info, why)]


def _accumulator(folder: Path, accumulator: Any) -> Any:
    acc = accumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(folders: list[Path], accumulator: Any) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's event folders (its own first, then those inside it, where add_hparams logs
    its metrics): (step, value), by step (NaN kept: a diverged run). The run's own folder wins a clash."""
    out: dict[str, list[tuple[int, float]]] = {}
    for folder in [*folders[1:], folders[0]]:
        acc = _accumulator(folder, accumulator)
        for tag in acc.Tags().get("scalars", []):
            values = sorted((int(e.step), float(e.value)) for e in acc.Scalars(tag))
            out[tag] = [(s, v if math.isfinite(v) else math.nan) for s, v in values]
    return out


def _event_folders(run: Path) -> list[Path]:
    """The run's folder, then every folder inside it that holds event files."""
    inner = sorted({p.parent for p in run.rglob(f"{_EVENTS}*")} - {run})
    return [run, *inner]


def _hparams(folders: list[Path], accumulator: Any, plugin_data_pb2: Any) -> dict[str, Any]:
    """The hparams plugin's session values in these event folders (add_hparams puts them in a folder inside the
    run's), by name."""
    out: dict[str, Any] = {}
    for folder in folders:
        acc = _accumulator(folder, accumulator)
        try:
            content = acc.PluginTagToContent("hparams")
        except KeyError:  # no hparams in this folder
            content = {}
        for blob in content.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(blob)
            if data.HasField("session_start_info"):
                for name, value in data.session_start_info.hparams.items():
                    kind = value.WhichOneof("kind")
                    out[name] = getattr(value, kind) if kind else None
    return out
