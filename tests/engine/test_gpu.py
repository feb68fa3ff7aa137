"""GPU checks: skipped without CUDA; on a GPU machine run `python -m pytest -m gpu`.

The CPU suite proves the fused engine's arithmetic (float64, tests/test_fused.py); these prove the
CUDA path itself: bf16 autocast, batched attention kernels, the default fuse size, the device name.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import write_grid

from mupcheck.engine.data import load_data
from mupcheck.engine.fused import train_fused
from mupcheck.engine.solo import train_run
from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid, run_configs
from mupcheck.store import Store
from mupcheck.sweep.local import run_grid

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def cuda_grid(tmp_path):
    return write_grid(tmp_path, extra="").read_text().replace('device = "cpu"', 'device = "cuda"')


def test_fused_matches_solo_on_cuda(tmp_path, cuda_grid):
    path = tmp_path / "cuda.toml"
    path.write_text(cuda_grid)
    cfg = run_configs(load_grid(path))[0]
    group = [dataclasses.replace(cfg, lr_log2=lr) for lr in (-8, -6, 3)]
    data = load_data("synthetic")
    for member, fused in zip(group, train_fused(group, data, "cuda")):
        solo = train_run(member, data, "cuda")
        assert fused.status == solo.status and fused.diverged_step == solo.diverged_step
        if solo.status == "ok":
            assert fused.loss == pytest.approx(solo.loss, rel=1e-2)  # bf16 kernels differ slightly
        assert fused.device.startswith("cuda")


def test_sweep_fuses_by_default_on_cuda(tmp_path, cuda_grid):
    path = tmp_path / "cuda.toml"
    path.write_text(cuda_grid)
    grid = load_grid(path)
    store = Store(tmp_path / "store")
    assert run_grid(grid, store, show_progress=False).trained == 8
    plan = plan_grid(grid)
    assert {store.load(plan.key(c)).result.engine for c in plan.configs} == {"fused"}
