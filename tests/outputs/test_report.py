"""Report rendering against a golden file, and the report written from a real store."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from helpers import write_grid
from test_transfer import grid_frame

from mupcheck.analysis.collect import find_optima
from mupcheck.analysis.transfer import judge, plan_comparisons
from mupcheck.outputs.cli import main
from mupcheck.outputs.report import drift_section, render_report, verdict_outcome
from mupcheck.spec import load_grid

GOLDEN = Path(__file__).parent / "golden" / "report.md"


def _golden_inputs(tmp_path):
    grid = load_grid(write_grid(tmp_path, extra='[transfer]\nexpect_break = ["sp:width"]\n'))
    grid = type(grid)(**{**grid.__dict__, "widths": (32, 256), "base_width": 32, "tokens": (2**20, 2**23),
                         "lr_log2": (-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0), "path": "grids/golden.toml"})

    def optimum(par):
        return lambda w, t: (-7.0 - 0.4 * (t > 2**20)) if par == "mup" else (-6.0 if w == 32 else -9.5)

    df = grid_frame(optimum("mup"), widths=grid.widths, tokens=grid.tokens)
    sp = grid_frame(optimum("sp"), widths=grid.widths, tokens=grid.tokens, par="sp")
    df = pd.concat([df, sp], ignore_index=True)
    optima = find_optima(df)
    verdicts = [judge(c, optima, grid.transfer) for c in plan_comparisons(grid)]
    provenance = {"command": "`pytest grids/golden.toml`", "device": "cpu: 1 thread(s)", "torch": "2.13.0+cpu",
                  "mup": "1.0.0", "date": "2026-01-01T00:00:00+00:00", "wall time": "1.0 min"}
    return grid, df, optima, verdicts, provenance


def test_report_matches_golden_file(tmp_path):
    grid, df, optima, verdicts, provenance = _golden_inputs(tmp_path)
    checks = [("lint[mup]", "pass", "no finding at widths 32, 256"), ("wider[mup tokens=1M]", "pass", "a\nb | c")]
    text = render_report(grid, df, optima, verdicts, provenance, ["golden/optimum_vs_width.png"], checks,
                         drift_section(grid, df, optima))
    if os.environ.get("MUPCHECK_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "report changed; review it and rerun with MUPCHECK_UPDATE_GOLDEN=1"


def test_report_outcomes_match_pytest_semantics(tmp_path):
    grid, _, _, verdicts, _ = _golden_inputs(tmp_path)
    outcomes = {v.comparison.test_id: verdict_outcome(v, grid) for v in verdicts}
    assert outcomes["width[mup tokens=1M 32->256]"] == "pass"
    assert outcomes["width[sp tokens=1M 32->256]"] == "xfail (expected break)"
    assert outcomes["tokens[mup width=32 1M->8M]"] == "pass"  # -0.4 log2 is within the 0.5 tolerance
    assert outcomes["tokens[sp width=32 1M->8M]"] == "pass"


def test_cli_report_from_a_real_store(tmp_path, capsys):
    grid = write_grid(tmp_path)
    store, out = str(tmp_path / "store"), tmp_path / "reports"
    assert main(["report", str(grid), "--store", store, "--out", str(out)]) == 2  # nothing trained yet
    assert "8 run(s) missing from the store" in capsys.readouterr().err
    assert main(["run", str(grid), "--store", store, "--no-progress"]) == 0
    assert main(["report", str(grid), "--store", store, "--out", str(out)]) == 0
    text = (out / "tiny.md").read_text()
    for section in ("## Verdicts", "## Optimal learning rates", "## Plots", "## Warnings", "## Provenance"):
        assert section in text
    assert "`mupcheck report" in text and "torch" in text and "fingerprint" in text
    pngs = sorted(p.name for p in (out / "tiny").glob("*.png"))
    assert pngs == ["loss_vs_lr_tokens=2K.png", "optimum_vs_width.png"]
    assert all((out / "tiny" / p).stat().st_size > 10_000 for p in pngs)
