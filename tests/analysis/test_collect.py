"""The collector and the optimum of a cell, on made-up curves with known optima."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import LRS, curve_frame, fake_result

from mupcheck.analysis.curves import RESOLUTION, _kinked_parabola, fit_minimum, t_interval, widen
from mupcheck.analysis.optima import find_optima
from mupcheck.collect import MissingRunsError, collect
from mupcheck.frame import records_frame
from mupcheck.plan import plan_grid
from mupcheck.result import RunRecord
from mupcheck.spec import load_grid

CELL = ("mup", 32, 1024)


def frame(curve, seeds=(0,), diverged=(), noise=0.0, lrs=LRS):
    """Rows for one cell: loss = curve(lr) (+ noise); `diverged` holds (lr, seed) pairs."""
    rng = np.random.default_rng(1)
    rows = []
    for lr in lrs:
        for seed in seeds:
            bad = (lr, seed) in diverged
            loss = None if bad else curve(lr) + noise * rng.standard_normal()
            rows.append(dict(parametrization="mup", width=32, tokens=1024, lr_log2=lr, seed=seed,
                             loss=loss, status="diverged" if bad else "ok", data_repeats=0.1))
    return records_frame(rows)


def asymmetric(x0, a_left=0.05, a_right=0.05, c=3.0):
    return lambda x: c + (a_left if x < x0 else a_right) * (x - x0) ** 2


def test_a_coarse_grid_is_read_off_an_interpolant_that_says_how_coarse_it_is():
    """A curvature 4x steeper above the optimum, rates an octave apart: the 3-point parabola of the first version
    missed by -0.18 to -0.34 log2 (issue 13). No estimator can tell that asymmetry from three points; the
    interpolant lands within its stated resolution, and the cell's interval carries that resolution."""
    curve = asymmetric(-7.3, a_left=0.05, a_right=0.2)
    xs = np.array(LRS)
    y = np.array([curve(x) for x in xs])
    i = int(np.argmin(y))
    a, b, _ = np.polyfit(xs[i - 1:i + 2], y[i - 1:i + 2], 2)
    assert -b / (2 * a) - (-7.3) < -0.15  # what the old estimate did
    opt = find_optima(frame(curve))[CELL]
    assert opt.fit.coarse and dict(opt.seed_fits)[0].coarse
    assert opt.resolution == pytest.approx(RESOLUTION * 1.0)
    assert abs(opt.optimum_log2 - (-7.3)) < opt.resolution
    assert any("read off an interpolant" in f and "0.20 log2" in f for f in opt.flags)
    seeds = find_optima(frame(curve, seeds=(0, 1, 2), noise=1e-4))[CELL]
    lo, hi = seeds.interval
    assert lo < -7.3 < hi and hi - lo >= 2 * RESOLUTION * 0.99  # noiseless seeds agree: the resolution remains


def test_the_interpolant_never_lands_on_a_worse_neighbour():
    """The audit's cases (issue 34): the old +-2-octave fit put x0 = 2.49 next to an argmin at 2 whose neighbour
    at 2.5 was 4.6% worse. On half-octave rates with a wall right above, the optimum stays nearer the argmin."""
    xs = np.arange(-1.0, 5.01, 0.5)
    y = 1.0 + 0.02 * (xs - 2.0) ** 2 + 0.1 * np.exp((xs - 2.75) / 0.2)
    y[xs > 3.5] = np.inf  # diverged past the wall
    fit = fit_minimum(xs, y)
    assert fit.found and fit.coarse and abs(fit.x0 - 2.0) < 0.25


def test_refined_rates_get_the_local_fit():
    """A kink (curvature 6x steeper above the optimum) on refined rates: the local kinked parabola recovers
    it; a smooth curve with a wall, the local cubic."""
    refined = tuple(sorted(set(LRS) | {-7.75, -7.5, -7.25, -6.75, -6.5, -6.25}))
    opt = find_optima(frame(asymmetric(-6.9, 0.05, 0.3), lrs=refined))[CELL]
    assert opt.optimum_log2 == pytest.approx(-6.9, abs=0.02) and not opt.fit.coarse and opt.fit.n_points >= 5
    assert not any("an octave apart" in f for f in opt.flags)
    def walled(x):
        return 3.0 + 0.03 * (x + 6.8) ** 2 + 0.3 * math.exp((x + 5.8) / 0.25)  # +10% one octave up

    truth = min(np.arange(-8, -6, 1e-4), key=walled)
    estimate = find_optima(frame(walled, lrs=refined))[CELL].optimum_log2
    assert estimate == pytest.approx(truth, abs=0.05)
    # The fit of the first versions (a kinked parabola over +-2 octaves) lets the wall pull it much further.
    xs = np.array([x for x in refined if abs(x - (-7.0)) <= 2.0])
    old, *_ = _kinked_parabola(xs, np.array([walled(x) for x in xs]), -7.25, -6.75)
    assert abs(old - truth) > 3 * abs(estimate - truth)


def test_edge_optimum_is_censored_not_fitted():
    low = find_optima(frame(lambda x: x + 20))[CELL]
    assert not low.found and low.censored == "low" and low.interval is None
    assert "lower edge" in low.flags[0] and "censored" in low.flags[0] and "toward lower values" in low.flags[0]
    assert "censored" in low.describe()
    high = find_optima(frame(lambda x: -x))[CELL]
    assert high.censored == "high" and "toward higher values" in high.flags[0]


def test_the_optimum_loss_is_a_real_run_never_a_fit_below_every_run():
    opt = find_optima(frame(asymmetric(-7.5)))[CELL]
    assert opt.fit.loss < min(opt.losses)  # the fitted minimum lies between two measured rates ...
    assert opt.loss == min(opt.losses)  # ... regret is measured against a run


def test_loss_beyond_the_measured_rates_is_unknown_not_the_edge_loss():
    opt = find_optima(frame(asymmetric(-7.0)))[CELL]
    assert opt.loss_at(-12.0) == (pytest.approx(math.nan, nan_ok=True), "outside the measured rates")
    assert opt.loss_at(-8.0) == (pytest.approx(3.05), "measured")
    value, source = opt.loss_at(-7.5)
    assert source == "fitted" and value == pytest.approx(3.0125)


def test_diverged_runs_count_as_worse_than_any_finite_loss():
    opt = find_optima(frame(asymmetric(-5.0), diverged={(-5.0, 0), (-4.0, 0)}))[CELL]
    assert opt.best_measured_log2 == -6.0 and math.isinf(opt.losses[LRS.index(-5.0)])
    assert opt.fit.pinned == "high" and not opt.found  # a diverged neighbour: the optimum lies toward it
    assert any("2 run(s) diverged (at lr 2^-5, 2^-4)" in f for f in opt.flags)


def test_one_diverged_seed_makes_the_learning_rate_diverged():
    opt = find_optima(frame(asymmetric(-7.0), seeds=(0, 1), diverged={(-7.0, 1)}))[CELL]
    assert opt.best_measured_log2 != -7.0 and math.isinf(opt.losses[LRS.index(-7.0)])


def test_all_diverged_and_too_few_points():
    everything = {(lr, 0) for lr in LRS}
    opt = find_optima(frame(asymmetric(-7.0), diverged=everything))[CELL]
    assert not opt.found and "every learning rate diverged" in opt.flags[0]
    few = find_optima(frame(asymmetric(-8.5), diverged=everything - {(-9.0, 0), (-8.0, 0)}))[CELL]
    assert not few.found  # the only converged rates are the edge of what converged


def test_seeds_give_a_t_interval_around_the_mean_of_their_optima():
    df = curve_frame(lambda w, t: -7.3, widths=(32,), seeds=(0, 1, 2, 3), seed_sd=0.25, a_left=0.1, a_right=0.3)
    opt = find_optima(df)[("mup", 32, 2**20)]
    per_seed = [x for _, x in opt.seed_optima]
    assert opt.optimum_log2 == pytest.approx(np.mean(per_seed))
    assert opt.interval == pytest.approx(widen(t_interval(per_seed), opt.resolution))
    assert opt.resolution == pytest.approx(RESOLUTION)  # rates an octave apart: the interpolant
    assert opt.interval[0] < opt.optimum_log2 < opt.interval[1]
    assert opt.seed_sd == pytest.approx(np.std(per_seed, ddof=1))
    single = find_optima(curve_frame(lambda w, t: -7.3, widths=(32,), seeds=(0,)))[("mup", 32, 2**20)]
    assert single.interval is None and "no interval" in single.describe()


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_interval_covers_the_true_optimum_as_often_as_it_claims(n_seeds):
    """Simulated cells with a known optimum, the seed noise measured in issue 13 (SD 0.27 log2 per seed)
    and 0.3% loss noise per run, on an asymmetric curve: the 95% interval covers the truth 90-99% of the
    time (the first version's bootstrap covered 72% with 3 seeds, 82% with 5)."""
    trials, covered = 300, 0
    for k in range(trials):
        df = curve_frame(lambda w, t: -7.2, widths=(32,), seeds=tuple(range(n_seeds)), seed_sd=0.27, noise=0.01,
                         a_left=0.06, a_right=0.24, rng_seed=1000 + k)
        opt = find_optima(df)[("mup", 32, 2**20)]
        covered += opt.interval is not None and opt.interval[0] <= -7.2 <= opt.interval[1]
    assert 0.90 <= covered / trials <= 0.99, covered / trials


def test_fit_minimum_handles_nothing_finite():
    fit = fit_minimum([-9, -8, -7], [math.inf, math.inf, math.inf])
    assert math.isnan(fit.x0) and not fit.found


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
    assert len(df) == len(plan.configs) and list(df.columns[:8]) == ["parametrization", "width", "tokens", "depth",
                                                                     "batch_size", "lr_log2", "seed", "loss"]


@pytest.mark.parametrize(("grid", "cell", "seeds"), [("cpu_output_mult_zero", ("sp", 128, 131072, 2, 16), (0, 1)),
                                                     ("cpu_depth", ("mup", 32, 262144, 4, 16), (0,))])
def test_the_audited_seed_cells_stay_by_their_argmin(grid, cell, seeds):
    """Issue 34's audit, on the committed records: the +-2-octave fallback put these seeds' optima on a neighbour
    measured 2.6-4.6% worse than the argmin (x0 = 2.49 next to an argmin at 2; -4.01 next to -4.5). The
    interpolant keeps them within a quarter of the half-octave spacing of the argmin."""
    from pathlib import Path

    from mupcheck.outputs.verdicts import GridSuite
    from mupcheck.spec import Cell
    from mupcheck.store import Store

    root = Path(__file__).resolve().parents[2]
    suite = GridSuite(plan_grid(load_grid(root / "grids" / f"{grid}.toml")), Store(root / "reports" / f"{grid}.store"))
    opt = suite.optima[Cell(*cell)]
    fits, curves = dict(opt.seed_fits), dict(opt.seed_losses)
    for s in seeds:
        y = np.array(curves[s])
        argmin = opt.xs[int(np.argmin(np.where(np.isfinite(y), y, np.inf)))]
        assert fits[s].found and abs(fits[s].x0 - argmin) < 0.125, (s, fits[s].x0, argmin)
