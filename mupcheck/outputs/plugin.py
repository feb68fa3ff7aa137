"""pytest plugin: a grid file is a test suite, one item per transfer comparison.

    pytest grids/cpu_width.toml            # train what is missing, then one verdict per item
    pytest grids/ -n 2                     # runs spread over two xdist workers, same verdicts
    pytest grids/ --mupcheck-no-train      # skip (listing the missing runs) instead of training

Registered through the `pytest11` entry point, so it is loaded by every pytest run in an environment
where mupcheck is installed. This module therefore only declares the options and recognises grid
files: `.toml` files inside a folder named `grids` (or named on the command line). The suite itself
(`mupcheck.outputs.suite`: items, training, reports) is imported only when a run involves a grid, so
that a pytest run without grids does not import torch.

Items, with ids that read like the finding: `lint[mup]` (muP lint of the model at every width),
`coord[mup]` (coordinate check, when the grid has a `[coord_check]` table), one transfer item per
comparison, e.g. `grids/cpu_width.toml::width[mup tokens=512K 32->256]`, power-rule items
`rule_tokens[...]`, and `wider[mup tokens=512K]`. Missing runs are trained before the items run, in
every process that runs items (the store's locks spread the runs over xdist workers and keep any run
from being trained twice). Comparisons listed in the grid's `expect_break` are strict xfails. At the
end (on the xdist controller only) `reports/<grid>.md` is written from the store.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mupcheck.spec import BACKENDS
from mupcheck.store import STORE_ENV

__all__ = ["grid_files"]

_SUITE = "mupcheck.outputs.suite"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mupcheck", "mupcheck: muP learning-rate transfer suite")
    group.addoption("--mupcheck-store", metavar="DIR", default=None,
                    help=f"result store (default: ${STORE_ENV}, else ./.mupcheck)")
    group.addoption("--mupcheck-no-train", action="store_true",
                    help="do not train missing runs: skip their items and list what is missing")
    group.addoption("--mupcheck-device", default=None, help="cpu, cuda, cuda:N or auto (default: the grid's)")
    group.addoption("--mupcheck-fuse", type=int, default=None, metavar="N",
                    help="train up to N runs that differ only in lr, seed and tokens as one batched model "
                         "(default: the grid's `fuse`; 1: one at a time)")
    group.addoption("--mupcheck-compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile fused training, or not (default: the grid's `compile`)")
    group.addoption("--mupcheck-backend", choices=BACKENDS, default=None,
                    help="where missing runs train: local processes, or Ray tasks (default: the grid's `backend`)")
    group.addoption("--mupcheck-ray-address", metavar="ADDRESS", default=None,
                    help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster)")
    group.addoption("--mupcheck-gpus", metavar="IDS", default=None,
                    help="a [trainer]'s runs on GPUs: one per GPU (0,1 or all; CUDA_VISIBLE_DEVICES)")
    group.addoption("--mupcheck-reports", metavar="DIR", default=None,
                    help="where reports are written (default: reports/ in the directory pytest is started from)")
    group.addoption("--mupcheck-no-report", action="store_true", help="write no report")
    group.addoption("--mupcheck-inconclusive", choices=["skip", "fail"], default="skip",
                    help="how a check the data cannot decide is shown: skipped with its reason (default), or "
                         "failed, for a non-zero exit")
    group.addoption("--mupcheck-progress", type=float, default=30.0, metavar="SECONDS",
                    help="under xdist, how often the controller reports runs in the store (default 30)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mupcheck: an item collected from a mupcheck grid file")
    # User model factories are imported from the working directory, as in the CLI.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if grid_files(config):
        _suite(config)  # the xdist controller collects nothing, yet reports on the grids it was given


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and (file_path.parent.name == "grids" or parent.session.isinitpath(file_path)):
        return _suite(parent.config).GridFile.from_parent(parent, path=file_path)
    return None


def _suite(config: pytest.Config) -> Any:
    """The suite module, its hooks registered for this session on first use."""
    suite = importlib.import_module(_SUITE)
    suite.activate(config)
    return suite


def grid_files(config: pytest.Config) -> list[Path]:
    """The grid files a command line names: .toml files given, and those in folders named `grids`."""
    found = []
    for arg in config.args:
        path = Path(arg.split("::")[0])
        if path.is_file() and path.suffix == ".toml":
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob("*.toml") if p.parent.name == "grids")
    return found
