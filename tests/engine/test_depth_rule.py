"""The depth rule of the built-in models (CompleteP's Table 1, arXiv 2505.01618): residual branches scaled by
(depth / base_depth)^-alpha, the hidden parameters' Adam rate by m^(alpha - 1) and epsilon by m^-alpha; and
nothing at all without it, so that every record stored before the rule keeps its key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mupcheck.engine.groups import fusion_groups
from mupcheck.engine.models import build_model
from mupcheck.engine.optim import ADAM_EPS, build_optimizer
from mupcheck.plan import key_config, plan_grid
from mupcheck.spec import load_grid, parse_grid, run_configs
from mupcheck.store import Store

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "d", "widths": [16, 32], "tokens": [8192], "lr_log2": [-8.0], "seq_len": 32, "head_dim": 8,
        "batch_size": 4, "parametrization": ["mup"]}


def _config(model: str = "gpt", depth: int = 8, **extra):
    grid = parse_grid({**BASE, "model": model, "depths": [2, depth], **extra})
    return next(c for c in run_configs(grid) if c.depth == depth and c.width == 32)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_the_rule_scales_branches_rates_and_epsilon_of_the_hidden_blocks(alpha):
    cfg = _config(depth_alpha=alpha)
    model = build_model(cfg, 64)
    m = 8 / 2
    assert all(block.branch_scale == pytest.approx(m**-alpha) for block in model.blocks)
    optimizer = build_optimizer(model, cfg)
    hidden = {id(p) for p in model.hidden_parameters()}
    for group in optimizer.param_groups:
        is_hidden = {id(p) in hidden for p in group["params"]}
        assert len(is_hidden) == 1, "mup split a group across hidden and other parameters"
        width_mult = group["params"][0].infshape.width_mult() if group["params"][0].ndim >= 2 else 1.0
        if is_hidden.pop():
            assert group["lr"] * width_mult == pytest.approx(cfg.lr * m ** (alpha - 1))
            assert group["eps"] == pytest.approx(ADAM_EPS * m**-alpha)
        else:
            assert group["eps"] == ADAM_EPS


def test_a_scaled_branch_adds_that_fraction_of_its_update_to_the_residual_stream():
    cfg = _config(depth_alpha=1.0)
    model = build_model(cfg, 64)
    block = model.blocks[0]
    x = torch.randn(2, 8, 32)
    attn, mlp = block.attn(block.ln1(x)), None
    h = x + attn / 4
    mlp = block.fc_out(torch.nn.functional.gelu(block.fc(block.ln2(h))))
    torch.testing.assert_close(block(x), h + mlp / 4)


def test_the_mlp_gets_the_rule_only_with_residual_branches():
    cfg = _config("mlp", depth_alpha=1.0, mlp_residual=True)
    model = build_model(cfg, 64)
    assert model.residual and model.branch_scale == pytest.approx(0.25)
    assert len(build_optimizer(model, cfg).param_groups) > 1


def test_without_the_rule_nothing_changes_not_even_the_store_keys():
    cfg = _config()
    assert cfg.depth_multiplier == 1.0
    material = key_config(cfg)
    assert "depth_alpha" not in material and "base_depth" not in material and "mlp_residual" not in material
    assert all(b.branch_scale == 1.0 for b in build_model(cfg, 64).blocks)
    assert len(build_optimizer(build_model(cfg, 64), cfg).param_groups) == len(
        build_optimizer(build_model(dataclasses.replace(cfg, depth=2), 64), dataclasses.replace(cfg, depth=2))
        .param_groups)
    # Every committed record of a CPU study is still found under its key.
    plan = plan_grid(load_grid(ROOT / "grids" / "cpu_width.toml"))
    store = Store.open(str(ROOT / "reports" / "cpu_width.store"))
    assert all(store.path(plan.key(c)).exists() for c in plan.configs)


def test_runs_of_different_depths_or_batch_sizes_never_share_a_batched_group():
    base = {k: v for k, v in BASE.items() if k != "batch_size"}
    grid = parse_grid({**base, "model": "gpt", "depths": [2, 4], "batch_sizes": [4, 8], "lr_log2": [-8.0, -7.0]})
    for group in fusion_groups(run_configs(grid), 32):
        assert len({(c.depth, c.batch_size, c.width) for c in group}) == 1
    assert len(fusion_groups(run_configs(grid), 32)) == 2 * 2 * 2  # depths x batch sizes x widths
