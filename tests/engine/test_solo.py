"""One run: it learns, it is deterministic on CPU, and divergence is caught and recorded."""

from __future__ import annotations

import dataclasses
import math

import pytest
from helpers import write_grid

from mupcheck.engine.data import load_data
from mupcheck.engine.solo import train_run
from mupcheck.spec import load_grid, run_configs


@pytest.fixture
def cfg(tmp_path):
    return run_configs(load_grid(write_grid(tmp_path)))[0]


def test_run_learns_and_reports(cfg):
    result = train_run(cfg, load_data("synthetic"))
    assert result.status == "ok" and result.diverged_step is None
    assert result.loss < result.initial_loss - 0.5  # synthetic words are easy to start learning
    assert [c.step for c in result.checkpoints] == [4, 8, 12, 16]
    assert result.loss == result.checkpoints[-1].val_loss
    assert result.tokens_per_s > 0 and result.device.startswith("cpu")
    assert result.data_repeats == pytest.approx(cfg.tokens / len(load_data("synthetic").train))


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_deterministic_on_cpu(cfg, parametrization):
    cfg = dataclasses.replace(cfg, parametrization=parametrization, width=32)
    a, b = (train_run(cfg, load_data("synthetic")) for _ in range(2))
    assert a.checkpoints == b.checkpoints


def test_seed_changes_the_run(cfg):
    a = train_run(cfg, load_data("synthetic"))
    b = train_run(dataclasses.replace(cfg, seed=1), load_data("synthetic"))
    assert a.loss != b.loss


@pytest.mark.parametrize("optimizer,lr_log2", [("adamw", 3.0), ("sgd", 8.0)])
def test_divergence_stops_the_run_and_is_recorded(cfg, optimizer, lr_log2):
    cfg = dataclasses.replace(cfg, optimizer=optimizer, lr_log2=lr_log2, tokens=8192, warmup=0.0)
    result = train_run(cfg, load_data("synthetic"))
    assert result.status == "diverged"
    assert result.loss is None and 0 <= result.diverged_step < cfg.steps
    assert result.steps_trained == result.diverged_step
    assert math.isfinite(result.initial_loss)


@pytest.mark.parametrize("schedule", ["constant", "linear", "wsd"])
def test_every_schedule_trains(cfg, schedule):
    assert train_run(dataclasses.replace(cfg, schedule=schedule), load_data("synthetic")).status == "ok"


def test_mlp_trains(tmp_path):
    cfg = run_configs(load_grid(write_grid(tmp_path, model="mlp")))[0]
    result = train_run(cfg, load_data("synthetic"))
    assert result.status == "ok" and result.loss < result.initial_loss


def test_warmup_in_tokens(cfg):
    assert dataclasses.replace(cfg, warmup_tokens=512).warmup_frac == 512 / cfg.tokens


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_weight_decay_modes(cfg, parametrization):
    from mupcheck.engine.models import build_model
    from mupcheck.engine.optim import build_optimizer, set_step_lr

    cfg = dataclasses.replace(cfg, parametrization=parametrization, width=32, warmup=0.0)
    # timescale: wd is chosen so that 1 / (lr * wd) is tau_frac of the run's steps
    ts = dataclasses.replace(cfg, weight_decay_mode="timescale", tau_frac=0.25)
    assert ts.coupled_weight_decay == pytest.approx(1 / (ts.lr * 0.25 * ts.steps))
    assert ts.tau_steps == pytest.approx(0.25 * ts.steps)
    result = train_run(ts, load_data("synthetic"))
    assert result.tau_frac_of_run == pytest.approx(0.25)
    # independent: every group decays by wd per step, whatever its (muP-scaled, scheduled) lr
    ind = dataclasses.replace(cfg, weight_decay_mode="independent", weight_decay=0.01, schedule="linear")
    opt = build_optimizer(build_model(ind, 256), ind)
    base = [g["lr"] for g in opt.param_groups]
    for step in (0, ind.steps // 2, ind.steps - 1):
        set_step_lr(opt, base, ind, step)
        assert all(g["lr"] * g["weight_decay"] == pytest.approx(0.01) for g in opt.param_groups)
    assert ind.tau_steps == pytest.approx(100.0)
    # coupled: torch's own rule; the timescale is 1 / (lr * wd)
    cp = dataclasses.replace(cfg, weight_decay=0.1)
    assert cp.coupled_weight_decay == 0.1 and cp.tau_steps == pytest.approx(1 / (cp.lr * 0.1))
    assert math.isinf(cfg.tau_steps) and train_run(cfg, load_data("synthetic")).tau_steps is None
