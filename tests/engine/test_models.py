"""Proxy models: shapes, muP base shapes, muP == SP at the base width, user factories."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import write_grid
from mup import MuReadout

from mupcheck.engine.models import GPT, build_model, has_base_shapes, width_dims
from mupcheck.engine.optim import build_optimizer
from mupcheck.errors import ModelError
from mupcheck.spec import load_grid, run_configs


def _cfg(tmp_path, model="gpt", **overrides):
    cfg = run_configs(load_grid(write_grid(tmp_path, model=model)))[0]
    return dataclasses.replace(cfg, **overrides)


@pytest.mark.parametrize("model", ["gpt", "mlp"])
def test_output_shape(tmp_path, model):
    cfg = _cfg(tmp_path, model=model, width=32)
    net = build_model(cfg, vocab_size=256)
    idx = torch.randint(0, 256, (3, 20))
    assert net(idx).shape == (3, 20, 256)


@pytest.mark.parametrize("model", ["gpt", "mlp"])
def test_mup_sets_infshapes_from_base_width(tmp_path, model):
    net = build_model(_cfg(tmp_path, model=model, width=64, base_width=16), vocab_size=256)
    assert has_base_shapes(net)
    readout = net.readout
    assert isinstance(readout, MuReadout) and readout.width_mult() == 4.0
    hidden = [p for p in net.parameters() if p.infshape.ninf() == 2]
    assert hidden and all(p.infshape.width_mult() == 4.0 for p in hidden)


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_width_dims_are_the_dims_that_scale_with_width(tmp_path, parametrization):
    # width 32 with vocab 64 and seq_len 32: sizes that equal the width by chance are not width dims
    dims = width_dims(_cfg(tmp_path, width=32, parametrization=parametrization), vocab_size=64)
    assert dims["tok_emb.weight"] == (1,) and dims["pos_emb.weight"] == (1,)  # (vocab, C), (seq_len, C)
    assert dims["blocks.0.attn.qkv.weight"] == (0, 1) and dims["blocks.0.ln1.weight"] == (0,)
    assert dims["readout.weight"] == (1,)  # (vocab, C)
    assert all(dims.values())  # every parameter of the GPT has a width dim


def test_sp_has_plain_readout(tmp_path):
    net = build_model(_cfg(tmp_path, parametrization="sp", width=32), vocab_size=256)
    assert type(net.readout) is torch.nn.Linear
    assert not any(hasattr(p, "infshape") for p in net.parameters())


@pytest.mark.parametrize("model", ["gpt", "mlp"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_mup_equals_sp_at_base_width(tmp_path, model, optimizer):
    """Same seed, width == base_width: same initial function and same update."""
    mup_cfg = _cfg(tmp_path, model=model, width=16, base_width=16, optimizer=optimizer, parametrization="mup")
    sp_cfg = dataclasses.replace(mup_cfg, parametrization="sp")
    nets = [build_model(c, vocab_size=256) for c in (mup_cfg, sp_cfg)]
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    out = [n(idx) for n in nets]
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    opts = [build_optimizer(n, c) for n, c in zip(nets, (mup_cfg, sp_cfg))]
    assert {g["lr"] for o in opts for g in o.param_groups} == {mup_cfg.lr}
    for opt, o in zip(opts, out):
        o.square().mean().backward()
        opt.step()
    torch.testing.assert_close(nets[0](idx), nets[1](idx), rtol=1e-6, atol=1e-6)


def test_mup_optimizer_scales_hidden_lr_with_width(tmp_path):
    cfg = _cfg(tmp_path, width=64, base_width=16)
    opt = build_optimizer(build_model(cfg, 256), cfg)
    assert sorted({g["lr"] for g in opt.param_groups}) == [cfg.lr / 4, cfg.lr]


def test_mup_init_differs_from_sp_only_in_readout(tmp_path):
    cfg = _cfg(tmp_path, width=64, base_width=16)
    mup_net = build_model(cfg, 256)
    sp_net = build_model(dataclasses.replace(cfg, parametrization="sp"), 256)
    for (name, p), (_, q) in zip(mup_net.named_parameters(), sp_net.named_parameters()):
        if name == "readout.weight":
            torch.testing.assert_close(p, q * 2.0)  # mup rescales the readout by sqrt(width_mult)
        else:
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_zero_init_options(tmp_path):
    cfg = _cfg(tmp_path, width=32, readout_zero_init=True, query_zero_init=True)
    net = build_model(cfg, 256)
    assert net.readout.weight.abs().sum() == 0
    assert net.blocks[0].attn.qkv.weight[:32].abs().sum() == 0
    assert net.blocks[0].attn.qkv.weight[32:].abs().sum() > 0


@pytest.fixture
def user_models(user_module):
    """A module with three factories: plain, base shapes preset, and half-set (an error)."""
    user_module("usermodels", """
        import torch
        from torch import nn
        from mup import MuReadout, set_base_shapes

        class Net(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.emb = nn.Embedding(256, width)
                self.hidden = nn.Linear(width, width)
                self.out = MuReadout(width, 256)
            def forward(self, idx):
                return self.out(torch.relu(self.hidden(self.emb(idx))))

        def build(width):
            return Net(width)

        def build_preset(width):
            return set_base_shapes(Net(width), Net(8), delta=Net(12))

        class SPNet(Net):
            def __init__(self, width):
                super().__init__(width)
                self.out = nn.Linear(width, 256)

        def build_sp(width):
            return SPNet(width)

        def build_half(width):
            net = Net(width)
            net.emb.weight.infshape = None
            return net
    """)


def test_user_factory_gets_base_shapes(tmp_path, user_models):
    cfg = _cfg(tmp_path, model="usermodels:build", width=64, base_width=16)
    net = build_model(cfg, 256)
    assert has_base_shapes(net) and net.out.width_mult() == 4.0
    assert net(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 256)


def test_user_factory_preset_base_shapes_are_kept(tmp_path, user_models):
    cfg = _cfg(tmp_path, model="usermodels:build_preset", width=64, base_width=16)
    assert build_model(cfg, 256).out.width_mult() == 8.0  # the factory's base (8), not the grid's (16)


def test_user_sp_arm_is_its_own_factory_or_refused(tmp_path, user_models):
    from mupcheck.errors import GridError

    with pytest.raises(GridError, match="needs its own SP factory"):
        load_grid(write_grid(tmp_path, model="usermodels:build", parametrization='["mup", "sp"]'))
    path = write_grid(tmp_path, model="usermodels:build", parametrization='["mup", "sp"]')
    path.write_text(path.read_text().replace('model = "usermodels:build"',
                                             'model = {mup = "usermodels:build", sp = "usermodels:build_sp"}'))
    grid = load_grid(path)
    sp = next(c for c in run_configs(grid) if c.parametrization == "sp")
    assert (grid.model, grid.sp_model, sp.model) == ("usermodels:build", "usermodels:build_sp", "usermodels:build_sp")
    net = build_model(dataclasses.replace(sp, width=64), 256)
    assert isinstance(net.out, torch.nn.Linear) and not hasattr(net.out.weight, "infshape")  # its own SP, as built


def test_user_factory_half_set_is_an_error(tmp_path, user_models):
    with pytest.raises(ModelError, match="some parameters carry `infshape`"):
        build_model(_cfg(tmp_path, model="usermodels:build_half", width=32), 256)


def test_gpt_attention_scale_matches_sp_at_fixed_head_dim():
    mup_net = GPT(64, 1, 16, 256, 8, parametrization="mup")
    sp_net = GPT(64, 1, 16, 256, 8, parametrization="sp")
    assert mup_net.blocks[0].attn.scale == pytest.approx(sp_net.blocks[0].attn.scale) == 0.25


@pytest.mark.parametrize("model", ["gpt", "mlp"])
@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_the_output_multiplier_scales_the_logits_and_init_std_mult_the_weights(tmp_path, model, parametrization):
    """The swept keys act on the model (issue 27): from one seed, output_mult multiplies the logits (the readout
    has no bias), init_std_mult every matrix and embedding; LayerNorm gains stay 1."""
    cfg = _cfg(tmp_path, model, parametrization=parametrization, width=32)
    x = torch.randint(0, 64, (2, 8))
    plain = build_model(cfg, 64)
    scaled = build_model(dataclasses.replace(cfg, output_mult=4.0), 64)
    torch.testing.assert_close(scaled(x), 4.0 * plain(x), rtol=1e-5, atol=1e-6)
    wide = build_model(dataclasses.replace(cfg, init_std_mult=0.5), 64)
    for (name, p), q in zip(plain.named_parameters(), wide.parameters()):
        torch.testing.assert_close(q, 0.5 * p if p.ndim >= 2 else p, msg=name)


def test_adam_beta2_and_eps_reach_the_optimizer(tmp_path):
    for parametrization in ("mup", "sp"):
        cfg = dataclasses.replace(_cfg(tmp_path, parametrization=parametrization), adam_beta2=0.999, adam_eps=1e-6)
        opt = build_optimizer(build_model(cfg, 64), cfg)
        assert all(g["betas"] == (0.9, 0.999) and g["eps"] == 1e-6 for g in opt.param_groups)
