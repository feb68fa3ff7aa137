"""The stability boundary and margin, the run status 'unstable', and the stability verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import fake_result
from simulate import Cell, Shape, simulate

from mupcheck.analysis.comparison import Comparison
from mupcheck.analysis.curves import seed_boundary
from mupcheck.analysis.drift import margin_law
from mupcheck.analysis.optima import find_optima
from mupcheck.analysis.stability import judge_stability
from mupcheck.frame import records_frame
from mupcheck.result import Checkpoint
from mupcheck.spec import StabilitySettings

XS = np.arange(-9.0, -2.9, 0.5)


def test_the_boundary_is_where_the_loss_first_rises_past_the_threshold():
    """An exponential wall: the log-linear crossing lands within a few hundredths of the true one."""
    shape = Shape(wall=1.5, a_right=0.0)
    ys = 2.0 * shape(XS + 6.0)  # optimum near -6
    b = seed_boundary(XS, ys, np.ones_like(XS, dtype=bool), rise=0.10)
    grid = np.arange(-6.0, -3.0, 1e-4)
    truth = grid[np.argmax(shape(grid + 6.0) / shape(shape.optimum()) > 1.10)]
    assert not b.censored and b.x == pytest.approx(truth, abs=0.05) and b.first_bad > b.x


def test_a_diverged_or_unstable_rate_ends_the_usable_range():
    ys = np.array([3.0, 2.5, 2.2, 2.1, 2.15, 2.2, math.inf, math.inf, math.inf, math.inf, math.inf, math.inf, 9.0])
    b = seed_boundary(XS, ys, np.isfinite(ys), rise=0.10)
    assert b.x == pytest.approx((XS[5] + XS[6]) / 2) and b.first_bad == XS[6]  # no loss to interpolate: halfway
    usable = np.ones_like(XS, dtype=bool)
    usable[5] = False  # unstable, though its final loss is low
    b = seed_boundary(XS, ys, usable, rise=0.10)
    assert b.first_bad == XS[5]


def test_no_unusable_rate_above_the_optimum_is_censored():
    ys = 2.0 + 0.01 * (XS + 6.0) ** 2
    b = seed_boundary(XS, ys, np.ones_like(XS, dtype=bool), rise=0.10)
    assert b.censored and b.x == XS[-1] and math.isnan(b.first_bad)


def test_unstable_is_judged_from_the_record():
    def run(train, initial=6.0):
        cps = tuple(Checkpoint(step=k, tokens=k, train_loss=v, val_loss=v) for k, v in enumerate(train))
        return fake_result(train[-1], initial_loss=initial, train_loss=train[-1], checkpoints=cps)

    assert run([4.0, 3.0, 2.6, 2.5]).judged_status() == "ok"
    assert run([4.0, 2.8, 3.1, 2.9]).judged_status() == "ok"  # noise: gave back 0.3 of 3.2 learned
    assert run([4.0, 3.0, 5.0, 3.5]).judged_status() == "unstable"  # a spike: gave back 2.0 of 3.0
    assert run([6.1, 6.2, 6.1, 6.05]).judged_status() == "unstable"  # ended no lower than it started
    assert run([5.9, 5.8, 5.85, 5.8]).judged_status() == "ok"  # slow (a rate far below the optimum) is not unstable
    assert fake_result(None, status="diverged").judged_status() == "diverged"


def test_cells_carry_boundaries_margins_and_their_law():
    """The wall closes in along tokens (2 -> 1 octave above the optimum) while the optimum stays: the
    margin shrinks by about a quarter octave per doubling, and the law finds that with its interval."""
    walls = (2.0, 1.75, 1.5, 1.25, 1.0)
    cells = {("mup", 32, 2**17 * 2**k): Cell(-6.0, Shape(wall=w)) for k, w in enumerate(walls)}
    optima = find_optima(simulate(np.random.default_rng(7), cells, range(5)))
    margins = [optima[c].margin for c in cells]
    assert all(math.isfinite(m) for m in margins) and margins[0] > margins[-1] + 0.5
    for c in cells:
        o = optima[c]
        lo, hi = o.boundary_interval
        assert lo <= o.boundary <= hi and o.margin_interval[0] <= o.margin <= o.margin_interval[1]
    law = margin_law(optima, "mup", "tokens")
    assert law.interval[1] < 0 and law.slope == pytest.approx(-0.25, abs=0.1)
    assert "each doubling of tokens moves the stability margin by" in law.sentence()


def test_the_stability_verdict_fails_when_the_transferred_rate_is_near_the_wall():
    """A short run's optimum carried to a long run whose wall lies below it (the long run's optimum fell 1.5
    octaves, its wall is 1 octave above that): fail. The same transfer to a long run with its wall two
    octaves up: pass."""
    comp = Comparison("tokens", "mup", 32, 2**17, 2**21)
    settings = StabilitySettings()
    near = {comp.cell(comp.ref): Cell(-6.0, Shape(wall=2.0)), comp.cell(comp.other): Cell(-7.5, Shape(wall=1.0))}
    v = judge_stability(comp, find_optima(simulate(np.random.default_rng(8), near, range(5))), settings)
    assert v.outcome == "fail" and v.interval[1] < settings.min_margin_log2 and "too close" in v.reason
    far = {comp.cell(comp.ref): Cell(-6.0, Shape(wall=2.0)), comp.cell(comp.other): Cell(-6.0, Shape(wall=2.0))}
    v = judge_stability(comp, find_optima(simulate(np.random.default_rng(8), far, range(5))), settings)
    assert v.outcome == "pass" and v.interval[0] >= settings.min_margin_log2
    assert "stability PASS" in v.summary() and "below the other cell's stability boundary" in v.summary()


def test_a_boundary_above_the_grid_is_a_lower_bound_and_inconclusive_when_it_decides():
    comp = Comparison("tokens", "mup", 32, 2**17, 2**21)
    cells = {comp.cell(comp.ref): Cell(-3.8, Shape(wall=3.0)), comp.cell(comp.other): Cell(-3.8, Shape(wall=3.0))}
    optima = find_optima(simulate(np.random.default_rng(9), cells, range(5)))
    assert optima[comp.cell(comp.other)].boundary_censored and optima[comp.cell(comp.other)].margin_interval is None
    v = judge_stability(comp, optima, StabilitySettings(min_margin_log2=2.0))
    assert v.boundary_censored and v.outcome == "inconclusive" and "extend lr_log2 upward" in v.reason


def test_a_transferred_rate_that_diverged_in_every_seed_fails_whatever_the_seed_count():
    """Issue 42: one seed, and the transferred rate diverged in the other cell: past its boundary, not
    'inconclusive: one seed'."""
    rows = []
    for w, x0 in ((32, -5.0), (256, -8.0)):
        for x in np.arange(-10.0, -2.9, 1.0):
            diverged = w == 256 and x >= -6.0
            rows.append(dict(parametrization="sp", width=w, tokens=2**20, lr_log2=float(x), seed=0,
                             loss=None if diverged else 3.0 + 0.05 * (x - x0) ** 2,
                             status="diverged" if diverged else "ok"))
    optima = find_optima(records_frame(rows))
    verdict = judge_stability(Comparison("width", "sp", 2**20, 32, 256), optima, StabilitySettings())
    assert verdict.outcome == "fail" and "diverged in every seed" in verdict.reason
