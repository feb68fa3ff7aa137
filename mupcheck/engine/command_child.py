"""The Python form of a `[trainer]` (`python = "pkg.mod:train"`), in the process of its own that each run gets:

    python -m mupcheck.engine.command_child pkg.mod:train '{"config": {...}, "run_dir": "..."}'

imports the function and calls it as `train(run)`. `run` holds the run's settings as attributes (`run.width`,
`run.lr`, `run.seed`, `run.run_dir`, ..., all of `run.config`) and `run.report(loss=..., step=...,
train_loss=...)`, which prints one metric line as it trains. What `train` returns is the curve if it reported
nothing: a list of losses (one per evaluation) or of metric dicts ({"loss": ..., "step": ...}), or one final loss.
Everything else the function prints is kept in the run's log, as a command's output is. The same protocol as a
command's (mupcheck.engine.command), so a verdict cannot depend on which form ran a script.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["Run", "main"]


class Run:
    """One run, as the trainer function sees it."""

    def __init__(self, config: dict[str, str], run_dir: str):
        self.config = {k: _value(v) for k, v in config.items()}
        self.run_dir = Path(run_dir)
        self.reported = 0
        for key, value in self.config.items():
            setattr(self, key, value)

    def report(self, loss: float, step: int | None = None, tokens: int | None = None,
               train_loss: float | None = None) -> None:
        """One metric line: the validation loss now (non-finite: diverged), with the step it was read at."""
        line: dict[str, Any] = {"loss": float(loss)}
        for key, value in (("step", step), ("tokens", tokens), ("train_loss", train_loss)):
            if value is not None:
                line[key] = value
        print(json.dumps(line), flush=True)
        self.reported += 1


def _value(text: str) -> Any:
    """A placeholder's value as the function wants it: an int, a float, or the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _lines(curve: Any) -> list[dict[str, Any]]:
    if isinstance(curve, (int, float)):
        return [{"loss": float(curve)}]
    out = []
    for k, point in enumerate(curve or []):
        out.append(dict(point) if isinstance(point, dict) else {"loss": float(point), "step": k + 1})
    return out


def main(argv: list[str]) -> int:
    target, payload = argv
    module_name, _, function = target.partition(":")
    sys.path.insert(0, str(Path.cwd()))  # the trainer's folder, where its module lives
    train = getattr(importlib.import_module(module_name), function)
    data = json.loads(payload)
    run = Run(data["config"], data["run_dir"])
    curve = train(run)
    if not run.reported:
        for line in _lines(curve):
            print(json.dumps(line), flush=True)  # NaN and Infinity as JSON-with-NaN writes them: parse_line reads them
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
