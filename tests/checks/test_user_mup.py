"""Real users' muP code (issue 14): hand-written muP with its own optimizer and `(logits, loss)` outputs, and
mup's example style (zero-initialised readout, log-probabilities), each correct and broken, through the
coordinate check, the lint and a small grid: the correct ones pass, the broken ones and SP fail."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import write_grid

from mupcheck.checks.lint import lint_grid
from mupcheck.engine.data import load_data
from mupcheck.engine.fused import train_fused
from mupcheck.engine.solo import train_run
from mupcheck.errors import GridError, ModelError
from mupcheck.outputs.cli import main
from mupcheck.spec import load_grid, run_configs

# nanoGPT style: the model applies muP itself (1/width_mult on the logits, hidden learning rates / width_mult
# in its own optimizer) and returns (logits, loss); like nanoGPT, without targets it returns the logits of the
# last position only (issue 26: EleutherAI's nanoGPT-mup under coord-check raised "Expected input batch_size
# (8) to match target batch_size (512)"). mupcheck passes targets to a forward that takes them.
HAND_MUP = """
import math
import torch
import torch.nn.functional as F
from torch import nn

BASE = 32


class Net(nn.Module):
    def __init__(self, width, mup=True, output_mult=True, base_width=BASE):
        super().__init__()
        self.mup, self.base_width = mup, base_width
        self.width_mult = width / base_width if mup else 1.0
        self.output_mult = output_mult and mup
        self.emb = nn.Embedding(256, width)
        self.h1 = nn.Linear(width, width, bias=False)
        self.h2 = nn.Linear(width, width, bias=False)
        self.lm_head = nn.Linear(width, 256, bias=False)
        for lin in (self.h1, self.h2, self.lm_head):
            nn.init.normal_(lin.weight, std=1 / math.sqrt(width))

    def forward(self, idx, targets=None):
        x = self.emb(idx)
        x = F.relu(self.h1(x)) / math.sqrt(2)
        x = F.relu(self.h2(x)) / math.sqrt(2)
        if targets is None:
            x = x[:, [-1], :]  # inference: the last position only, as nanoGPT does
        logits = self.lm_head(x)
        if self.output_mult:
            logits = logits / self.width_mult
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.view(-1))
        return logits, loss


def make_optimizer(model, lr, weight_decay, scale_hidden=True):
    hidden = [model.h1.weight, model.h2.weight]
    other = [model.emb.weight, model.lm_head.weight]
    hidden_lr = lr / model.width_mult if (model.mup and scale_hidden) else lr
    groups = [{"params": hidden, "lr": hidden_lr}, {"params": other, "lr": lr}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)


def make_unscaled_optimizer(model, lr, weight_decay):
    return make_optimizer(model, lr, weight_decay, scale_hidden=False)


def build(width):
    return Net(width)


def build_sp(width):
    return Net(width, mup=False)


def build_no_output_mult(width):
    return Net(width, output_mult=False)


def build_other_base(width):
    return Net(width, base_width=16)
"""

# mup's example style: mup's classes, a zero-initialised readout, log-probabilities out.
LOG_PROBS = """
import torch.nn.functional as F
from mup import MuReadout
from torch import nn


class Net(nn.Module):
    def __init__(self, width, plain=False):
        super().__init__()
        self.emb = nn.Embedding(256, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, 256) if plain else MuReadout(width, 256, readout_zero_init=True)

    def forward(self, idx):
        return F.log_softmax(self.out(F.relu(self.hidden(self.emb(idx)))), dim=-1)


def build(width):
    return Net(width)


def build_plain(width):
    return Net(width, plain=True)
"""

WIDTHS = "32,64,128,256"
COMMON = ["--widths", WIDTHS, "--data", "synthetic", "--depth", "1", "--batch-size", "4", "--seq-len", "32"]


@pytest.fixture
def hand(user_module):
    return user_module("handmup", HAND_MUP)


@pytest.fixture
def logprobs(user_module):
    return user_module("logprobs", LOG_PROBS)


def _coord(tmp_path, *args):
    return main(["coord-check", *args, *COMMON, "--plot", str(tmp_path / "c.png")])


def test_hand_written_mup_passes_and_its_broken_variants_fail(hand, tmp_path, capsys):
    assert _coord(tmp_path, "--model", "handmup:build", "--parametrization", "custom",
                  "--optimizer", "handmup:make_optimizer") == 0
    out = capsys.readouterr().out
    assert "coordinate check passed" in out and "plain-readout" not in out  # its nn.Linear head shrinks at init
    assert _coord(tmp_path, "--model", "handmup:build_no_output_mult", "--parametrization", "custom",
                  "--optimizer", "handmup:make_optimizer") == 1
    assert "[plain-readout]" in capsys.readouterr().out  # measured: the head keeps its size at init
    assert _coord(tmp_path, "--model", "handmup:build", "--parametrization", "custom",
                  "--optimizer", "handmup:make_unscaled_optimizer") == 1
    assert "grow with width" in capsys.readouterr().out  # hidden rates not scaled: updates grow
    assert _coord(tmp_path, "--model", "handmup:build_sp", "--parametrization", "sp",
                  "--optimizer", "handmup:make_optimizer") == 1  # the SP control fails


def test_log_probabilities_with_a_zero_readout_pass_and_a_plain_readout_fails(logprobs, tmp_path, capsys):
    assert _coord(tmp_path, "--model", "logprobs:build") == 0
    out = capsys.readouterr().out
    assert "coordinate check passed" in out
    assert _coord(tmp_path, "--model", "logprobs:build_plain") == 1
    assert "do not shrink with width at initialisation" in capsys.readouterr().out


def _hand_grid(tmp_path, extra="", parametrization='["custom", "sp"]'):
    path = write_grid(tmp_path, model="handmup:build", parametrization=parametrization, extra=extra)
    text = path.read_text().replace('model = "handmup:build"', 'model = {custom = "handmup:build", sp = '
                                    '"handmup:build_sp"}\noptimizer = "handmup:make_optimizer"')
    text = text.replace("widths = [16, 32]", "widths = [32, 64]").replace("base_width = 16", "base_width = 32")
    path.write_text(text)
    return path


def test_custom_grid_uses_the_models_own_optimizer_and_sp_factory(hand, tmp_path):
    grid = load_grid(_hand_grid(tmp_path))
    configs = run_configs(grid)
    assert {(c.parametrization, c.model) for c in configs} == {("custom", "handmup:build"), ("sp", "handmup:build_sp")}
    assert all(c.optimizer == "handmup:make_optimizer" for c in configs)
    assert lint_grid(grid, load_data("synthetic")) == []
    result = train_run(configs[0], load_data("synthetic"))
    assert result.status == "ok" and result.loss < result.initial_loss


def test_batched_training_with_the_models_own_optimizer_matches_solo(hand, tmp_path):
    cfg = run_configs(load_grid(_hand_grid(tmp_path)))[0]
    cfg = dataclasses.replace(cfg, tokens=20 * cfg.tokens_per_step, warmup=0.2)
    group = [dataclasses.replace(cfg, lr_log2=lr) for lr in (-8, -6)]
    data = load_data("synthetic")
    fused = train_fused(group, data, dtype=torch.float64)
    for member, result in zip(group, fused):
        solo = train_run(member, data, dtype=torch.float64)
        assert result.fused is not None and result.fused.batched == "vmap"
        assert result.loss == pytest.approx(solo.loss, rel=1e-9)


def test_lint_findings_can_be_silenced_with_a_reason_and_base_width_is_checked(hand, tmp_path):
    path = _hand_grid(tmp_path, parametrization='["custom"]',
                      extra='[lint]\nignore = {"plain-readout" = "logits are divided by width downstream"}\n')
    text = path.read_text().replace('model = {custom = "handmup:build", sp = "handmup:build_sp"}',
                                    'model = "handmup:build_no_output_mult"')
    path.write_text(text)
    findings = lint_grid(load_grid(path), load_data("synthetic"))
    assert [f.code for f in findings] == ["plain-readout"] and not findings[0].fails
    assert "silenced by the grid: logits are divided by width downstream" in str(findings[0])
    other = path.read_text().replace("handmup:build_no_output_mult", "handmup:build_other_base")
    silence = '[lint]\nignore = {"plain-readout" = "logits are divided by width downstream"}\n'
    path.write_text(other.replace(silence, ""))
    (finding,) = lint_grid(load_grid(path), load_data("synthetic"))
    assert finding.code == "base-width-mismatch" and finding.warning and not finding.fails
    assert "`base_width` is 16 but the grid's base_width is 32" in str(finding)


def test_sp_for_a_user_model_needs_its_own_factory(hand, tmp_path):
    with pytest.raises(GridError, match="needs its own SP factory"):
        load_grid(write_grid(tmp_path, model="handmup:build", parametrization='["mup", "sp"]'))
    with pytest.raises(GridError, match="custom.*applies muP itself"):
        load_grid(write_grid(tmp_path, model="gpt", parametrization='["custom"]'))


def test_an_output_that_holds_no_logits_is_one_line(user_module, tmp_path):
    user_module("strout", "import torch\nfrom torch import nn\n\nclass Net(nn.Module):\n"
                          "    def __init__(self, w):\n        super().__init__()\n"
                          "        self.e = nn.Embedding(256, w)\n"
                          "    def forward(self, idx):\n        return 'not logits'\n\n"
                          "def build(w):\n    return Net(w)\n")
    cfg = run_configs(load_grid(write_grid(tmp_path, model="strout:build")))[0]
    with pytest.raises(ModelError, match="model 'strout:build': forward returned str; expected logits"):
        train_run(cfg, load_data("synthetic"))


def test_grid_items_pass_for_the_hand_written_model_and_fail_for_its_broken_variant(pytester, tmp_path):
    (pytester.path / "handmup.py").write_text(HAND_MUP)
    grids = pytester.path / "grids"
    grids.mkdir()
    for name, model in (("good", "handmup:build"), ("broken", "handmup:build_no_output_mult")):
        path = _hand_grid(tmp_path, parametrization='["custom", "sp"]')
        text = path.read_text().replace('{custom = "handmup:build", sp', f'{{custom = "{model}", sp')
        (grids / f"{name}.toml").write_text(text.replace('name = "tiny"', f'name = "{name}"'))
    result = pytester.runpytest("grids/", "-v", "--mupcheck-no-train", "--mupcheck-no-report", "-p",
                                "no:cacheprovider", "-k", "lint")
    out = result.stdout.str()
    assert "grids/good.toml::lint[custom] PASSED" in out
    assert "grids/broken.toml::lint[custom] FAILED" in out and "[plain-readout]" in out


def test_logits_for_fewer_positions_than_the_input_is_one_line_naming_the_shapes(user_module, tmp_path):
    """A forward without `targets` that returns the last position's logits: the shapes and the fix, once."""
    user_module("lastpos", "import torch\nfrom torch import nn\n\nclass Net(nn.Module):\n"
                           "    def __init__(self, w):\n        super().__init__()\n"
                           "        self.e = nn.Embedding(256, w)\n        self.h = nn.Linear(w, 256)\n"
                           "    def forward(self, idx):\n        return self.h(self.e(idx))[:, -1:, :]\n\n"
                           "def build(w):\n    return Net(w)\n")
    cfg = run_configs(load_grid(write_grid(tmp_path, model="lastpos:build")))[0]
    with pytest.raises(ModelError, match=r"model 'lastpos:build': forward returned logits for 1 of 32 positions "
                                         r"\(shape \(4, 1, 256\), expected \(4, 32, vocab\)\)"):
        train_run(cfg, load_data("synthetic"))
    assert _coord(tmp_path, "--model", "lastpos:build") == 2  # the CLI: the same line, exit 2
