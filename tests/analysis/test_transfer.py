"""Transfer verdicts with three outcomes, decided from the noise over seeds; comparison plans and ids."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import curve_frame, write_grid

from mupcheck.analysis.comparison import Comparison, is_expected_break, plan_comparisons
from mupcheck.analysis.optima import find_optima
from mupcheck.analysis.transfer import TransferError, assert_transfer, judge, regret_band
from mupcheck.analysis.wider import wider_is_better
from mupcheck.spec import TransferSettings, load_grid

COMP = Comparison("width", "mup", 2**20, 32, 256)


def grid_frame(optimum, **kw):
    return curve_frame(optimum, **kw)


REFINED = tuple(-10.0 + 0.25 * k for k in range(25))


def test_stable_optimum_transfers():
    df = curve_frame(lambda w, t: -7.2, seed_sd=0.02, a_left=0.1, a_right=0.3, lrs=REFINED)
    (verdict,) = assert_transfer(df, axis="width")
    assert verdict.outcome == "transfers" and verdict.passed
    lo, hi = verdict.interval
    assert verdict.band[0] <= lo <= hi <= verdict.band[1] and abs(verdict.shift) < 0.2


def test_moved_optimum_breaks_with_a_message_that_pinpoints_it():
    df = curve_frame(lambda w, t: -6.6 if t == 2**20 else -8.0, widths=(256,), tokens=(2**20, 2**23), seed_sd=0.05)
    with pytest.raises(TransferError) as info:
        assert_transfer(df, axis="tokens")
    msg = str(info.value)
    assert "1 of 1 comparisons do not transfer (1 breaks)" in msg
    assert re.search(r"tokens 1M -> 8M at width 256 \(mup\): BREAKS: optimum moved -1\.\d\d log2 \(95% interval", msg)
    assert "at most 0.5% regret" in msg and "regret" in msg
    assert re.search(r"reference +tokens=1M: lr\* = 2\^-6\.\d\d \[", msg)
    assert "lr_log2" in msg and "<- ref optimum" in msg and "<- other optimum" in msg


def test_one_seed_without_a_noise_estimate_is_inconclusive_not_a_pass():
    """Three rates a cell: too few for the curves' own residuals (a quadratic through four neighbours), no prior,
    no second seed anywhere: nothing says how noisy one seed's optimum is."""
    df = curve_frame(lambda w, t: -7.2, seeds=(0,), lrs=(-8.0, -7.0, -6.0))
    verdict = judge(COMP, find_optima(df), TransferSettings())
    assert verdict.outcome == "inconclusive" and "one seed" in verdict.reason and "add seeds" in verdict.reason
    with pytest.raises(TransferError, match="1 inconclusive"):
        assert_transfer(df, axis="width")


def test_one_seed_is_judged_with_its_propagated_noise_and_names_it():
    """Enough rates for the curves' residuals: the loss noise, propagated through each cell's fit, gives the
    shift its interval, and the verdict names where it came from."""
    df = curve_frame(lambda w, t: -7.2 if w == 32 else -9.7, seeds=(0,), noise=0.003, lrs=REFINED)
    verdict = judge(COMP, find_optima(df), TransferSettings())
    assert verdict.noise == "propagated" and "noise: propagated" in verdict.summary()
    assert verdict.outcome == "breaks" and verdict.interval[1] < verdict.band[0]


def test_an_interval_across_the_band_edge_is_inconclusive():
    # Seeds move the optimum by 0.5 log2: the shift's interval is wider than the band.
    df = curve_frame(lambda w, t: -7.2 if w == 32 else -6.9, seeds=(0, 1, 2), seed_sd=0.5, a_left=0.1,
                     a_right=0.3, rng_seed=3)
    verdict = judge(COMP, find_optima(df), TransferSettings())
    lo, hi = verdict.interval
    assert lo < verdict.band[1] < hi or lo < verdict.band[0] < hi
    assert verdict.outcome == "inconclusive" and "straddles" in verdict.reason


def test_a_flat_basin_transfers_where_a_fixed_tolerance_would_break():
    """Issue 13: shift -0.90 at 0.05% regret failed the old AND of shift and regret. The band follows the
    regret: on a flat curve a large shift costs little."""
    df = curve_frame(lambda w, t: -6.3 if w == 32 else -7.2, seed_sd=0.02, a_left=0.002, a_right=0.004)
    optima = find_optima(df)
    verdict = judge(COMP, optima, TransferSettings())
    assert verdict.shift == pytest.approx(-0.9, abs=0.1) and verdict.regret < 0.005
    assert verdict.outcome == "transfers"
    assert judge(COMP, optima, TransferSettings(tolerance_log2=0.5)).outcome == "breaks"


def test_band_comes_from_the_other_cells_curvature_on_each_side():
    optima = find_optima(curve_frame(lambda w, t: -7.0, a_left=0.05, a_right=0.2, seed_sd=0.01))
    bands = regret_band(optima[("mup", 256, 2**20)], TransferSettings(max_regret=0.005))
    band, loss = bands.inner, optima[("mup", 256, 2**20)].loss
    assert bands.source == "regret" and bands.located and bands.sides == ("fitted", "fitted")
    assert band[1] == pytest.approx((0.005 * loss / 0.05) ** 0.5, rel=0.1)  # lr below the optimum: left side
    assert -band[0] == pytest.approx((0.005 * loss / 0.2) ** 0.5, rel=0.1)
    fixed = regret_band(optima[("mup", 256, 2**20)], TransferSettings(tolerance_log2=0.3))
    assert (fixed.inner, fixed.outer, fixed.source) == ((-0.3, 0.3), (-0.3, 0.3), "fixed")


def test_a_censored_cell_is_inconclusive():
    df = curve_frame(lambda w, t: -7.0 if w == 32 else -3.0, seed_sd=0.05)
    verdict = judge(COMP, find_optima(df), TransferSettings())
    assert verdict.outcome == "inconclusive" and "censored on the upper edge" in verdict.reason


def test_all_diverged_cell_is_inconclusive():
    df = curve_frame(lambda w, t: -7.0)
    df.loc[df["width"] == 256, ["status", "loss"]] = ["diverged", None]
    with pytest.raises(TransferError, match="no optimum to compare"):
        assert_transfer(df, axis="width")


def test_regret_is_measured_at_the_transferred_rate_where_a_run_exists():
    df = curve_frame(lambda w, t: -7.0 if w == 32 else -6.0, seed_sd=0.0)
    verdict = judge(COMP, find_optima(df), TransferSettings())
    assert verdict.regret_source == "measured"  # -7.0 was run in the other cell
    loss = find_optima(df)[("mup", 256, 2**20)].loss
    assert verdict.regret == pytest.approx(0.05 / loss, rel=1e-6)


def test_a_fitted_regret_reads_the_curve_against_its_own_minimum():
    """Between runs (more than half an octave from any), the regret is the fitted shape's rise above its own
    minimum, the quantity the band is read from: a shift inside the 0.5% band then never shows more than
    0.5% regret. It has no interval: it is not measured."""
    lrs = (-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0)
    df = curve_frame(lambda w, t: -7.5 if w == 32 else -7.0, seed_sd=0.0, a_left=0.05, a_right=0.05,
                     noise=0.004, rng_seed=3, lrs=lrs)
    optima = find_optima(df)
    other = optima[("mup", 256, 2**20)]
    transferred = optima[("mup", 32, 2**20)].optimum_log2
    assert min(abs(x - transferred) for x in lrs) > 0.4  # no run near it: neither measured nor interpolated
    verdict = judge(COMP, optima, TransferSettings())
    assert verdict.regret_source == "fitted" and verdict.regret_interval is None
    expected = other.shape.loss_at(transferred) / other.shape.c - 1
    assert verdict.regret == pytest.approx(expected, rel=1e-9)
    low, high = verdict.band
    assert (low <= verdict.shift <= high) == (verdict.regret <= 0.005 + 1e-12)


def test_measured_regret_is_paired_per_seed_with_its_interval():
    """Each seed's loss at the transferred rate over its own loss at the other cell's optimum: a seed's level
    cancels. Seeds at very different levels (1% apart) still give a tight interval."""
    df = curve_frame(lambda w, t: -7.0 if w == 32 else -6.0, seeds=(0, 1, 2, 3), seed_sd=0.0)
    df["loss"] *= 1 + 0.01 * df["seed"]
    verdict = judge(COMP, find_optima(df), TransferSettings())
    other = find_optima(df)[("mup", 256, 2**20)]
    assert verdict.regret_source == "measured"
    per_seed = [(3.0 - 0.008 + 0.05) / (3.0 - 0.008) - 1] * 4  # one octave at curvature 0.05
    assert verdict.regret_at.per_seed == pytest.approx(per_seed, rel=1e-6)
    lo, hi = verdict.regret_interval
    assert lo == pytest.approx(hi, abs=1e-9) and other.n_seeds == 4


def test_a_measured_regret_above_max_regret_breaks_whatever_the_shift_says():
    """Issue 23: cpu_horizon_constant 128K -> 2M measured 1.73% regret [1.04, 2.41] and was inconclusive,
    because only the shift's interval counted. Here the shift's interval straddles the band's edge (seeds
    move the optimum and the runs are noisy) while the seeds' measured regrets lie above 0.5%."""
    df = curve_frame(lambda w, t: -7.0 if w == 32 else -6.3, seeds=(0, 1, 2, 3, 4), seed_sd=0.2, a_left=0.05,
                     a_right=0.05, noise=0.006, rng_seed=4, lrs=tuple(np.arange(-10.0, -3.9, 0.25)))
    verdict = judge(COMP, find_optima(df), TransferSettings())
    lo, hi = verdict.interval
    assert lo < verdict.band[1] < hi  # the shift alone would be inconclusive
    assert verdict.regret_interval[0] > 0.005
    assert verdict.outcome == "breaks" and "measured regret" in verdict.reason


def test_a_shift_inside_the_band_cannot_transfer_while_the_measured_regret_reaches_past_it():
    df = curve_frame(lambda w, t: -7.0 if w == 32 else -6.8, seeds=(0, 1, 2), seed_sd=0.05, noise=0.01, rng_seed=8,
                     a_left=0.03, a_right=0.03, lrs=tuple(np.arange(-10.0, -3.9, 0.25)))
    verdict = judge(COMP, find_optima(df), TransferSettings())
    assert verdict.band[0] <= verdict.interval[0] and verdict.interval[1] <= verdict.band[1]
    assert verdict.regret_interval[1] > 0.005
    assert verdict.outcome == "inconclusive" and "measured regret's interval reaches" in verdict.reason


def test_plan_comparisons_and_ids(tmp_path):
    grid = load_grid(write_grid(tmp_path, extra='[transfer]\nexpect_break = ["sp:width"]\n'))
    comps = plan_comparisons(grid)
    assert [c.test_id for c in comps] == ["width[mup tokens=2K 16->32]", "width[sp tokens=2K 16->32]"]
    assert [is_expected_break(c, grid.transfer) for c in comps] == [False, True]


def test_tokens_axis_ids_and_reference():
    comp = Comparison("tokens", "mup", 256, 2**20, 2**23)
    assert comp.test_id == "tokens[mup width=256 1M->8M]"
    assert comp.cell(2**23) == ("mup", 256, 2**23, 0, 0)  # depth and batch size: not recorded
    assert is_expected_break(comp, TransferSettings(expect_break=("tokens",)))


def test_wider_is_better_passes_when_loss_falls_with_width():
    optima = find_optima(grid_frame(lambda w, t: -7.0, widths=(32, 64, 256)))
    verdict = wider_is_better(optima, "mup", 2**20, (32, 64, 256), 32, tolerance=0.01)
    assert verdict.passed and verdict.lr_log2 == -7.0 and verdict.worst_rise < 0
    assert verdict.test_id == "wider[mup tokens=1M]"


def test_wider_is_worse_fails_with_the_losses():
    df = grid_frame(lambda w, t: -7.0, widths=(32, 64, 256))
    df.loc[df["width"] == 256, "loss"] *= 1.05
    verdict = wider_is_better(find_optima(df), "mup", 2**20, (32, 64, 256), 32, tolerance=0.01)
    assert not verdict.passed and verdict.worst_rise == pytest.approx(0.048, abs=0.002)
    msg = verdict.message()
    assert "WIDER IS WORSE" in msg and "width    256: loss" in msg and "coord-check" in msg


def test_wider_is_better_weighs_its_noise_and_needs_a_located_optimum():
    """A rise of 0.5% +- 2% between seeds is no evidence either way; a censored reference has no rate to
    compare at (issue 23: it used to pass on a grid whose optima were censored)."""
    df = grid_frame(lambda w, t: -7.0, widths=(32, 64), seeds=(0, 1, 2), seed_sd=0.02)
    noise = np.random.default_rng(3).normal(0, 0.02, size=3)
    for seed, eps in enumerate(noise):
        df.loc[(df["width"] == 64) & (df["seed"] == seed), "loss"] *= 1.005 + eps
    verdict = wider_is_better(find_optima(df), "mup", 2**20, (32, 64), 32, tolerance=0.01)
    lo, hi = verdict.rises[0][1]
    assert lo < 0.01 < hi and verdict.outcome == "inconclusive" and "95% interval" in verdict.message()
    censored = grid_frame(lambda w, t: -3.0, widths=(32, 64))
    verdict = wider_is_better(find_optima(censored), "mup", 2**20, (32, 64), 32)
    assert verdict.outcome == "inconclusive" and "not located" in verdict.message()


def test_reference_width_setting(tmp_path):
    path = write_grid(tmp_path, extra="[transfer]\nreference_width = 32\n")
    path.write_text(path.read_text().replace("widths = [16, 32]", "widths = [16, 32, 64]"))
    ids = [c.test_id for c in plan_comparisons(load_grid(path))]
    assert ids[:2] == ["width[mup tokens=2K 32->16]", "width[mup tokens=2K 32->64]"]
