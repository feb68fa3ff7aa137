"""Helpers shared by the tests: tiny grid files on synthetic data, so CPU tests take seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def write_grid(directory: Path, name: str = "tiny.toml", model: str = "gpt", extra: str = "",
               parametrization: str | None = None) -> Path:
    """A small valid grid file; `extra` appends TOML lines (later keys override nothing: keep them new). A
    user model gets the muP arm only unless told otherwise (its SP arm needs an SP factory of its own)."""
    path = directory / name
    if parametrization is None:
        parametrization = '["mup", "sp"]' if ":" not in model else '["mup"]'
    text = TINY_GRID.format(model=model, extra=extra)
    path.write_text(text.replace('parametrization = ["mup", "sp"]', f"parametrization = {parametrization}", 1))
    return path


def two_budget_grid(directory: Path, lr_log2: str) -> Path:
    """A muP-only tiny grid with two token budgets (2048, 4096) and the given `lr_log2` list: enough for a
    drift fit and `mupcheck predict`."""
    path = write_grid(directory, parametrization='["mup"]')
    path.write_text(path.read_text().replace("tokens = [2048]", "tokens = [2048, 4096]")
                    .replace("lr_log2 = [-8, -6]", f"lr_log2 = {lr_log2}"))
    return path


def fake_result(loss: float | None = 1.0, status: str = "ok", **fields: Any) -> RunResult:
    """A run result with the given loss, for tests that need records without training."""
    base: dict[str, Any] = dict(status=status, loss=loss, train_loss=loss, initial_loss=8.0, diverged_step=None,
                                steps=10, steps_trained=10, checkpoints=(), wall_time_s=1.0, tokens_per_s=1000.0,
                                device="cpu: test", data_repeats=0.01, weight_decay=0.0, tau_steps=None,
                                tau_frac_of_run=None)
    return RunResult(**{**base, **fields})


LRS = (-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0)


def curve_frame(optimum: Any, widths: tuple[int, ...] = (32, 256), tokens: tuple[int, ...] = (2**20,),
                seeds: tuple[int, ...] = (0, 1, 2), par: str = "mup", a_left: float = 0.05, a_right: float = 0.05,
                seed_sd: float = 0.0, noise: float = 0.0, lrs: tuple[float, ...] = LRS, rng_seed: int = 1) -> Any:
    """A collected frame of made-up runs: cell (width, tokens) has its loss minimum at optimum(width, tokens),
    moved per seed by N(0, seed_sd) (what a seed does to an optimum), with curvature a_left below it and
    a_right above, and N(0, noise) on every loss."""
    import numpy as np

    from mupcheck.frame import records_frame

    rng = np.random.default_rng(rng_seed)
    rows = []
    for w in widths:
        for t in tokens:
            for s in seeds:
                x0 = optimum(w, t) + seed_sd * rng.standard_normal()
                for lr in lrs:
                    a = a_left if lr < x0 else a_right
                    loss = 3.0 - 0.001 * w / 32 + a * (lr - x0) ** 2 + noise * rng.standard_normal()
                    rows.append(dict(parametrization=par, width=w, tokens=t, lr_log2=lr, seed=s, loss=loss,
                                     status="ok", data_repeats=0.5))
    return records_frame(rows)


def wait_until(condition: Callable[[], bool], alive: Callable[[], bool], poll: float = 0.02) -> bool:
    """Poll `condition` until it holds, or until `alive()` turns False (the process or thread that would make
    it hold has ended); return whether it holds. Never a wall-clock deadline: CI shares a 2-core machine
    that can be many times slower than a developer's (a 120 s wait once failed there)."""
    while not condition():
        if not alive():
            return condition()
        time.sleep(poll)
    return True
