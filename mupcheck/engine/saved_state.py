"""A shared run's state on disk, for resuming after a kill: one folder per run, the latest state in it.

    write_state(folder, step, state)         # atomic; the state saved before replaces it
    state = read_state(folder, device, what) # the latest state saved, or None (none, or unreadable: said why)
    remove_state(folder, parents=1)          # the run is done: its folder goes, and empty parents with it

The solo engine's shared runs (`mupcheck.engine.shared`) and the batched groups of shared runs
(`mupcheck.engine.fused`) both keep the state of their trunk where a budget leaves it. A state is only ever
a saving of time: one that cannot be read is reported and the run trains from its start, never losing or
changing a result.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["STATE_VERSION", "read_state", "remove_state", "write_state"]

STATE_VERSION = 1  # raised when the layout of a saved state changes: an older one is then not resumed


def write_state(folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Save `state` (with its version and `step`) as the folder's state before `step`, replacing older ones."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:09d}.pt"
    partial = path.with_suffix(".part")
    torch.save({**state, "version": STATE_VERSION, "step": step}, partial)
    partial.replace(path)  # atomic: a kill never leaves half a state behind
    for old in folder.glob("step-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def read_state(folder: Path, device: str | torch.device, what: str) -> tuple[Path, dict[str, Any]] | None:
    """The latest state saved in `folder` and its path, loaded onto `device`; None when there is none, when it
    is of another version, or when it cannot be read (then one line says so, naming the file; `what` is
    what will be trained from its start instead)."""
    saved = sorted(folder.glob("step-*.pt"))
    if not saved:
        return None
    path = saved[-1]
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        int(state["step"])
    except Exception as e:  # a corrupt or foreign file: start over; it costs time, never a result
        print(f"mupcheck: {path}: cannot resume from this saved state ({type(e).__name__}: {e}); "
              f"training {what} from its start", file=sys.stderr)
        return None
    return (path, state) if state.get("version") == STATE_VERSION else None


def remove_state(folder: Path, parents: int = 1) -> None:
    """Remove a finished run's state folder, and up to `parents` folders above it that are then empty."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in list(folder.parents)[:parents]:
        with contextlib.suppress(OSError):  # a folder other runs still keep their state in stays
            parent.rmdir()
