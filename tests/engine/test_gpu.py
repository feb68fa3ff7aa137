"""GPU checks: skipped without CUDA; on a GPU machine run `python -m pytest -m gpu`.

The CPU suite proves the batched engines' arithmetic in float64 (tests/engine/test_fused.py); these
prove the CUDA path itself, where vmap over the fused attention kernels once trained NaN or wrong
models while every CPU test passed: per-step losses of batched members against solo runs of the
`gpu_reference` GPT shape (depth 4, head_dim 32, batch 32 x 256) at widths 128, 256 and 512, a member
leaving the batch, bf16 autocast, eager and compiled, the user-model (vmap) path, the depth rule, SP's
readout multiplier and per-run Adam beta2/epsilon, the canary, and a small grid end to end.

GPU training is not bit-reproducible (nondeterministic kernels), so batched members are compared with
solo runs within a tolerance measured the same way the canary measures it: two solo runs of the same
key, and a margin of RUN_TOLERANCE_FACTOR times their difference (at least TOLERANCE).
`MUPCHECK_GPU_TESTS_DEVICE=cpu` runs these checks on the CPU with a small batch, to check the test code.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from helpers import write_grid
from torch._dynamo.utils import counters

from mupcheck.engine import fused
from mupcheck.engine.data import load_data
from mupcheck.engine.fused import train_fused
from mupcheck.engine.solo import train_run
from mupcheck.plan import plan_grid
from mupcheck.spec import RunConfig, load_grid, run_configs
from mupcheck.store import Store
from mupcheck.sweep.local import run_grid

DEVICE = os.environ.get("MUPCHECK_GPU_TESTS_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")]

STEPS = 12
TOLERANCE = 0.02  # relative, per step: bf16 kernels and nondeterminism, not a wrong model (NaN; 5.33 vs 3.88)
RUN_TOLERANCE_FACTOR = 5.0
REFERENCE = dict(model="gpt", depth=4, head_dim=32, batch_size=32, seq_len=256, parametrization="mup",
                 base_width=128, data="synthetic", eval_tokens=8192, warmup=0.1, schedule="cosine")
if DEVICE == "cpu":  # a check of the test code itself: a batch the CPU trains in seconds
    REFERENCE.update(batch_size=2, seq_len=32, eval_tokens=256)


def _cfg(tmp_path, width: int, lr_log2: float, steps: int = STEPS) -> RunConfig:
    cfg = dataclasses.replace(run_configs(load_grid(write_grid(tmp_path)))[0], **REFERENCE)
    return dataclasses.replace(cfg, width=width, lr_log2=lr_log2, tokens=steps * cfg.batch_size * cfg.seq_len)



def _per_step(step_losses, cfg) -> list[float]:
    return [step_losses[(cfg, s)] for s in range(cfg.steps) if (cfg, s) in step_losses]


def _max_rel_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return math.inf
    return max(abs(x - y) / abs(x) if math.isfinite(x) and math.isfinite(y) else math.inf for x, y in zip(a, b))


def _solo_steps(cfg, data, step_losses) -> list[float]:
    step_losses.clear()
    train_run(cfg, data, DEVICE)
    return _per_step(step_losses, cfg)


@pytest.mark.parametrize("width", [128, 256, 512])
def test_batched_members_follow_their_solo_runs_step_by_step(tmp_path, step_losses, width):
    _check_against_solo(tmp_path, step_losses, width, engine="native")


@pytest.mark.parametrize("width", [128, 256])
def test_user_model_path_follows_solo_runs_on_cuda(tmp_path, step_losses, width, monkeypatch):
    """A user's model has no native batched forward: it trains through vmap(functional_call). Vmap over
    CUDA's fused attention trained NaN (width 128) and wrong models (256); the built-in GPT, sent down
    the user path, has the same `F.scaled_dot_product_attention` call a user's model would."""
    monkeypatch.setattr(fused, "native_forward", lambda template: None)
    _check_against_solo(tmp_path, step_losses, width, engine="vmap")


# The CUDA paths the last wave changed, each equal to solo runs in float64 on CPU (tests/engine/test_fused.py)
# but never run on a GPU: the depth rule (each residual branch multiplied by (depth / base_depth)^-alpha, the
# hidden blocks' Adam epsilon in their own optimizer group), SP's readout with an output multiplier, and Adam's
# beta2 and epsilon set per run.
CHANGED_PATHS = {
    "depth_rule": dict(depth_alpha=1.0, base_depth=2),
    "sp_output_mult": dict(parametrization="sp", output_mult=4.0),  # SP at width 128: rates 2^-13..2^-7
    "adam_beta2_eps": dict(adam_beta2=0.99, adam_eps=1e-6),
}


@pytest.mark.parametrize("path", sorted(CHANGED_PATHS))
def test_the_changed_cuda_paths_follow_their_solo_runs(tmp_path, step_losses, path):
    rates = (-13, -11, -9, -7) if path == "sp_output_mult" else (-11, -9, -7, -5)  # SP diverges at 2^-5 here
    _check_against_solo(tmp_path, step_losses, 128, engine="native", overrides=CHANGED_PATHS[path], rates=rates)


def _check_against_solo(tmp_path, step_losses, width: int, engine: str, compile: bool = False,
                        overrides: dict | None = None, rates: tuple[int, ...] = (-11, -9, -7, -5)) -> None:
    """Four members at `rates` (one leaving the batch half way) against solo runs, step by step."""
    data = load_data("synthetic")
    group = [dataclasses.replace(_cfg(tmp_path, width, lr), **(overrides or {})) for lr in rates]
    group[1] = dataclasses.replace(group[1], tokens=group[1].tokens // 2)  # leaves the batch half way
    results = train_fused(group, data, DEVICE, compile=compile)
    batched = {cfg: _per_step(step_losses, cfg) for cfg in group}
    repeat = _max_rel_diff(_solo_steps(group[0], data, step_losses), _solo_steps(group[0], data, step_losses))
    tolerance = max(TOLERANCE, RUN_TOLERANCE_FACTOR * repeat)
    for cfg, result in zip(group, results):
        solo = _solo_steps(cfg, data, step_losses)
        assert result.fused is not None and result.fused.batched == engine and result.fused.compiled == compile
        assert all(math.isfinite(x) for x in batched[cfg]), (cfg.label(), batched[cfg])
        assert len(batched[cfg]) == len(solo) == cfg.steps, cfg.label()  # no divergence solo does not have
        diff = _max_rel_diff(solo, batched[cfg])
        assert diff <= tolerance, f"{cfg.label()}: batched {batched[cfg]} vs solo {solo} (tolerance {tolerance:.3g})"
        assert result.device.startswith("cuda" if DEVICE == "cuda" else "cpu")
    assert results[1].steps_trained == group[1].steps < results[0].steps_trained


def test_compiled_batched_members_follow_their_solo_runs(tmp_path, step_losses):
    """Compiled, with a member leaving half way: the batch shrinks without a recompile (the member
    axis is dynamic from the first step)."""
    torch._dynamo.reset()
    counters.clear()
    _check_against_solo(tmp_path, step_losses, 128, engine="native", compile=True)
    assert counters["stats"]["unique_graphs"] == 2  # the forward/backward and the update, once each


def test_canary_passes_on_the_real_engine_and_records_its_tolerance(tmp_path):
    group = [_cfg(tmp_path, 256, lr) for lr in (-10, -6)]
    results = train_fused(group, load_data("synthetic"), DEVICE)
    canary = results[0].fused.canary if results[0].fused else None
    assert canary is not None and canary["max_rel_diff"] <= canary["tolerance"]
    assert canary["member"] == group[0].label()  # the lowest learning rate


def test_small_grid_end_to_end_batched_as_solo(tmp_path):
    """A sweep batched by default on CUDA stores what a solo sweep stores: the same statuses (no
    divergence solo does not have) and final losses within GPU run-to-run noise (0.2-3.7% measured)."""
    grid_path = write_grid(tmp_path, extra="")
    text = grid_path.read_text().replace('device = "cpu"', f'device = "{DEVICE}"')
    grid_path.write_text(text)
    grid = dataclasses.replace(load_grid(grid_path), widths=(128, 256), base_width=128, head_dim=32,
                               batch_size=16, seq_len=128, tokens=(40 * 16 * 128, 80 * 16 * 128),
                               lr_log2=(-10.0, -9.0, -8.0, -6.0), parametrization=("mup",))
    fused_store, solo_store = Store(tmp_path / "fused"), Store(tmp_path / "solo")
    assert run_grid(grid, fused_store, fuse=0 if DEVICE == "cuda" else 8, show_progress=False).trained == 16
    assert run_grid(grid, solo_store, fuse=1, show_progress=False).trained == 16
    plan = plan_grid(grid)
    for cfg in plan.configs:
        batched, solo = fused_store.load(plan.key(cfg)), solo_store.load(plan.key(cfg))
        assert batched is not None and solo is not None
        assert batched.result.engine == "fused" and solo.result.engine == "solo"
        assert batched.result.status == solo.result.status, cfg.label()
        if solo.result.status == "ok":
            assert batched.result.loss == pytest.approx(solo.result.loss, rel=0.05), cfg.label()
