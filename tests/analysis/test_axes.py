"""Depth and batch size as axes: comparisons, laws and the batch rule, on simulated curves with a known truth
(tests/simulate.py: a flat bottom and a wall above the optimum, seed noise measured on real records)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mupcheck.analysis.comparison import Comparison, drift_of, plan_comparisons, rule_comparisons
from mupcheck.analysis.drift import axis_law
from mupcheck.analysis.optima import find_optima
from mupcheck.analysis.transfer import judge
from mupcheck.outputs.report import render_report
from mupcheck.outputs.verdicts import GridSuite, planned_checks
from mupcheck.plan import plan_grid
from mupcheck.spec import Cell as Key
from mupcheck.spec import TransferSettings, parse_grid
from tests.simulate import Cell, Shape, simulate

DEPTHS = (2, 4, 8, 16)
BATCHES = (8, 32, 128)


def _depth_frame(rng, slope: float, seeds=range(5), width: int = 64, tokens: int = 2**20):
    """One width and budget, the optimum moving by `slope` log2 per doubling of depth (from 2^-5 at depth 2)."""
    cells = {Key("mup", width, tokens, d, 16): Cell(-5.0 + slope * math.log2(d / 2), Shape()) for d in DEPTHS}
    return simulate(rng, cells, seeds)


def _batch_frame(rng, exponent: float, seeds=range(5), tokens=(2**20,)):
    cells = {Key("mup", 64, t, 2, b): Cell(-6.0 + exponent * math.log2(b / 8)) for b in BATCHES for t in tokens}
    return simulate(rng, cells, seeds)


def test_a_depth_law_recovers_its_slope_and_its_interval_covers_it():
    """Over 60 simulated grids, the 95% interval of the slope along depth covers the truth (+-0.6) about 95%
    of the time, whether the optimum stays (CompleteP's promise) or drifts (muP alone)."""
    rng = np.random.default_rng(7)
    for truth in (0.0, -0.6):
        hits = []
        for _ in range(60):
            law = axis_law(find_optima(_depth_frame(rng, truth)), "mup", "depth")
            assert law is not None and law.seeds_used >= 3 and law.cells == len(DEPTHS)
            hits.append(law.interval[0] <= truth <= law.interval[1])
        assert 0.85 <= np.mean(hits) <= 1.0, (truth, np.mean(hits))


def test_depth_comparisons_transfer_when_the_optimum_stays_and_break_when_it_drifts():
    grid = parse_grid({"name": "d", "model": "gpt", "widths": [64], "tokens": [2**20], "depths": list(DEPTHS),
                       "lr_log2": [-9.0, -3.0], "parametrization": ["mup"], "batch_size": 16})
    comps = plan_comparisons(grid)
    assert [c.test_id for c in comps] == ["depth[mup width=64 2->4]", "depth[mup width=64 2->8]",
                                          "depth[mup width=64 2->16]"]
    assert comps[0].cell(4) == Key("mup", 64, 2**20, 4, 16)
    rng = np.random.default_rng(3)
    stays = find_optima(_depth_frame(rng, 0.0, seeds=range(8)))  # 5 seeds leave it inconclusive: too noisy
    outcomes = [judge(c, stays).outcome for c in comps]
    assert "breaks" not in outcomes and outcomes.count("transfers") >= 2, outcomes
    drifts = find_optima(_depth_frame(rng, -0.7, seeds=range(8)))
    outcomes = [judge(c, drifts).outcome for c in comps]
    assert outcomes[-1] == "breaks" and "transfers" not in outcomes[1:], outcomes


def test_a_depth_grid_with_widths_and_budgets_names_every_slice():
    grid = parse_grid({"name": "d", "model": "gpt", "widths": [32, 64], "tokens": [2**20, 2**22],
                       "depths": [2, 8], "lr_log2": [-9.0, -3.0], "parametrization": ["mup", "sp"],
                       "transfer": {"expect_break": ["sp:width"]}})
    ids = [c.id for c in planned_checks(grid)]
    assert "depth[mup width=32 tokens=1M 2->8]" in ids and "width[sp tokens=4M depth=8 32->64]" in ids
    assert "tokens[mup width=64 depth=2 1M->4M]" in ids and "wider[mup tokens=1M depth=8]" in ids
    assert len([i for i in ids if i.startswith("depth[")]) == 2 * 2 * 2  # arms x widths x budgets


def test_batch_comparisons_break_without_a_rule_and_transfer_with_the_right_one():
    """Adam's optimum grows as the square root of the batch: compared plainly it moves (+1 log2 from 8 to
    32), the sqrt rule carries it over, and the linear rule overshoots."""
    rng = np.random.default_rng(11)
    optima = find_optima(_batch_frame(rng, 0.5, seeds=range(8)))
    base = {"name": "b", "model": "gpt", "widths": [64], "tokens": [2**20], "batch_sizes": list(BATCHES),
            "seq_len": 64, "lr_log2": [-9.0, -3.0], "parametrization": ["mup"], "depth": 2}
    plain = plan_comparisons(parse_grid(base))
    assert [c.test_id for c in plain] == ["batch_size[mup width=64 8->32]", "batch_size[mup width=64 8->128]"]
    assert [judge(c, optima).outcome for c in plain] == ["breaks", "breaks"]
    sqrt_grid = parse_grid({**base, "transfer": {"lr_batch_rule": "sqrt"}})
    rules = rule_comparisons(sqrt_grid)
    assert [judge(c, optima, beta=0.5).outcome for c in rules] == ["transfers", "transfers"]
    assert drift_of(rules[1], 0.5) == pytest.approx(-2.0)  # the transferred rate moves up 2 log2 at 16x batch
    assert [judge(c, optima, beta=1.0).outcome for c in rules] == ["breaks", "breaks"]


def test_a_fitted_batch_rule_is_fitted_on_the_two_smallest_and_checked_on_the_rest():
    rng = np.random.default_rng(5)
    grid = parse_grid({"name": "b", "model": "gpt", "widths": [64], "tokens": [2**20], "batch_sizes": list(BATCHES),
                       "seq_len": 64, "lr_log2": [-9.0, -3.0], "parametrization": ["mup"], "depth": 2,
                       "transfer": {"lr_batch_rule": "fit"}})
    suite = GridSuite(plan_grid(grid), None, frame=_batch_frame(rng, 0.5, seeds=range(8)))
    exponent, source = suite.rule("mup", "batch_size")
    assert abs(exponent - 0.5) < 0.3 and "fitted on batch sizes 8, 32" in source
    assert [c.id for c in suite.planned.values() if c.kind == "rule"] == ["rule_batch_size[mup width=64 8->128]"]
    # Fitted on two sizes and carried 16x: its noise can leave the far cell undecided, never broken.
    assert suite.outcome("rule_batch_size[mup width=64 8->128]").outcome in ("pass", "inconclusive")
    law = suite.axis_law("mup", "batch_size")
    assert law is not None and law.interval[0] <= 0.5 <= law.interval[1]
    text = render_report(suite, {"how": "simulated"}, [])
    assert "## Along batch size" in text and "**Batch rule**" in text and "mup along batch size" in text


def test_a_depth_report_has_its_section_tables_and_law():
    rng = np.random.default_rng(9)
    grid = parse_grid({"name": "d", "model": "gpt", "widths": [64], "tokens": [2**20], "depths": list(DEPTHS),
                       "lr_log2": [-9.0, -3.0], "parametrization": ["mup"], "depth_alpha": 1.0, "batch_size": 16})
    suite = GridSuite(plan_grid(grid), None, frame=_depth_frame(rng, 0.0, seeds=range(8)))
    text = render_report(suite, {"how": "simulated"}, [])
    assert "## Along depth" in text and "**mup at depth 16**" in text and "depth_alpha 1" in text
    assert "mup along depth** (reference depth 2): each doubling of depth moves the optimum by" in text
    outcomes = [o.outcome for o in suite.outcomes() if o.check.kind == "transfer"]
    assert "pass" in outcomes and "fail" not in outcomes, outcomes


def test_a_drifting_rule_on_the_wrong_axis_moves_nothing():
    comp = Comparison("depth", "mup", 64, 2, 8, held=(("tokens", 2**20), ("batch_size", 16)))
    assert drift_of(comp, 0.5) == 0.0
    assert judge(comp, find_optima(_depth_frame(np.random.default_rng(1), 0.0)), TransferSettings(),
                 beta=0.5).outcome == "transfers"


def test_a_law_along_tokens_refuses_to_mix_depths():
    from mupcheck.analysis.drift import drift_law
    from mupcheck.analysis.optima import one_slice

    rng = np.random.default_rng(2)
    cells = {Key("mup", 64, t, d, 16): Cell(-5.0) for t in (2**20, 2**22) for d in (2, 8)}
    optima = find_optima(simulate(rng, cells, range(3)))
    with pytest.raises(ValueError, match="span 2 depths or batch sizes"):
        drift_law(optima, "mup")
    assert drift_law(one_slice(optima, 8, 16), "mup") is not None


def test_a_batch_rule_that_cannot_be_fitted_is_inconclusive_not_a_traceback():
    """The two smallest batch sizes' optima lie below the measured rates (censored): there is nothing to fit
    the exponent on, and the rule's items say so."""
    rng = np.random.default_rng(4)
    cells = {Key("mup", 64, 2**20, 2, b): Cell(-12.0 if b < 128 else -6.0) for b in BATCHES}
    grid = parse_grid({"name": "b", "model": "gpt", "widths": [64], "tokens": [2**20], "batch_sizes": list(BATCHES),
                       "seq_len": 64, "lr_log2": [-9.0, -3.0], "parametrization": ["mup"], "depth": 2,
                       "transfer": {"lr_batch_rule": "fit"}})
    suite = GridSuite(plan_grid(grid), None, frame=simulate(rng, cells, range(3)))
    outcome = suite.outcome("rule_batch_size[mup width=64 8->128]")
    assert outcome.outcome == "inconclusive" and "cannot fit the batch rule" in outcome.summary
    assert "## Along batch size" in render_report(suite, {"how": "simulated"}, [])


def test_the_batch_law_at_each_budget_recovers_how_the_exponent_changes_with_duration():
    """The exponent is 0.5 at the short budget and 0 at the long one (a critical batch that the longer run
    has passed): the per-budget laws recover each, the pooled one lies between, and report and JSON show them."""
    import json

    from mupcheck.outputs.json_report import suite_json

    rng = np.random.default_rng(12)
    short, long_ = 2**18, 2**20
    cells = {Key("mup", 64, t, 2, b): Cell(-6.0 + (0.5 if t == short else 0.0) * math.log2(b / 8))
             for b in BATCHES for t in (short, long_)}
    grid = parse_grid({"name": "b", "model": "gpt", "widths": [64], "tokens": [short, long_],
                       "batch_sizes": list(BATCHES), "seq_len": 64, "lr_log2": [-9.0, -3.0], "parametrization": ["mup"],
                       "depth": 2})
    suite = GridSuite(plan_grid(grid), None, frame=simulate(rng, cells, range(8)))
    at_short, at_long = suite.axis_law("mup", "batch_size", short), suite.axis_law("mup", "batch_size", long_)
    pooled = suite.axis_law("mup", "batch_size")
    assert at_short is not None and at_long is not None and pooled is not None
    assert at_short.interval[0] <= 0.5 <= at_short.interval[1] and at_long.interval[0] <= 0.0 <= at_long.interval[1]
    assert at_long.slope < pooled.slope < at_short.slope
    text = render_report(suite, {"how": "simulated"}, [])
    assert "  - at tokens 256K alone: " in text and "  - at tokens 1M alone: " in text
    laws = json.loads(json.dumps(suite_json(suite, {})))["laws"]["mup"]
    assert set(laws["batch_size_by_tokens"]) == {str(short), str(long_)}
