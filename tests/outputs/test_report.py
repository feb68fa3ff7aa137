"""Report rendering against a golden file, and the report written from a real store."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd
from helpers import curve_frame, write_grid

from mupcheck.outputs.cli import main
from mupcheck.outputs.report import render_report
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid

GOLDEN = Path(__file__).parent / "golden" / "report.md"


def _golden_suite(tmp_path) -> GridSuite:
    grid = load_grid(write_grid(tmp_path, extra='[transfer]\nexpect_break = ["sp:width"]\n'))
    grid = dataclasses.replace(grid, widths=(32, 256), base_width=32, tokens=(2**20, 2**23), seeds=(0, 1, 2),
                               lr_log2=(-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0), path="grids/golden.toml")

    def optimum(par):
        return lambda w, t: (-7.0 - 0.4 * (t > 2**20)) if par == "mup" else (-6.0 if w == 32 else -9.0)

    frames = [curve_frame(optimum(par), widths=grid.widths, tokens=grid.tokens, par=par, seed_sd=0.05,
                          a_left=0.05, a_right=0.15) for par in ("mup", "sp")]
    return GridSuite(plan_grid(grid), None, frame=pd.concat(frames, ignore_index=True))


PROVENANCE = {"command": "`pytest grids/golden.toml`", "device": "cpu: 1 thread(s)", "torch": "2.13.0+cpu",
              "mup": "1.0.0", "date": "2026-01-01T00:00:00+00:00", "wall time": "1.0 min"}


def test_report_matches_golden_file(tmp_path):
    text = render_report(_golden_suite(tmp_path), PROVENANCE, ["golden/optimum_vs_width.png"])
    if os.environ.get("MUPCHECK_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "report changed; review it and rerun with MUPCHECK_UPDATE_GOLDEN=1"


def test_report_and_items_render_the_same_outcomes(tmp_path):
    suite = _golden_suite(tmp_path)
    outcomes = {o.check.id: o.outcome for o in suite.outcomes()}
    assert outcomes["width[sp tokens=1M 32->256]"] == "xfail"  # the SP control breaks, as expected
    assert outcomes["width[mup tokens=1M 32->256]"] == "pass"
    text = render_report(suite, PROVENANCE, [])
    assert "xfail (expected break)" in text and "## Noise floor" in text and "3 seeds" in text
    # The drift law the report prints is the suite's fit: the same numbers as `mupcheck predict` would use.
    fit = suite.drift("mup")
    assert f"{fit.beta:.3f}" in text and f"a = {fit.intercepts[32]:.2f} (joint fit)" in text


def test_cli_report_from_a_real_store(tmp_path, capsys):
    grid = write_grid(tmp_path)
    store, out = str(tmp_path / "store"), tmp_path / "reports"
    assert main(["report", str(grid), "--store", store, "--out", str(out)]) == 2  # nothing trained yet
    assert "8 run(s) missing from the store" in capsys.readouterr().err
    assert main(["run", str(grid), "--store", store, "--no-progress"]) == 0
    assert main(["report", str(grid), "--store", store, "--out", str(out)]) == 0
    text = (out / "tiny.md").read_text()
    for section in ("## Verdicts", "## Noise floor", "## Optimal learning rates", "## Plots", "## Warnings",
                    "## Provenance"):
        assert section in text
    assert "`mupcheck report" in text and "torch" in text and "fingerprint" in text
    pngs = sorted(p.name for p in (out / "tiny").glob("*.png"))
    assert pngs == ["loss_vs_lr_tokens=2K.png", "optimum_vs_width.png"]
    assert all((out / "tiny" / p).stat().st_size > 10_000 for p in pngs)
