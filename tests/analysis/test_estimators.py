"""The estimators against curves they do not assume (tests/simulate.py): flat bottoms, gentle left rises,
exponential walls one to two octaves up, kinks, with seed, level and point noise of the committed records'
sizes. A 95% interval must cover the truth in 90-99% of simulated grids, for a cell's optimum, the paired
shift, the width slope and the drift beta; and a comparison must come out wrongly (*transfers* where the
true regret exceeds max_regret, *breaks* where it stays within) in at most 5% of simulated comparisons,
on both sides of the band.

Issue 23's audit found the estimator before this one (an asymmetric parabola over +-2 octaves) biased by
+0.2 log2 by the wall, with 76% coverage on curves like cpu_horizon_cosine's 2M cell. Every simulation
here is seeded, so a test's outcome is fixed for a given code: no flakes, and a change of the estimator
that loses coverage fails it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from simulate import SD_OPTIMUM, Cell, Shape, random_shape, simulate, spaced

from mupcheck.analysis.comparison import Comparison
from mupcheck.analysis.drift import fit_drift, width_law
from mupcheck.analysis.optima import find_optima
from mupcheck.analysis.transfer import judge
from mupcheck.spec import TransferSettings

# Named shapes: the realistic family (a wall 2, 1.5, 1 and 0.75 octaves above the optimum), a flat bottom
# with a cubic left rise, a V-ish left side with a cubic right side, a kink (curvature 6x steeper above
# the optimum, no wall near), and a steep left side with a flat right one.
SHAPES = {
    "wall 2 octaves up": Shape(wall=2.0),
    "wall 1.5 octaves up": Shape(wall=1.5),
    "wall 1 octave up": Shape(wall=1.0),
    "wall 0.75 octave up": Shape(wall=0.75),
    "flat bottom": Shape(a_left=0.006, p_left=3.0, a_right=0.0, wall=1.0),
    "|d|^1.5 left, d^3 right": Shape(p_left=1.5, p_right=3.0, a_right=0.02, wall=1.0),
    "kink 6x": Shape(a_left=0.0167, a_right=0.1, wall=3.0),
    "steep left": Shape(a_left=0.03, a_right=0.012, wall=2.0),
}
COVERAGE = (0.90, 0.99)
TRIALS = 200


def _coverage(hits: list[bool]) -> float:
    rate = float(np.mean(hits))
    assert COVERAGE[0] <= rate <= COVERAGE[1], f"95% intervals covered the truth in {100 * rate:.1f}% of trials"
    return rate


@pytest.mark.parametrize(("name", "n_seeds"), [(name, 5) for name in SHAPES]
                         + [("wall 1 octave up", 3), ("flat bottom", 3), ("kink 6x", 3)])
def test_the_cell_optimum_interval_covers_the_truth(name, n_seeds):
    shape, cell = SHAPES[name], ("mup", 32, 2**20)
    truth = Cell(-5.0, shape).optimum
    rng = np.random.default_rng(100 + n_seeds)
    hits = []
    for _ in range(TRIALS // 2 if n_seeds == 3 else TRIALS):
        optimum = find_optima(simulate(rng, {cell: Cell(-5.0, shape)}, range(n_seeds)))[cell]
        iv = optimum.interval
        hits.append(iv is not None and iv[0] <= truth <= iv[1])
    _coverage(hits)


# Issue 34's targets for sweeps that were never refined: (step log2, coverage at least, |bias| at most). A quarter
# octave apart the local fit takes over (at least 5 rates within 0.75 octave of the argmin).
COARSE_TARGETS = {1.0: (0.80, 0.15), 0.5: (0.85, 0.10), 0.25: (0.85, 0.10)}


@pytest.mark.parametrize("step", sorted(COARSE_TARGETS))
def test_the_cell_optimum_on_unrefined_rates_covers_the_truth_without_bias(step):
    """Rates an octave or half an octave apart, never refined, on curves of random shape (simulate.random_shape:
    the wall 0.6 to 2.5 octaves up, either side the steeper), the true optimum anywhere between two rates, seed
    noise 0.1 to 0.35 log2 and point noise 0.1% to 0.6%. The fallback this replaced (a kinked parabola over
    +-2 octaves) covered 25-60% of octave cells with a bias of +0.3 to +0.6 log2 toward the wall. The bias is
    checked within each third of wall distances too, so that one kind of curve cannot hide behind the others."""
    min_coverage, max_bias = COARSE_TARGETS[step]
    cell = ("mup", 32, 2**20)
    rng = np.random.default_rng(int(700 + 10 * step))
    hits, errors, walls = [], [], []
    for _ in range(300):
        shape, x0 = random_shape(rng), rng.uniform(-7.5, -5.5)
        df = simulate(rng, {cell: Cell(x0, shape)}, range(5), sd_optimum=rng.uniform(0.1, 0.35),
                      sd_point=rng.choice([0.001, 0.003, 0.006]), refine=False, coarse=spaced(step))
        optimum, truth = find_optima(df)[cell], Cell(x0, shape).optimum
        if not optimum.found:
            continue
        iv = optimum.interval
        hits.append(iv is not None and iv[0] <= truth <= iv[1])
        errors.append(optimum.optimum_log2 - truth)
        walls.append(shape.wall)
    assert len(hits) >= 280, f"only {len(hits)} of 300 cells located"
    coverage, bias = float(np.mean(hits)), float(np.mean(errors))
    assert coverage >= min_coverage and abs(bias) <= max_bias, f"coverage {coverage:.2f}, bias {bias:+.3f}"
    thirds = np.digitize(walls, np.quantile(walls, [1 / 3, 2 / 3]))
    for k in range(3):
        part = float(np.mean(np.array(errors)[thirds == k]))
        assert abs(part) <= max_bias, f"bias {part:+.3f} in wall-distance third {k}"


@pytest.mark.parametrize("name", ["wall 2 octaves up", "flat bottom", "kink 6x"])
def test_the_paired_shift_interval_covers_the_truth(name):
    """Along tokens the wall closes in: the reference cell has the named shape, the other a wall 1 octave
    up, and its optimum 0.5 log2 lower."""
    ref, other = Cell(-5.0, SHAPES[name]), Cell(-5.5, Shape(wall=1.0))
    comp = Comparison("tokens", "mup", 32, 2**17, 2**21)
    rng = np.random.default_rng(200)
    hits = []
    for _ in range(TRIALS):
        optima = find_optima(simulate(rng, {comp.cell(comp.ref): ref, comp.cell(comp.other): other}, range(5)))
        iv = judge(comp, optima, TransferSettings()).interval
        hits.append(iv is not None and iv[0] <= other.optimum - ref.optimum <= iv[1])
    _coverage(hits)


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_the_drift_beta_interval_covers_the_truth_while_the_wall_closes_in(beta):
    """Five budgets an octave apart; the wall moves from 2 to 1 octave above the optimum as the budget grows
    (what the H100 runs of issue 23 show), which pulled the old estimator's optimum up more at long budgets.
    beta 0: the optimum stays put, as in those runs."""
    walls = (2.0, 1.75, 1.5, 1.25, 1.0)
    cells = {("mup", 32, 2**17 * 2**k): Cell(-5.0 - beta * k, Shape(wall=w)) for k, w in enumerate(walls)}
    true_beta = -float(np.polyfit(range(5), [c.optimum for c in cells.values()], 1)[0])
    rng = np.random.default_rng(300)
    hits = []
    for _ in range(TRIALS // 2):
        fit = fit_drift(simulate(rng, cells, range(5)), "mup")
        hits.append(fit is not None and fit.interval is not None and fit.interval[0] <= true_beta <= fit.interval[1])
    _coverage(hits)


@pytest.mark.parametrize("slope", [0.0, -1.0])
def test_the_width_slope_interval_covers_the_truth(slope):
    """muP (slope 0) and SP with Adam (slope -1), four widths, the wall 1.5 octaves up."""
    cells = {("mup", w, 2**20): Cell(-5.0 + slope * k, Shape(wall=1.5)) for k, w in enumerate((32, 64, 128, 256))}
    rng = np.random.default_rng(400)
    hits = []
    for _ in range(TRIALS // 2):
        law = width_law(simulate(rng, cells, range(5)), "mup")
        hits.append(law is not None and law.interval is not None and law.interval[0] <= slope <= law.interval[1])
    _coverage(hits)


def _true_shift(shape: Shape, fraction: float) -> float:
    """A shift at `fraction` of the true band's edge on its side (positive: the transferred rate lies below
    the other cell's optimum)."""
    lo, hi = shape.band(0.005)
    return fraction * hi if fraction > 0 else -fraction * lo


def _expected_regret(shape: Shape, delta: float) -> float:
    """The regret of the transferred rate that a seed sees on average: each seed's curve is moved by its own
    N(0, SD_OPTIMUM) shift, and near the wall the regret is convex in it, so the average exceeds the regret
    of the noiseless curve (what the measured regret estimates)."""
    z = np.linspace(-4, 4, 161)
    weights = np.exp(-z**2 / 2)
    regrets = shape.regret(shape.optimum() - delta - SD_OPTIMUM * z)
    return float(np.sum(weights * regrets) / np.sum(weights))


@pytest.mark.parametrize("name", ["wall 1.5 octaves up", "wall 1 octave up", "kink 6x"])
@pytest.mark.parametrize("fraction", [0.5, -0.5, 0.9, -0.9, 1.25, -1.25])
def test_a_wrong_decision_is_rare_on_both_sides_of_the_band(name, fraction):
    """The expected regret of the transferred rate decides what is right: within max_regret, a *breaks* is
    wrong; past it, a *transfers* is. Either may happen in at most 5% of comparisons."""
    shape = SHAPES[name]
    delta = _true_shift(shape, fraction)
    comp = Comparison("width", "mup", 2**20, 32, 256)
    cells = {comp.cell(32): Cell(-5.0, shape), comp.cell(256): Cell(-5.0 + delta, shape)}
    true_regret = _expected_regret(shape, delta)
    wrong = "breaks" if true_regret <= 0.005 else "transfers"
    rng = np.random.default_rng(500)
    outcomes = [judge(comp, find_optima(simulate(rng, cells, range(5))), TransferSettings()).outcome
                for _ in range(TRIALS // 2)]
    rate = outcomes.count(wrong) / len(outcomes)
    assert rate <= 0.05, f"true regret {100 * true_regret:.2f}%: {wrong} in {100 * rate:.0f}% of comparisons"


def test_a_large_shift_is_found_to_break_and_no_shift_never_breaks():
    """The test above cannot pass by being always inconclusive: with five seeds a shift of 1.5 band edges
    breaks most of the time, and a zero shift transfers sometimes and never breaks."""
    shape = Shape(wall=1.5)
    comp = Comparison("width", "mup", 2**20, 32, 256)
    rng = np.random.default_rng(600)
    delta = _true_shift(shape, -1.5)
    far = [judge(comp, find_optima(simulate(rng, {comp.cell(32): Cell(-5.0, shape),
                                                  comp.cell(256): Cell(-5.0 + delta, shape)},
                                                 range(5))), TransferSettings()).outcome for _ in range(50)]
    same = [judge(comp, find_optima(simulate(rng, {comp.cell(32): Cell(-5.0, shape),
                                                   comp.cell(256): Cell(-5.0, shape)}, range(8))),
                  TransferSettings()).outcome for _ in range(50)]
    assert far.count("breaks") >= 15, far
    assert same.count("breaks") == 0 and same.count("transfers") >= 5, same


def test_the_simulator_has_the_shape_it_claims():
    """Flat bottom, wall: regret 0.5% about half an octave either side, and past the wall a loss the engine
    would call diverged."""
    shape = Shape(wall=1.0)
    lo, hi = shape.band(0.005)
    assert 0.3 < -lo < 0.8 and 0.3 < hi < 0.8
    assert shape.regret(shape.optimum() + 2.0) > 2.0
    assert -0.2 < shape.optimum() <= 0.0  # the wall's foot moves the optimum a little down
    assert math.isclose(float(shape.regret(shape.optimum())), 0.0, abs_tol=1e-12)
