"""Shared fixtures: tiny grids on synthetic data, so CPU tests take seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture
def tiny_grid(tmp_path: Path) -> Path:
    return write_grid(tmp_path)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests compare numbers across processes; a fixed thread count keeps CPU reductions identical.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
