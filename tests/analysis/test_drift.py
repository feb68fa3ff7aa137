"""The drift law along tokens, the power rule and predictions, on hand-made optima."""

from __future__ import annotations

import math

import pytest
from helpers import write_grid
from test_transfer import grid_frame

from mupcheck.analysis.collect import find_optima
from mupcheck.analysis.drift import fit_drift, predict
from mupcheck.analysis.transfer import Comparison, judge, rule_beta, rule_comparisons
from mupcheck.outputs.cli import main
from mupcheck.spec import load_grid

TOKENS = (2**17, 2**18, 2**19, 2**20)


def drifting(beta, a=3.0, width_offset=0.0):
    """Optimum at a - beta * log2(T) (+ a small width-dependent offset)."""
    return lambda w, t: a - beta * math.log2(t) + width_offset * (w == 256)


def test_fit_recovers_a_known_drift():
    df = grid_frame(drifting(0.5), widths=(32, 256), tokens=TOKENS)
    fit = fit_drift(df, "mup")
    assert fit.beta == pytest.approx(0.5, abs=1e-6)
    assert fit.intercepts[32] == pytest.approx(3.0, abs=1e-6)
    assert fit.per_width[256][1] == pytest.approx(0.5, abs=1e-6)
    assert "each doubling of tokens moves the optimum by -0.50 log2" in fit.sentence()
    assert len(fit.cells) == 8


def test_no_drift_fits_zero_and_says_transfers():
    df = grid_frame(lambda w, t: -6.3, widths=(32,), tokens=TOKENS)
    fit = fit_drift(df, "mup")
    assert fit.beta == pytest.approx(0.0, abs=1e-9)
    assert fit.interval is not None and fit.interval[0] <= 0.0 <= fit.interval[1]


def test_bootstrap_interval_contains_the_fit_with_noise():
    df = grid_frame(lambda w, t: drifting(0.3)(w, t) + (0.2 if t == 2**18 else 0.0), widths=(32, 64), tokens=TOKENS)
    fit = fit_drift(df, "mup")
    lo, hi = fit.interval
    assert lo <= fit.beta <= hi and hi - lo < 1.0


def test_prediction_extrapolates_and_says_how_far():
    df = grid_frame(drifting(0.5), widths=(32, 256), tokens=TOKENS)
    pred = predict(fit_drift(df, "mup"), width=4096, tokens=2**30)
    assert pred.lr_log2 == pytest.approx(3.0 - 0.5 * 30, abs=1e-6)
    text = pred.describe()
    assert "+10.0 octaves of tokens beyond" in text and "+4.0 octaves of width" in text
    assert "far outside the measured range" in text and "rests on 8 cells" in text


def test_power_rule_repairs_a_drift_on_unseen_cells(tmp_path):
    path = write_grid(tmp_path, extra='[transfer]\nlr_rule = "power"\n')
    path.write_text(path.read_text().replace("tokens = [2048]", f"tokens = {list(TOKENS)}")
                    .replace("widths = [16, 32]", "widths = [32, 256]").replace("base_width = 16", "base_width = 32"))
    grid = load_grid(path)
    comps = rule_comparisons(grid)
    assert {c.other for c in comps} == {2**19, 2**20}  # the budgets not used to fit beta
    assert len(comps) == 2 * 2 * 2  # parametrizations x widths x budgets
    df = grid_frame(drifting(0.5), widths=(32, 256), tokens=TOKENS)
    beta, source = rule_beta(df, grid, "mup")
    assert beta == pytest.approx(0.5, abs=1e-6) and "fitted on tokens 128K, 256K" in source
    optima = find_optima(df)
    comp = Comparison("tokens", "mup", 256, 2**17, 2**20)
    assert not judge(comp, optima, grid.transfer).passed  # -1.5 log2 without the rule
    ruled = judge(comp, optima, grid.transfer, beta=beta)
    assert ruled.passed and ruled.shift == pytest.approx(0.0, abs=1e-6)
    assert "with the power rule (beta 0.500" in ruled.summary()


def test_cli_predict_errors_are_clean(tmp_path, capsys):
    grid = write_grid(tmp_path)  # one token budget
    assert main(["predict", str(grid), "--width", "1024", "--tokens", "1e9", "--store", str(tmp_path / "s")]) == 2
    assert "needs two or more" in capsys.readouterr().err


def test_cli_predict_from_a_real_store(tmp_path, capsys):
    path = write_grid(tmp_path)
    path.write_text(path.read_text().replace("tokens = [2048]", "tokens = [2048, 4096]")
                    .replace("lr_log2 = [-8, -6]", "lr_log2 = [-9, -7, -5, -3]"))
    store = str(tmp_path / "store")
    assert main(["run", str(path), "--store", store, "--no-progress"]) == 0
    assert main(["predict", str(path), "--width", "1024", "--tokens", "1e9", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "predicted optimal learning rate for mup width=1024 tokens=1G" in out
    assert "rests on 4 cells" in out and "octaves of tokens beyond the largest measured budget (4K)" in out
