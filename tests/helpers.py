"""Helpers shared by the tests: tiny grid files on synthetic data, so CPU tests take seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mupcheck.result import RunResult

TINY_GRID = """\
name = "tiny"
model = "{model}"
parametrization = ["mup", "sp"]
widths = [16, 32]
base_width = 16
depth = 1
head_dim = 8
tokens = [2048]
batch_size = 4
seq_len = 32
lr_log2 = [-8, -6]
seeds = [0]
data = "synthetic"
eval_tokens = 256
device = "cpu"
{extra}"""


def write_grid(directory: Path, name: str = "tiny.toml", model: str = "gpt", extra: str = "") -> Path:
    """A small valid grid file; `extra` appends TOML lines (later keys override nothing: keep them new)."""
    path = directory / name
    path.write_text(TINY_GRID.format(model=model, extra=extra))
    return path


def fake_result(loss: float | None = 1.0, status: str = "ok", **fields: Any) -> RunResult:
    """A run result with the given loss, for tests that need records without training."""
    base: dict[str, Any] = dict(status=status, loss=loss, train_loss=loss, initial_loss=5.0, diverged_step=None,
                                steps=10, steps_trained=10, checkpoints=(), wall_time_s=1.0, tokens_per_s=1000.0,
                                device="cpu: test", data_repeats=0.01, weight_decay=0.0, tau_steps=None,
                                tau_frac_of_run=None)
    return RunResult(**{**base, **fields})
