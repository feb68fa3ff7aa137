"""The collector on hand-made tables with known optima."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import fake_result

from mupcheck.analysis.collect import MissingRunsError, collect, find_optima, records_frame
from mupcheck.plan import plan_grid
from mupcheck.result import RunRecord
from mupcheck.spec import load_grid

LRS = [-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0]


def frame(curve, seeds=(0,), width=32, tokens=1024, par="mup", diverged=(), noise=0.0):
    """Rows for one cell: loss = curve(lr) (+ per-seed noise); `diverged` holds (lr, seed) pairs."""
    rng = np.random.default_rng(1)
    rows = []
    for lr in LRS:
        for seed in seeds:
            bad = (lr, seed) in diverged
            loss = None if bad else curve(lr) + noise * rng.standard_normal()
            rows.append(dict(parametrization=par, width=width, tokens=tokens, lr_log2=lr, seed=seed,
                             loss=loss, status="diverged" if bad else "ok", data_repeats=0.1))
    return records_frame(rows)


def parabola(x0, a=0.05, c=3.0):
    return lambda x: a * (x - x0) ** 2 + c


def test_parabola_refines_between_grid_points():
    opt = find_optima(frame(parabola(-7.3)))[("mup", 32, 1024)]
    assert opt.grid_lr_log2 == -7.0
    assert opt.lr_log2 == pytest.approx(-7.3)
    assert opt.loss == pytest.approx(3.0)
    assert opt.interval is None and opt.flags == ()
    assert opt.loss_at(-7.3) == pytest.approx(3.0) and opt.loss_at(-8.0) == pytest.approx(3.0 + 0.05 * 0.49)


def test_edge_optimum_is_flagged_with_the_direction_to_extend():
    low = find_optima(frame(lambda x: x + 20))[("mup", 32, 1024)]
    assert low.lr_log2 == -10.0 and "lower edge" in low.flags[0] and "toward lower values" in low.flags[0]
    high = find_optima(frame(lambda x: -x))[("mup", 32, 1024)]
    assert high.lr_log2 == -4.0 and "toward higher values" in high.flags[0]


def test_diverged_runs_count_as_worse_than_any_finite_loss():
    # The finite curve would put the optimum at -5; the run there diverged, so it is -6, not refined.
    opt = find_optima(frame(parabola(-5.0), diverged={(-5.0, 0), (-4.0, 0)}))[("mup", 32, 1024)]
    assert opt.grid_lr_log2 == -6.0 and opt.lr_log2 == -6.0 and opt.parabola is None
    assert math.isinf(opt.losses[LRS.index(-5.0)])
    assert any("2 run(s) diverged (at lr 2^-5, 2^-4)" in f for f in opt.flags)


def test_one_diverged_seed_makes_the_learning_rate_diverged():
    opt = find_optima(frame(parabola(-7.0), seeds=(0, 1), diverged={(-7.0, 1)}))[("mup", 32, 1024)]
    assert opt.grid_lr_log2 != -7.0
    assert math.isinf(opt.losses[LRS.index(-7.0)])


def test_all_diverged_and_too_few_points():
    everything = {(lr, 0) for lr in LRS}
    opt = find_optima(frame(parabola(-7.0), diverged=everything))[("mup", 32, 1024)]
    assert not opt.found and "every learning rate diverged" in opt.flags[0]
    few = find_optima(frame(parabola(-7.0), diverged=everything - {(-9.0, 0), (-8.0, 0)}))[("mup", 32, 1024)]
    assert any("only 2 learning rate(s) converged" in f for f in few.flags)


def test_seeds_give_a_bootstrap_interval_around_the_optimum():
    opt = find_optima(frame(parabola(-7.3, a=0.2), seeds=(0, 1, 2, 3), noise=0.01))[("mup", 32, 1024)]
    lo, hi = opt.interval
    assert lo <= opt.lr_log2 <= hi and hi - lo < 1.0
    assert opt.lr_log2 == pytest.approx(-7.3, abs=0.2)
    again = find_optima(frame(parabola(-7.3, a=0.2), seeds=(0, 1, 2, 3), noise=0.01))[("mup", 32, 1024)]
    assert again.interval == opt.interval  # the bootstrap is seeded: reports are reproducible


def test_cells_are_kept_apart():
    df = records_frame(frame(parabola(-7.0), width=32).to_dict("records")
                       + frame(parabola(-5.5), width=64).to_dict("records"))
    optima = find_optima(df)
    assert set(optima) == {("mup", 32, 1024), ("mup", 64, 1024)}
    assert optima[("mup", 64, 1024)].lr_log2 == pytest.approx(-5.5)


class _FakeStore:
    root = "/fake/store"

    def __init__(self, records):
        self.records = records

    def load(self, key):
        return self.records.get(key)


def test_missing_runs_are_an_error_that_names_them(tmp_path, tiny_grid):
    plan = plan_grid(load_grid(tiny_grid))
    present = {plan.key(c): RunRecord(plan.key(c), plan.key_material(c), fake_result(), {})
               for c in plan.configs[1:]}
    with pytest.raises(MissingRunsError) as info:
        collect(plan, _FakeStore(present))
    assert "1 run(s) missing" in str(info.value)
    assert plan.configs[0].label() in str(info.value) and plan.key(plan.configs[0]) in str(info.value)
    df = collect(plan, _FakeStore({**present, plan.key(plan.configs[0]): present[plan.key(plan.configs[1])]}))
    assert len(df) == len(plan.configs) and list(df.columns[:6]) == ["parametrization", "width", "tokens",
                                                                     "lr_log2", "seed", "loss"]
