"""The band and the regret (mupcheck.analysis.regret): no band wider than the runs support, and numbers that say
whether they were measured, fitted inside their fit's span, or bounded by a run (issue 41)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from simulate import Cell, random_shape

from mupcheck.analysis.comparison import Comparison
from mupcheck.analysis.noise import noise_model
from mupcheck.analysis.optima import find_optima
from mupcheck.analysis.regret import paired_regret, regret_band
from mupcheck.analysis.transfer import judge
from mupcheck.frame import records_frame
from mupcheck.spec import NoiseSettings, TransferSettings

# Issue 41's case, as a new user met it: an SP sweep with irregular rates at width 256 (as a TPE sampler leaves
# them), one seed, a [noise] prior; an empty loss is a diverged run. Its optimum moved 2.1 octaves, and it was
# called *transfers*: the one rate within 0.75 octave above the argmin fitted a flat right side, the band widened
# to its 3-octave cap, and the regret was read as 0.00% off that flat fit, while the run at 2^-7.98 (1.15 octaves
# above the optimum, between it and the transferred rate) is already about 1.8% worse.
ISSUE_41_CASE = """\
64,-9.5,3.71250
64,-9.0,3.60000
64,-8.5,3.51250
64,-8.0,3.45000
64,-7.5,3.41250
64,-7.0,3.40000
64,-6.5,3.41250
64,-6.0,3.45000
64,-5.5,3.51250
256,-11.03,3.29682
256,-10.51,3.20546
256,-10.25,3.16951
256,-10.12,3.15414
256,-9.85,3.13463
256,-9.65,3.11665
256,-9.59,3.10629
256,-9.42,3.09836
256,-9.29,3.0946
256,-9.08,3.09346
256,-8.85,3.09022
256,-8.65,3.09264
256,-7.98,3.1462
256,-5.87,
256,-5.5,
"""
CASE_COMP = Comparison("width", "sp", 2**20, 64, 256)


def _case_optima():
    rows = []
    for line in ISSUE_41_CASE.splitlines():
        width, x, loss = line.split(",")
        rows.append(dict(parametrization="sp", width=int(width), tokens=2**20, lr_log2=float(x), seed=0,
                         loss=float(loss) if loss else None, status="ok" if loss else "diverged"))
    return find_optima(records_frame(rows))


def test_issue_41s_irregular_sweep_does_not_transfer():
    optima = _case_optima()
    noise = noise_model(optima, "sp", NoiseSettings(optimum_sd_log2=0.1, loss_sd=0.001))
    verdict = judge(CASE_COMP, optima, TransferSettings(), noise=noise)
    assert verdict.outcome == "breaks", verdict.summary()
    assert verdict.shift == pytest.approx(-2.1, abs=0.1)
    # The right side's band ends at the costly run 1.15 octaves up, not at the 3-octave cap.
    assert verdict.bands.sides[1] == "fitted, capped by a costly run"
    assert verdict.band[0] == pytest.approx(-(-7.98 - optima[("sp", 256, 2**20)].optimum_log2), abs=1e-9)
    # The regret at 2^-7.00 is no fitted 0.00%: at least the run at 2^-7.98, and 2^-5.87 diverged beyond it.
    regret = verdict.regret_at
    assert regret.lower_bound and regret.read_at == -7.98 and regret.diverged_nearby == -5.87
    assert regret.value > 0.015 and "at least" in regret.text() and "diverged nearby" in regret.text()


def test_a_costly_run_caps_a_flat_fit_and_a_side_with_one_rate_is_read_off_its_runs():
    """Left of the optimum, one rate within the fit: its band comes from the runs (the nearest costly one bounds
    it; no cheap run: nothing is known to be cheap). Right, rates that fit flat and a costly run beyond them."""
    xs = [-10.0, -8.0, -7.75, -7.5, -7.25, -6.0]
    losses = [3.3, 3.001, 3.0, 3.0005, 3.001, 3.1]
    rows = [dict(parametrization="mup", width=64, tokens=2**20, lr_log2=x, seed=0, loss=y, status="ok")
            for x, y in zip(xs, losses)]
    other = find_optima(records_frame(rows))[("mup", 64, 2**20)]
    band = regret_band(other, TransferSettings())
    x0 = other.optimum_log2
    assert band.sides[0].startswith("from the runs") or band.sides[0] == "fitted"
    assert band.outer[0] == pytest.approx(-(-6.0 - x0)) and band.inner[0] >= -(-6.0 - x0) - 1e-9
    assert not band.located or band.inner[0] == band.outer[0]


def _cell_rows(width: int, xs, curve, seed: int = 0, par: str = "mup") -> list[dict]:
    return [dict(parametrization=par, width=width, tokens=2**20, lr_log2=float(x), seed=seed,
                 loss=None if not math.isfinite(y) else float(y), status="ok" if math.isfinite(y) else "diverged")
            for x, y in zip(xs, curve)]


def test_a_fitted_regret_is_a_number_only_inside_its_fits_span():
    """Past the span of the points its shape was fitted on, the regret is a bound from the run nearest the
    transferred rate on its side of the optimum (the loss only rises further out), never the fit's
    extrapolation; beside a diverged run it says so."""
    xs = np.arange(-10.0, -5.9, 0.25)
    curve = 3.0 * (1 + 0.02 * (xs + 8.0) ** 2)
    far = [-4.0, -3.0]  # 2^-4 ran, 2^-3 diverged
    rows = _cell_rows(256, list(xs) + far, list(curve) + [3.0 * 1.2, math.inf])
    other = find_optima(records_frame(rows))[("mup", 256, 2**20)]
    inside = paired_regret(other, other.shape.hi - 0.1)
    assert inside.source in ("measured", "interpolated", "fitted")
    beyond = paired_regret(other, -3.5)  # between 2^-4 and the diverged 2^-3: too far apart to interpolate
    assert beyond.source == "at least" and beyond.read_at == -4.0 and beyond.diverged_nearby == -3.0
    assert beyond.value == pytest.approx(0.2, rel=0.05)
    assert beyond.text().startswith("at least 20")


def test_a_run_that_diverged_between_the_optimum_and_the_transferred_rate_breaks():
    xs = [-10.0, -9.0, -8.0, -7.0, -6.0, -4.0]
    curve = [3.2, 3.05, 3.0, 3.05, math.inf, math.inf]
    ref = _cell_rows(32, [-5.0, -4.5, -4.0, -3.5, -3.0], [3.1, 3.05, 3.0, 3.05, 3.1])
    optima = find_optima(records_frame(ref + _cell_rows(256, xs, curve)))
    verdict = judge(Comparison("width", "mup", 2**20, 32, 256), optima, TransferSettings(),
                    noise=noise_model(optima, "mup", NoiseSettings(optimum_sd_log2=0.2, loss_sd=0.003)))
    assert verdict.outcome == "breaks" and "diverged" in verdict.reason


def _tpe_rates(rng: np.random.Generator, x0: float) -> np.ndarray:
    """Rates as a TPE sampler leaves them: eight spread over [-14, -2], then twelve drawn near the best so far,
    irregular and clustered; rounded to 0.01 as a table would print them."""
    first = rng.uniform(-14.0, -2.0, 8)
    best = first[np.argmin(np.abs(first - x0))]
    near = best + 0.8 * rng.standard_normal(12)
    return np.unique(np.round(np.clip(np.concatenate([first, near]), -14.0, -2.0), 2))


@pytest.mark.parametrize("slope", [0.0, -0.5, -1.0])
def test_irregular_rates_never_transfer_where_the_truth_costs_more_than_the_band(slope):
    """One-seed sweeps at irregular rates, curves of random shape with a known truth: a comparison that
    *transfers* must cost at most max_regret at the transferred rate in truth (up to the point noise of the
    two runs that measure it), and no measured run between the other optimum and the transferred rate may
    exceed the regret the band allows."""
    rng = np.random.default_rng(int(41 + 10 * abs(slope)))
    wrong, transfers, judged = 0, 0, 0
    for _ in range(40):
        shape = random_shape(rng)
        truth = {w: Cell(rng.uniform(-8.0, -6.0) + slope * math.log2(w / 64), shape, level=3.0) for w in (64, 256)}
        rows = []
        for w, cell in truth.items():
            xs = _tpe_rates(rng, cell.optimum)
            ys = cell.level * shape(xs - cell.x0) * (1 + 0.002 * rng.standard_normal(len(xs)))
            ys[ys > 2.0 * cell.level] = np.inf
            rows += _cell_rows(w, xs, ys, par="sp")
        optima = find_optima(records_frame(rows))
        verdict = judge(Comparison("width", "sp", 2**20, 64, 256), optima, TransferSettings(),
                        noise=noise_model(optima, "sp"))
        judged += verdict.outcome != "inconclusive"
        if verdict.outcome != "transfers":
            continue
        transfers += 1
        other = truth[256]
        true_regret = float(other.shape.regret(verdict.transferred - other.x0))
        wrong += true_regret > 0.005 + 0.004  # two runs' noise of 0.2%, at 95%
        o = optima[("sp", 256, 2**20)]
        lo, hi = sorted((o.optimum_log2, verdict.transferred))
        between = [y for x, y in zip(o.xs, o.losses) if lo <= x <= hi]
        assert all(math.isfinite(y) and y / o.shape.c - 1 <= 0.005 + 1e-9 for y in between), verdict.summary()
    assert wrong == 0, (wrong, transfers, judged)
    assert judged > 0
