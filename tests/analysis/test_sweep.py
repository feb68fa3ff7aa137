"""A swept hyperparameter besides the learning rate (issue 27): its optimum per cell, alone and jointly with
the learning rate, judged like the learning rate's, on simulated curves with a known truth.

The curves are the simulator's (tests/simulate.py): a flat bottom, a gentle rise on one side and an
exponential wall on the other, which no estimator here assumes. A joint surface couples the two keys (the
learning rate's optimum moves with the other key, as the output multiplier's does in muP's Table 1), so
the profile over one key is not the slice through the other's optimum.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from simulate import Cell, Shape, simulate

from mupcheck.analysis.comparison import plan_comparisons
from mupcheck.analysis.optima import along, find_optima, joint_argmin
from mupcheck.analysis.transfer import judge
from mupcheck.frame import records_frame
from mupcheck.outputs.json_report import suite_json
from mupcheck.outputs.report import render_report
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.plan import plan_grid
from mupcheck.spec import Cell as Key
from mupcheck.spec import parse_grid

WIDTHS = (32, 64, 128, 256)
BASE = {"name": "s", "model": "gpt", "widths": list(WIDTHS), "tokens": [2**20], "lr_log2": [-5.0],
        "sweep": "output_mult", "sweep_log2": [-9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0], "depth": 2}


def _as_sweep(df: pd.DataFrame, lr_log2: float = -5.0) -> pd.DataFrame:
    """A simulated frame whose curves run along the swept key: the simulator's x becomes sweep_log2, at one
    learning rate."""
    return df.assign(sweep_log2=df["lr_log2"], lr_log2=lr_log2)


def _key_frame(rng: np.random.Generator, slope: float, seeds=range(5), par: str = "mup") -> pd.DataFrame:
    """Curves of the swept key whose optimum moves by `slope` log2 per doubling of width."""
    cells = {Key(par, w, 2**20, 2, 16): Cell(-6.0 + slope * math.log2(w / 32)) for w in WIDTHS}
    return _as_sweep(simulate(rng, cells, seeds))


def test_the_swept_keys_interval_covers_its_true_optimum():
    """Over 60 simulated cells (5 seeds each), the 95% interval of the key's optimum covers the truth about
    95% of the time: the estimator is the learning rate's, on another column."""
    rng = np.random.default_rng(11)
    truth = Cell(-6.0).optimum
    hits = total = 0
    for _ in range(15):
        for o in find_optima(_key_frame(rng, 0.0), tuned="output_mult").values():
            assert o.tuned == "output_mult"
            if o.interval is not None:
                total += 1
                hits += o.interval[0] <= truth <= o.interval[1]
    assert total >= 50 and hits / total >= 0.85, (hits, total)


@pytest.mark.parametrize("slope,expected", [(0.0, "transfers"), (-1.0, "breaks")])
def test_width_comparisons_of_a_swept_key_follow_its_curves(slope, expected):
    grid = parse_grid({**BASE, "parametrization": ["mup"]})
    optima = find_optima(_key_frame(np.random.default_rng(3), slope, seeds=range(8)), tuned="output_mult")
    outcomes = [judge(c, optima, grid.transfer).outcome for c in plan_comparisons(grid)]
    if expected == "transfers":
        assert "breaks" not in outcomes and "transfers" in outcomes, outcomes
    else:
        assert outcomes == ["breaks"] * 3


def _surface(k: float, lr: float, x0: float, k0: float, coupling: float) -> float:
    """Relative loss over (key, lr): the key's own shape around k0, times the learning rate's around an optimum
    that moves with the key (lr* = x0 - coupling * (k - k0))."""
    return float(Shape(wall=1.0)(k - k0) * Shape(wall=1.5)(lr - (x0 - coupling * (k - k0))))


def _joint_frame(rng: np.random.Generator, k0: dict[int, float], seeds=range(5), coupling: float = 0.5,
                 noise: float = 0.003) -> pd.DataFrame:
    rows = []
    ks, lrs = np.arange(-3.0, 3.01, 0.5), np.arange(-8.0, -1.99, 0.5)
    for w, k_opt in k0.items():
        for s in seeds:
            dk, dl, level = 0.2 * rng.standard_normal(), 0.2 * rng.standard_normal(), 2.0 * (1 + 0.005 *
                                                                                            rng.standard_normal())
            for k in ks:
                for lr in lrs:
                    truth = _surface(k, lr, -5.0 + dl, k_opt + dk, coupling)
                    loss = level * truth * (1 + noise * rng.standard_normal())
                    diverged = loss > 6.0
                    rows.append(dict(parametrization="mup", width=w, tokens=2**20, depth=2, batch_size=16,
                                     lr_log2=float(lr), sweep_log2=float(k), seed=s, loss=None if diverged else loss,
                                     status="diverged" if diverged else "ok", data_repeats=0.1))
    return records_frame(rows)


def _profile_truth(k_opt: float, coupling: float) -> tuple[float, float]:
    """The noiseless optima of both profiles, on the measured grid of the other key (what a profile can see)."""
    ks, lrs = np.arange(-3.0, 3.01, 0.5), np.arange(-8.0, -1.99, 0.5)
    fine = np.arange(-4.0, 4.0, 0.001)
    key_curve = [min(_surface(k, lr, -5.0, k_opt, coupling) for lr in lrs) for k in fine]
    lr_curve = [min(_surface(k, x, -5.0, k_opt, coupling) for k in ks) for x in fine - 5.0]
    return float(fine[int(np.argmin(key_curve))]), float(fine[int(np.argmin(lr_curve))] - 5.0)


def test_a_joint_sweep_profiles_each_key_over_the_other():
    """The key's optimum with the learning rate tuned per seed, and the learning rate's with the key tuned, both
    lie near their noiseless profile optima (within the measured grid's resolution, 0.5 log2), though the
    surface couples them: a slice at the other key's base value would put the learning rate's elsewhere."""
    rng = np.random.default_rng(7)
    df = _joint_frame(rng, {32: 0.0, 256: 0.0}, seeds=range(6))
    key_truth, lr_truth = _profile_truth(0.0, 0.5)
    for tuned, truth in (("output_mult", key_truth), ("lr", lr_truth)):
        optima = find_optima(df, tuned=tuned)
        for o in optima.values():
            assert o.found and abs(o.optimum_log2 - truth) < 0.5, (tuned, o.describe(), truth)
            assert len(o.xs) == 13  # one curve point per value of the tuned key, the other profiled out
    profiled = along(df, "lr")
    assert len(profiled) == 2 * 6 * 13 and profiled.groupby(["width", "lr_log2", "seed"]).size().max() == 1
    best = joint_argmin(df)
    assert set(best) == {Key("mup", 32, 2**20, 2, 16), Key("mup", 256, 2**20, 2, 16)}
    for lr, k, loss in best.values():
        assert abs(k - key_truth) <= 1.0 and abs(lr - lr_truth) <= 1.0 and 2.0 < loss < 2.1


def test_a_profile_prefers_a_usable_run_over_a_lower_unstable_one():
    rows = [dict(parametrization="mup", width=32, tokens=2**20, depth=2, batch_size=16, lr_log2=lr, sweep_log2=0.0,
                 seed=0, loss=loss, status=status)
            for lr, loss, status in ((-6.0, 2.5, "ok"), (-5.0, 2.0, "unstable"), (-4.0, None, "diverged"))]
    best = along(records_frame(rows), "output_mult")
    assert len(best) == 1 and best["lr_log2"].iloc[0] == -6.0 and best["status"].iloc[0] == "ok"


def test_a_joint_report_and_json_show_the_joint_optimum_and_whether_it_moves():
    rng = np.random.default_rng(5)
    grid = parse_grid({**BASE, "widths": [32, 256], "lr_log2": [float(x) for x in np.arange(-8.0, -1.99, 0.5)],
                       "sweep_log2": [float(x) for x in np.arange(-3.0, 3.01, 0.5)], "parametrization": ["mup"]})
    assert grid.joint and grid.tuned == "output_mult"
    suite = GridSuite(plan_grid(grid), None, frame=_joint_frame(rng, {32: 0.0, 256: 0.0}, seeds=range(6)))
    text = render_report(suite, {"how": "simulated"}, [])
    assert "**What is tuned: `output_mult`**" in text and "## Joint optimum" in text
    assert "## Optimal `output_mult`" in text and "ref output_mult*" in text
    assert "Does the learning rate's optimum move too?" in text and "width 32 -> 256" in text
    assert list(suite.lr_verdicts) == ["width[mup tokens=1M 32->256]"]
    data = json.loads(json.dumps(suite_json(suite, {"how": "simulated"})))
    assert data["tuned"] == {"key": "output_mult", "sweep_log2": list(grid.sweep_log2), "joint": True}
    cell = data["cells"][0]
    assert cell["tuned"] == "output_mult" and cell["lr_log2"] is None and cell["optimum_log2"] is not None
    assert cell["joint_lr_log2"] is not None


def test_a_single_key_sweep_reports_the_key_and_the_fixed_rate():
    rng = np.random.default_rng(8)
    grid = parse_grid({**BASE, "parametrization": ["mup", "sp"], "transfer": {"expect_break": ["sp:width"]}})
    frame = pd.concat([_key_frame(rng, 0.0, par="mup"), _key_frame(rng, -1.0, par="sp")], ignore_index=True)
    suite = GridSuite(plan_grid(grid), None, frame=frame)
    outcomes = {o.check.id: o.outcome for o in suite.outcomes() if o.check.kind == "transfer"}
    sp = [v for k, v in outcomes.items() if k.startswith("width[sp")]  # 32->64, 32->128, 32->256
    assert sp[1:] == ["xfail", "xfail"] and sp[0] in ("xfail", "inconclusive"), sp
    assert "fail" not in outcomes.values()
    text = render_report(suite, {"how": "simulated"}, [])
    assert "the learning rate is held at lr_log2 -5" in text and "## Joint optimum" not in text
    assert "output_mult* above the measured" not in text


def test_refinement_refines_the_swept_key_at_the_grids_rate():
    from mupcheck.plan import refinement_configs

    grid = parse_grid({**BASE, "parametrization": ["mup"], "seeds": [0, 1],
                       "refine": {"step_log2": 0.5, "span_log2": 1.0}})
    cells = {Key("mup", w, 2**20, 2, 16): Cell(-6.0) for w in WIDTHS}
    coarse = _as_sweep(simulate(np.random.default_rng(2), cells, range(2), refine=False))
    extra = refinement_configs(grid, coarse)
    assert extra and all(c.lr_log2 == -5.0 and c.sweep == "output_mult" for c in extra)
    assert all(c.output_mult == 2.0**c.sweep_log2 and c.sweep_log2 not in grid.sweep_log2 for c in extra)
    # the half octaves within one octave of each cell's argmin (its whole octaves are measured), for 2 seeds
    assert sorted({c.sweep_log2 for c in extra}) == [-6.5, -5.5] and len(extra) == len(WIDTHS) * 2 * 2
