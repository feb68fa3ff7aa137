"""The drift law along tokens, the width law, the power rule and predictions, on made-up optima."""

from __future__ import annotations

import math

import pytest
from helpers import curve_frame, two_budget_grid, write_grid

from mupcheck.analysis.comparison import Comparison, rule_comparisons
from mupcheck.analysis.drift import fit_drift, predict, width_law
from mupcheck.analysis.optima import find_optima
from mupcheck.analysis.transfer import judge, rule_beta
from mupcheck.outputs.cli import main
from mupcheck.spec import load_grid

TOKENS = (2**17, 2**18, 2**19, 2**20)
WIDE_LRS = tuple(float(x) for x in range(-16, -3))


def drifting(beta, a=3.0, width_slope=0.0):
    """Optimum at a - beta * log2(T) + width_slope * log2(w / 32)."""
    return lambda w, t: a - beta * math.log2(t) + width_slope * math.log2(w / 32)


def test_fit_recovers_a_known_drift():
    df = curve_frame(drifting(0.5), tokens=TOKENS, lrs=WIDE_LRS)
    fit = fit_drift(df, "mup")
    assert fit.beta == pytest.approx(0.5, abs=0.01)
    assert fit.intercepts[32] == pytest.approx(3.0, abs=0.15)
    assert fit.per_width[256][1] == pytest.approx(0.5, abs=0.01)
    assert "each doubling of tokens moves the optimum by -0.50 log2" in fit.sentence()
    assert len(fit.cells) == 8 and not fit.censored


def test_censored_optima_are_left_out_not_fitted_as_exact():
    """Issue 13: edge-of-grid optima fed into the fit turned a true beta 0.5 into 0.35."""
    lrs = (-9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0)  # the longest budgets' optima fall below -9
    df = curve_frame(drifting(0.5, a=1.5), tokens=(2**16, 2**17, 2**18, 2**19, 2**20, 2**21), lrs=lrs)
    fit = fit_drift(df, "mup")
    assert fit.censored  # some cells' optima lie below the grid
    assert fit.beta == pytest.approx(0.5, abs=0.03)
    assert all(w_t not in {(c[0], c[1]) for c in fit.cells} for w_t in fit.censored)


def test_interval_over_seeds_covers_the_truth_and_one_seed_reads_it_off_the_residuals():
    df = curve_frame(drifting(0.3, a=-2.0), tokens=TOKENS, seeds=(0, 1, 2, 3, 4), seed_sd=0.2, lrs=WIDE_LRS)
    fit = fit_drift(df, "mup")
    lo, hi = fit.interval
    assert lo <= 0.3 <= hi and lo <= fit.beta <= hi and hi - lo < 0.5
    one = fit_drift(curve_frame(drifting(0.3, a=-2.0), tokens=TOKENS, seeds=(0,), seed_sd=0.2, lrs=WIDE_LRS), "mup")
    lo, hi = one.interval  # one seed: from the cells' residuals about the law (issue 35)
    assert one.residual_df > 0 and lo <= 0.3 <= hi and "from the cells' residuals" in one.sentence()
    two_cells = fit_drift(curve_frame(drifting(0.3, a=-2.0), tokens=TOKENS[:2], widths=(32,), seeds=(0,),
                                      lrs=WIDE_LRS), "mup")
    assert two_cells.interval is None and "one seed: no interval" in two_cells.sentence()  # no residual freedom


def test_width_law_is_flat_under_mup_and_falls_under_sp():
    mup = width_law(curve_frame(drifting(0.0, a=-7.0), widths=(32, 64, 128, 256), seeds=(0, 1, 2), seed_sd=0.0,
                                lrs=WIDE_LRS), "mup")
    sp = width_law(curve_frame(drifting(0.0, a=-6.0, width_slope=-1.0), widths=(32, 64, 128, 256), seeds=(0, 1, 2),
                               seed_sd=0.1, par="sp", lrs=WIDE_LRS), "sp")
    assert mup.slope == pytest.approx(0.0, abs=1e-6) and mup.interval[0] <= 0.0 <= mup.interval[1]
    assert sp.slope == pytest.approx(-1.0, abs=0.15) and sp.interval[1] < -0.5
    assert "each doubling of width moves the optimum by" in sp.sentence()


def test_prediction_uses_the_width():
    """Issue 13: predict ignored the width (the same answer at width 32 and 4096); wrong for SP."""
    df = curve_frame(drifting(0.5, width_slope=-1.0), tokens=TOKENS, par="sp", seeds=(0, 1, 2), seed_sd=0.05,
                     lrs=WIDE_LRS)
    fit = fit_drift(df, "sp")
    narrow, wide = predict(fit, 32, 2**24), predict(fit, 4096, 2**24)
    assert wide.lr_log2 - narrow.lr_log2 == pytest.approx(-7.0, abs=0.3)  # 7 doublings at slope -1
    assert wide.lr_log2 == pytest.approx(3.0 - 0.5 * 24 - 7.0, abs=0.3)
    lo, hi = wide.interval
    assert lo <= wide.lr_log2 <= hi
    text = wide.describe()
    assert "95% interval over 3 seeds" in text and "4.0 octaves above the largest measured width" in text


def test_prediction_says_why_it_has_no_interval_and_refuses_sp_with_one_width():
    df = curve_frame(drifting(0.5), widths=(32,), tokens=TOKENS, seeds=(0,), lrs=WIDE_LRS)
    pred = predict(fit_drift(df, "mup"), 1024, 2**24)
    assert pred.interval is None and "one width measured" in pred.describe() and "one seed" in pred.describe()
    sp = curve_frame(drifting(0.5), widths=(32,), tokens=TOKENS, seeds=(0,), par="sp", lrs=WIDE_LRS)
    with pytest.raises(ValueError, match="one width"):
        predict(fit_drift(sp, "sp"), 1024, 2**24)


def test_power_rule_fits_three_budgets_and_repairs_a_drift_on_unseen_cells(tmp_path):
    tokens = TOKENS + (2**21,)
    path = write_grid(tmp_path, extra='[transfer]\nlr_rule = "power"\n')
    path.write_text(path.read_text().replace("tokens = [2048]", f"tokens = {list(tokens)}")
                    .replace("widths = [16, 32]", "widths = [32, 256]").replace("base_width = 16", "base_width = 32"))
    grid = load_grid(path)
    comps = rule_comparisons(grid)
    assert {c.other for c in comps} == {2**20, 2**21}  # the budgets not used to fit beta (3 shortest)
    df = curve_frame(drifting(0.5), tokens=tokens, seed_sd=0.02, lrs=WIDE_LRS)
    beta, source = rule_beta(df, grid, "mup")
    assert beta == pytest.approx(0.5, abs=0.02) and "fitted on tokens 128K, 256K, 512K" in source
    optima = find_optima(df)
    comp = Comparison("tokens", "mup", 256, 2**17, 2**21)
    assert judge(comp, optima, grid.transfer).outcome == "breaks"  # -2 log2 without the rule
    ruled = judge(comp, optima, grid.transfer, beta=beta)
    assert ruled.outcome == "transfers" and ruled.shift == pytest.approx(0.0, abs=0.1)
    assert "with the power rule (beta 0.50" in ruled.summary()


def test_cli_predict_errors_are_clean(tmp_path, capsys):
    grid = write_grid(tmp_path)  # one token budget
    assert main(["predict", str(grid), "--width", "1024", "--tokens", "1e9", "--store", str(tmp_path / "s")]) == 2
    assert "needs two or more" in capsys.readouterr().err


def test_cli_predict_on_a_grid_with_one_learning_rate_names_what_it_tunes(tmp_path, capsys):
    plain = two_budget_grid(tmp_path, "[-6]")
    assert main(["predict", str(plain), "--width", "1024", "--tokens", "1e9", "--store", str(tmp_path / "s")]) == 2
    assert "`lr_log2` has one value for mup" in capsys.readouterr().err
    swept = plain.with_name("swept.toml")
    swept.write_text(plain.read_text() + 'sweep = "output_mult"\nsweep_log2 = [-1, 0, 1]\n')
    assert main(["predict", str(swept), "--width", "1024", "--tokens", "1e9", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "it tunes output_mult" in err and err.count("\n") == 1


def test_cli_predict_from_a_real_store(tmp_path, capsys):
    path = two_budget_grid(tmp_path, "[-11, -9, -7, -5, -3, -1]")
    store = str(tmp_path / "store")
    assert main(["run", str(path), "--store", store, "--no-progress"]) == 0
    code = main(["predict", str(path), "--width", "1024", "--tokens", "1e9", "--store", store])
    out, err = capsys.readouterr()
    if code == 2:  # every cell censored on this tiny grid: said in one line
        assert "nothing to fit" in err
        return
    assert "predicted optimal learning rate for mup width=1024 tokens=1B" in out
    assert "no interval: " in out and "one seed" in out


def test_the_curvature_check_finds_a_bent_law_and_passes_a_straight_one():
    """Issue 23: under cosine the committed records bend (q = -0.05 per log2(T)^2); nothing checked it."""
    tokens = (2**17, 2**18, 2**19, 2**20, 2**21)
    straight = fit_drift(curve_frame(drifting(0.3, a=-1.0), tokens=tokens, seeds=(0, 1, 2, 3, 4), seed_sd=0.1,
                                     lrs=WIDE_LRS, rng_seed=2), "mup")
    assert straight.curvature_interval[0] <= 0 <= straight.curvature_interval[1] and not straight.lack_of_fit
    assert "consistent with one beta" in straight.fit_sentence()

    def bent(w, t):  # flat, then falling: beta grows with the budget
        u = math.log2(t) - 19
        return -5.0 - 0.1 * u - 0.15 * u * u

    fit = fit_drift(curve_frame(bent, tokens=tokens, seeds=(0, 1, 2, 3, 4), seed_sd=0.1, lrs=WIDE_LRS), "mup")
    assert fit.lack_of_fit and fit.curvature == pytest.approx(-0.15, abs=0.05)
    assert "ONE BETA DOES NOT DESCRIBE THE DATA" in fit.fit_sentence()
    assert len(fit.residuals) == 10
    text = predict(fit, 256, 2**25).describe()
    assert "warning: one beta does not describe the measured budgets" in text and "4.0 octaves" in text


def test_a_seed_censored_in_one_cell_leaves_the_law_point_and_interval_on_the_same_seeds():
    """Issue 23: with a censored seed the point estimate used every cell's mean and the interval only the
    complete seeds (a synthetic case gave beta 0.556 with the interval -0.50 .. -0.50)."""
    df = curve_frame(drifting(0.5, a=1.5), tokens=TOKENS, seeds=(0, 1, 2), seed_sd=0.05, lrs=WIDE_LRS)
    longest = (df["tokens"] == TOKENS[-1]) & (df["seed"] == 2) & (df["width"] == 32)
    df.loc[longest, "loss"] = 3.0 + 0.05 * (df.loc[longest, "lr_log2"] - WIDE_LRS[0]) ** 2  # its argmin on the edge
    fit = fit_drift(df, "mup")
    lo, hi = fit.interval
    assert fit.seeds_used == 2 and lo <= fit.beta <= hi
    assert fit.beta == pytest.approx(0.5, abs=0.05)
