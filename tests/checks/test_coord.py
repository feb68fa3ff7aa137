"""Coordinate checks and muP lint: the right model passes, SP and broken variants fail with the right message."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import write_grid
from mup import set_base_shapes
from torch import nn

from mupcheck.checks.coord import CoordCheckError, assert_coords_stable, coord_data, fit_slopes, slope_table
from mupcheck.checks.lint import lint
from mupcheck.engine.data import load_data, train_batch
from mupcheck.engine.models import build_model
from mupcheck.engine.optim import build_optimizer
from mupcheck.outputs.cli import main
from mupcheck.spec import CoordCheckConfig, load_grid, run_configs

WIDTHS = [16, 32, 64, 128]


@pytest.fixture(scope="module")
def batch():
    return train_batch(load_data("synthetic"), step=0, seed=0, batch_size=8, seq_len=32)


@pytest.fixture
def cfg(tmp_path):
    # n_heads fixed: head_dim grows with width, so the attention scale matters
    return dataclasses.replace(run_configs(load_grid(write_grid(tmp_path)))[0], n_heads=2, depth=2, lr_log2=-6.0)


def _builder(cfg, mutate=None):
    def build(width, seed):
        model = build_model(dataclasses.replace(cfg, width=width, seed=seed), 256)
        if mutate:
            mutate(model, width)
        return model
    return build


def _run(cfg, batch, mutate=None, optimizer=None):
    make_opt = optimizer or (lambda m: build_optimizer(m, cfg))
    return coord_data(_builder(cfg, mutate), make_opt, WIDTHS, batch, steps=3)


def _failure(df) -> str:
    with pytest.raises(CoordCheckError) as info:
        assert_coords_stable(df)
    return str(info.value)


def test_mup_gpt_passes(cfg, batch):
    worst = assert_coords_stable(_run(cfg, batch))
    assert worst["slope"].max() <= 0.2


def test_mup_mlp_passes(tmp_path, batch):
    cfg = run_configs(load_grid(write_grid(tmp_path, model="mlp")))[0]
    assert_coords_stable(coord_data(_builder(cfg), lambda m: build_optimizer(m, cfg), WIDTHS, batch, steps=3))


def test_sp_twin_fails_with_growing_modules_worst_first(cfg, batch):
    msg = _failure(_run(dataclasses.replace(cfg, parametrization="sp"), batch))
    assert "module output(s) grow with width" in msg and "hint:" in msg
    slopes = [float(s) for s in __import__("re").findall(r"slope ([+-]\d\.\d\d)", msg.split("vanish")[0])]
    assert slopes == sorted(slopes, reverse=True) and slopes[0] > 0.5
    assert "sizes 16: " in msg and "128: " in msg


def _plain_readout(model, width):
    readout = nn.Linear(width, 256, bias=False)
    nn.init.normal_(readout.weight, std=1 / math.sqrt(width))
    readout.weight.infshape = model.readout.weight.infshape  # as if set_base_shapes had seen it
    model.readout = readout


def test_plain_readout_is_caught(cfg, batch):
    msg = _failure(_run(cfg, batch, mutate=_plain_readout))
    assert "<logits> (model output)" in msg  # the logits the loss sees judge the readout
    findings = lint({w: _builder(cfg, _plain_readout)(w, 0) for w in (16, 32)})  # no batch: the static check
    assert [f.code for f in findings] == ["plain-readout"] and "MuReadout" in findings[0].fix


def _sqrt_d_attention(model, width):
    for block in model.blocks:
        block.attn.scale = 1 / math.sqrt(block.attn.head_dim)


def test_sqrt_d_attention_is_caught(cfg, batch):
    msg = _failure(_run(cfg, batch, mutate=_sqrt_d_attention))
    assert "do not shrink with width at initialisation" in msg and "attn.scores" in msg
    assert "1/sqrt(d_head)" in msg


def test_torch_adamw_is_caught(cfg, batch):
    make_opt = lambda m: torch.optim.AdamW(m.parameters(), lr=cfg.lr)  # noqa: E731
    assert "grow with width" in _failure(_run(cfg, batch, optimizer=make_opt))
    model = _builder(cfg)(64, 0)
    findings = lint({16: _builder(cfg)(16, 0), 64: model}, make_opt(model))
    assert [f.code for f in findings] == ["not-mup-optimizer"] and "MuAdamW" in findings[0].fix


def test_base_shapes_never_set_and_deepcopy(cfg):
    sp_cfg = dataclasses.replace(cfg, parametrization="sp")  # the same modules with no base shapes
    findings = lint({w: build_model(dataclasses.replace(sp_cfg, width=w), 256) for w in (16, 32)})
    assert [f.code for f in findings] == ["no-infshape"]  # the first problem hides the rest
    assert "no parameter has `infshape`" in findings[0].message
    copied = copy.deepcopy(_builder(cfg)(32, 0))  # mup 1.0.0 drops p.infshape here
    findings = lint({32: copied})
    assert findings and findings[0].code == "no-infshape" and "deepcopy" in findings[0].fix


def test_base_model_at_target_width_is_caught(cfg):
    models = {}
    for w in (16, 64):
        model = build_model(dataclasses.replace(cfg, width=w, parametrization="sp"), 256)
        models[w] = set_base_shapes(model, None)  # base=None: base shapes = own shapes (mup#41)
    findings = lint(models)
    assert [f.code for f in findings] == ["unit-multipliers"]
    assert "mup#41" in findings[0].message and "base_width" in findings[0].fix


def test_modules_returning_tuples_or_none_are_measured(batch):
    class Pair(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.lin = nn.Linear(width, width)

        def forward(self, x):
            return self.lin(x), None  # a tuple with None inside

    class Nothing(nn.Module):
        def forward(self, x):
            return None

    class Net(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.emb, self.pair, self.nothing = nn.Embedding(256, width), Pair(width), Nothing()
            self.out = nn.Linear(width, 256)

        def forward(self, idx):
            self.nothing(idx)
            h, _ = self.pair(self.emb(idx))
            return self.out(h)

    df = coord_data(lambda w, s: Net(w), lambda m: torch.optim.SGD(m.parameters(), lr=0.1), [16, 32], batch, steps=2)
    assert set(df["module"]) == {"emb", "pair", "pair.lin", "out", "<logits>"}  # "nothing" returned None: skipped
    pair = df[df["module"] == "pair"]
    np.testing.assert_allclose(pair["out"].to_numpy(), df[df["module"] == "pair.lin"]["out"].to_numpy())
    assert set(fit_slopes(df)["module"]) == {"emb", "pair", "pair.lin", "out", "<logits>"}


def test_too_narrow_width_range_is_refused(cfg, batch):
    df = coord_data(_builder(cfg), lambda m: build_optimizer(m, cfg), [16, 32], batch, steps=1)
    with pytest.raises(ValueError, match="at least 8x"):
        assert_coords_stable(df, CoordCheckConfig())


def test_slope_table_lists_every_module(cfg, batch):
    table = slope_table(_run(cfg, batch))
    assert {"readout", "blocks.0.attn.scores"} <= set(table["module"])
    assert list(table.columns[:2]) == ["module", "type"]


# --- CLI --------------------------------------------------------------------------------------

COMMON = ["--widths", "16,32,64,128", "--steps", "3", "--data", "synthetic", "--head-dim", "8",
          "--batch-size", "8", "--seq-len", "32"]


def test_cli_coord_check_passes_for_mup_and_fails_for_sp(tmp_path, capsys):
    assert main(["coord-check", "--model", "gpt", *COMMON, "--plot", str(tmp_path / "mup.png")]) == 0
    out = capsys.readouterr().out
    assert "coordinate check passed" in out and "output (max)" in out
    assert (tmp_path / "mup.png").stat().st_size > 10_000
    assert main(["coord-check", "--model", "gpt", "--parametrization", "sp", *COMMON,
                 "--plot", str(tmp_path / "sp.png")]) == 1
    assert "grow with width" in capsys.readouterr().out


def test_cli_coord_check_user_factory_with_plain_readout(tmp_path, monkeypatch, user_module, capsys):
    user_module("brokenmodel", """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.emb = nn.Embedding(256, width)
                self.hidden = nn.Linear(width, width)
                self.out = nn.Linear(width, 256)   # the mistake: not MuReadout
            def forward(self, idx):
                return self.out(torch.relu(self.hidden(self.emb(idx))))

        def build(width):
            return Net(width)
    """)
    monkeypatch.chdir(tmp_path)
    code = main(["coord-check", "--model", "brokenmodel:build", *COMMON, "--plot", str(tmp_path / "b.png")])
    out = capsys.readouterr().out
    assert code == 1 and "[plain-readout]" in out and "the model's logits keep their size at init" in out


def test_cli_coord_check_bad_model_is_a_clean_error(capsys):
    assert main(["coord-check", "--model", "no_such_module:build", *COMMON]) == 2
    assert "cannot import 'no_such_module'" in capsys.readouterr().err


GPT2_STYLE = """
    import torch
    import torch.nn.functional as F
    from mup import MuReadout
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.heads = heads
            self.c_attn = nn.Linear(width, 3 * width)
            self.c_proj = nn.Linear(width, width)
            self.attn_dropout = nn.Dropout(0.1)   # on the attention probabilities, as GPT-2 has it
            self.resid_dropout = nn.Dropout(0.1)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
            att = (q @ k.transpose(-2, -1)) / k.size(-1)   # muP: 1/d_head
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            return self.resid_dropout(self.c_proj((att @ v).transpose(1, 2).reshape(B, T, C)))

    class Net(nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.wte = nn.Embedding(256, width)
            self.ln = nn.LayerNorm(width)
            self.attn = Attention(width, heads)
            self.head = MuReadout(width, 256)

        def forward(self, idx):
            x = self.wte(idx)
            return self.head(self.ln(x + self.attn(x)))

    def build_fixed_heads(width):
        return Net(width, heads=2)

    def build_growing_heads(width):
        return Net(width, heads=width // 8)
"""


@pytest.mark.parametrize("factory", ["build_fixed_heads", "build_growing_heads"])
def test_attention_probabilities_and_their_dropout_are_not_judged_as_logits(tmp_path, user_module, capsys, factory):
    """Issue 26: microsoft/mutransformers' muP GPT-2 at a fixed head count failed coord-check: its attention
    probability Dropout modules were taken for logits that do not shrink with width. Probabilities keep their
    size by construction; the check now reads that off what a module outputs, not where it sits."""
    user_module("gpt2style", GPT2_STYLE)
    code = main(["coord-check", "--model", f"gpt2style:{factory}", *COMMON, "--plot", str(tmp_path / "g.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "coordinate check passed" in out and "do not shrink" not in out


def test_a_mureadout_whose_weights_were_not_reinitialised_is_told_to_reinitialise(cfg, batch):
    """Issue 26: mutransformers must re-initialise after set_base_shapes; when its factory left that out, the
    lint said 'use mup.MuReadout' of a head that already was one. Simulated here: the built-in GPT's MuReadout
    with its weights grown by the width multiplier, so that its logits keep their size at init."""
    from mup import MuReadout

    def sp_like_init(model, width):
        for m in model.modules():
            if isinstance(m, MuReadout):
                with torch.no_grad():
                    m.weight.mul_(m.weight.infshape.width_mult())

    models = {w: _builder(cfg, sp_like_init)(w, 0) for w in WIDTHS}
    (finding,) = [f for f in lint(models, batch=batch[0]) if f.code == "plain-readout"]
    assert "already a MuReadout" in str(finding) and "re-initialise the model after set_base_shapes" in str(finding)
    assert "use mup.MuReadout" not in str(finding)
