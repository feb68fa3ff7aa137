"""Transfer assertions: pass and fail paths, their messages, comparison plans and ids."""

from __future__ import annotations

import re

import pytest
from helpers import write_grid
from test_collect import LRS

from mupcheck.analysis.collect import find_optima, records_frame
from mupcheck.analysis.transfer import (
    Comparison,
    TransferError,
    assert_transfer,
    is_expected_break,
    judge,
    plan_comparisons,
    wider_is_better,
)
from mupcheck.spec import TransferSettings, load_grid


def grid_frame(optimum, widths=(32, 256), tokens=(2**20,), a=0.05, par="mup"):
    """A frame whose cell (width, tokens) has its loss minimum at optimum(width, tokens)."""
    rows = []
    for w in widths:
        for t in tokens:
            x0 = optimum(w, t)
            for lr in LRS:
                rows.append(dict(parametrization=par, width=w, tokens=t, lr_log2=lr, seed=0,
                                 loss=a * (lr - x0) ** 2 + 3.0 - 0.001 * w / 32, status="ok", data_repeats=0.5))
    return records_frame(rows)


def test_stable_optimum_transfers():
    verdicts = assert_transfer(grid_frame(lambda w, t: -7.2), axis="width")
    assert len(verdicts) == 1 and verdicts[0].passed
    assert verdicts[0].shift == pytest.approx(0.0) and verdicts[0].regret == pytest.approx(0.0, abs=1e-12)


def test_moved_optimum_breaks_with_a_message_that_pinpoints_it():
    df = grid_frame(lambda w, t: -6.6 if t == 2**20 else -8.0, widths=(256,), tokens=(2**20, 2**23))
    with pytest.raises(TransferError) as info:
        assert_transfer(df, axis="tokens")
    msg = str(info.value)
    assert "tokens 1M -> 8M at width 256 (mup): BREAKS: optimum moved -1.40 log2 (tolerance 0.5)" in msg
    assert re.search(r"reference +tokens=1M: lr\* = 2\^-6\.60", msg)
    assert re.search(r"other +tokens=8M: lr\* = 2\^-8\.00", msg)
    assert "lr_log2" in msg and "<- ref optimum" in msg and "<- other optimum" in msg
    assert "regret" in msg


def test_small_shift_with_large_regret_still_breaks():
    # A shift within tolerance on a very sharp curve costs more than 1% loss.
    df = grid_frame(lambda w, t: -7.0 if w == 32 else -7.45, a=0.5)
    verdict = assert_transfer(df, axis="width", tolerance_log2=0.5, max_regret=1.0)[0]
    assert abs(verdict.shift) < 0.5 and verdict.regret > 0.01
    with pytest.raises(TransferError, match=r"regret \d+\.\d+% \(max 1%\)"):
        assert_transfer(df, axis="width", tolerance_log2=0.5, max_regret=0.01)


def test_all_diverged_cell_fails_the_comparison():
    df = grid_frame(lambda w, t: -7.0)
    df.loc[df["width"] == 256, ["status", "loss"]] = ["diverged", None]
    with pytest.raises(TransferError, match="no optimum to compare"):
        assert_transfer(df, axis="width")


def test_plan_comparisons_and_ids(tmp_path):
    grid = load_grid(write_grid(tmp_path, extra='[transfer]\nexpect_break = ["sp:width"]\n'))
    comps = plan_comparisons(grid)
    assert [c.test_id for c in comps] == ["width[mup tokens=2K 16->32]", "width[sp tokens=2K 16->32]"]
    assert [is_expected_break(c, grid.transfer) for c in comps] == [False, True]


def test_tokens_axis_ids_and_reference():
    comp = Comparison("tokens", "mup", 256, 2**20, 2**23)
    assert comp.test_id == "tokens[mup width=256 1M->8M]"
    assert comp.cell(2**23) == ("mup", 256, 2**23)
    assert is_expected_break(comp, TransferSettings(expect_break=("tokens",)))


def test_judge_uses_grid_settings():
    optima = find_optima(grid_frame(lambda w, t: -7.0 if w == 32 else -6.2))
    comp = Comparison("width", "mup", 2**20, 32, 256)
    assert not judge(comp, optima, TransferSettings()).passed
    assert judge(comp, optima, TransferSettings(tolerance_log2=1.0, max_regret=0.05)).passed


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


def test_reference_width_setting(tmp_path):
    path = write_grid(tmp_path, extra="[transfer]\nreference_width = 32\n")
    path.write_text(path.read_text().replace("widths = [16, 32]", "widths = [16, 32, 64]"))
    ids = [c.test_id for c in plan_comparisons(load_grid(path))]
    assert ids[:2] == ["width[mup tokens=2K 32->16]", "width[mup tokens=2K 32->64]"]
