"""The sweeps teams bring, end to end (issue 35): one seed, ragged, empty columns, width and depth scaled together,
many batch sizes, octave rates, decimal budgets, a tracking system's own columns. Each table is simulated with a
known truth (tests/team_sweeps.py); each loads, judges and reports without a traceback, and its verdicts and
its published scaling law follow the truth."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from team_sweeps import Ladder, sweep_table

from mupcheck.analysis.transfer import assert_transfer
from mupcheck.collect import load_runs
from mupcheck.errors import GridError
from mupcheck.outputs.cli import main
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.spec import load_grid

GRID = 'name = "{name}"\nresults = "runs.csv"\nparametrization = "{par}"\n'


def _write(tmp_path: Path, table: pd.DataFrame, extra: str = "", name: str = "theirs", par: str = "sp") -> Path:
    table.to_csv(tmp_path / "runs.csv", index=False)
    path = tmp_path / f"{name}.toml"
    path.write_text(GRID.format(name=name, par=par) + extra)
    return path


def test_a_one_seed_ragged_size_ladder_with_empty_columns_judges_and_reports(tmp_path, capsys):
    rng = np.random.default_rng(1)
    ladder = Ladder(extra={"seed": "", "notes": "", "optimizer": "adamw"})
    table, _ = sweep_table(rng, ladder)
    grid = load_grid(_write(tmp_path, table))
    assert grid.tokens == (4_000_000_000, 11_400_000_000, 20_000_000_000, 40_000_000_000, 100_000_000_000)
    assert grid.seeds == (0,) and grid.parametrization == ("sp",) and len(grid.cells) == 28
    suite = GridSuite(grid)
    ids = [c.id for c in suite.planned.values()]
    assert "size[sp tokens=4B 960x7->1024x8]" in ids and "size[sp tokens=4B 960x7->2048x16]" not in ids  # ragged
    assert "size[sp tokens=11.4B 960x7->2048x16]" in ids
    assert main(["report", str(grid.path), "--out", str(tmp_path / "out"), "--json"]) == 0
    text = (tmp_path / "out" / "theirs.md").read_text()
    assert "one seed (no seed column)" in text and "optimizer adamw" in text and "schedule not stated" in text
    assert "6 model shapes scaled in width and depth together" in text and "## Scaling law" in text
    assert "3906250K" not in text and "tokens 4B, 11.4B, 20B, 40B, 100B" in text
    data = json.loads((tmp_path / "out" / "theirs.json").read_text())
    assert data["laws"]["sp"]["scaling"]["terms"] == ["params", "tokens"]
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("step", [0.5, 1.0])
def test_the_published_law_recovers_its_exponents_from_one_seed_sweeps(step):
    """Over 30 simulated one-seed sweeps of random curve shape: the 95% intervals of a (along N) and b (along D)
    cover the truth in at least 85% of sweeps, and the estimates are not biased by more than 0.05."""
    rng = np.random.default_rng(int(20 + 10 * step))
    truth = Ladder(step=step)
    hits, errors = Counter(), {"a": [], "b": []}
    for _ in range(30):
        table, _ = sweep_table(rng, truth)
        with pytest.MonkeyPatch.context() as mp:
            import tempfile
            with tempfile.TemporaryDirectory() as d:
                mp.chdir(d)
                law = GridSuite(load_grid(_write(Path(d), table))).scaling("sp")
        assert law is not None
        for name, true in (("a", truth.a), ("b", truth.b)):
            value, iv = law.term("params" if name == "a" else "tokens")
            estimate = -value
            errors[name].append(estimate - true)
            hits[name] += iv is not None and -iv[1] <= true <= -iv[0]
    for name in ("a", "b"):
        assert hits[name] >= 0.85 * 30, (name, hits[name])
        assert abs(float(np.mean(errors[name]))) <= 0.05, (name, np.mean(errors[name]))


def test_ten_batch_sizes_give_the_batch_exponent(tmp_path):
    """One shape, one budget, batch sizes 2^5 .. 2^14 (equal budgets), the optimum growing as B^0.3."""
    rng = np.random.default_rng(3)
    truth = Ladder(shapes=((1024, 8),), budgets=(2e10,), batches=tuple(2**k for k in range(5, 15)), g=0.3,
                   missing=())
    table, _ = sweep_table(rng, truth)
    suite = GridSuite(load_grid(_write(tmp_path, table)))
    law = suite.axis_law("sp", "batch_size")
    assert law is not None and law.cells == 10
    assert abs(law.slope - 0.3) < 0.1
    assert len([c for c in suite.planned.values() if c.kind == "transfer"]) == 9


def test_size_comparisons_follow_the_truth_with_one_seed(tmp_path):
    """Where the optimum stays along the ladder (a = 0, b = 0), no size comparison breaks; where it falls by a
    = 0.6 per doubling of N (two octaves from the smallest shape to the largest), the widest comparisons break."""
    outcomes = {}
    for a in (0.0, 0.6):
        counts: Counter = Counter()
        for k in range(6):
            rng = np.random.default_rng(40 + k)
            table, _ = sweep_table(rng, Ladder(a=a, b=0.0, missing=()))
            suite = GridSuite(load_grid(_write(tmp_path, table, name=f"s{k}")))
            for check_id, v in suite.verdicts.items():
                if check_id.startswith("size[") and "960x7->2048x16" in check_id:
                    counts[v.outcome] += 1
        outcomes[a] = counts
    assert outcomes[0.0]["breaks"] == 0, outcomes
    assert outcomes[0.6]["breaks"] >= 0.8 * sum(outcomes[0.6].values()), outcomes
    assert outcomes[0.6]["transfers"] == 0


def test_a_user_width_sweep_with_empty_columns_breaks_where_the_widest_diverged(tmp_path):
    """A muP GPT-2 width sweep from a public issue thread, as posted: 4 widths x rates an octave apart, one seed,
    empty tokens, depth and batch_size columns. The widest model diverged at the smallest one's optimum: a
    break, not 'inconclusive: one seed'."""
    rows = []
    for width, x0 in ((96, -9.5), (192, -10.3), (384, -11.1), (768, -12.4)):
        for x in range(-15, -7):
            diverged = width == 768 and x >= -10
            loss = 3.2 + 0.06 * (x - x0) ** 2 + 0.02 * max(0, x - x0) ** 3
            rows.append({"width": width, "tokens": "", "depth": "", "batch_size": "", "lr": 2.0**x,
                         "loss": "nan" if diverged else loss, "seed": 0})
    path = _write(tmp_path, pd.DataFrame(rows), par="mup")
    grid = load_grid(path)
    assert grid.not_stated == ("tokens", "depth", "batch_size")  # their coordinates are placeholders, and say so
    suite = GridSuite(grid)
    verdict = suite.verdicts["width[mup 96->768]"]
    assert verdict.outcome == "breaks" and "diverged" in verdict.reason, verdict.summary()
    assert suite.noise("mup").optimum is not None and suite.noise("mup").optimum.source == "propagated"


def test_one_entry_point_serves_both_kinds_of_grid(tmp_path):
    """docs/usage.md's 'From your own tests' snippet, on a results grid (it raised ModuleNotFoundError)."""
    rng = np.random.default_rng(5)
    table, _ = sweep_table(rng, Ladder(shapes=((256, 4), (512, 4), (1024, 4)), budgets=(1e9,), a=0.0, b=0.0,
                                       missing=(), extra={"seed": 0}))
    df = load_runs(load_grid(_write(tmp_path, table, par="mup")))
    verdicts = []
    try:
        verdicts = assert_transfer(df, axis="width", parametrization="mup")
    except AssertionError as e:  # one seed may leave a comparison inconclusive: said, not a crash
        assert "inconclusive" in str(e)
    assert all(v.outcome == "transfers" for v in verdicts)


def test_a_tracking_systems_own_status_column_is_mapped_ignored_or_translated(tmp_path):
    """An MLflow export: its `status` column says FINISHED, FAILED or RUNNING (mupcheck's says ok, unstable,
    diverged). As documented it failed at row 1; now the grid translates it, or ignores it."""
    rng = np.random.default_rng(6)
    table, _ = sweep_table(rng, Ladder(shapes=((256, 4), (512, 4)), budgets=(1e9,), missing=()))
    table["status"] = "FINISHED"
    table.loc[3, "status"] = "RUNNING"
    path = _write(tmp_path, table)
    with pytest.raises(GridError, match=r"row 1: `status`: 'FINISHED' is not one of ok, unstable, diverged \(a "
                                        r"tracking system's own status\? translate it in the grid, \[results.status\] "
                                        r"FINISHED = \"ok\""):
        load_grid(path)
    path.write_text('name = "theirs"\nparametrization = "sp"\n[results]\npath = "runs.csv"\n[results.status]\n'
                    'FINISHED = "ok"\nFAILED = "diverged"\nRUNNING = "skip"\n')
    grid = load_grid(path)
    assert grid.results is not None and grid.results.skipped == 1
    assert len(GridSuite(grid).df) == len(table) - 1
    path.write_text('name = "theirs"\nparametrization = "sp"\n[results]\npath = "runs.csv"\nignore = ["status"]\n')
    assert len(GridSuite(load_grid(path)).df) == len(table)


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("lr", "abc", "row 3: `lr`: 'abc' is not a number"),
    ("width", "1.5", "row 3: `width`: must be an integer >= 1, got '1.5'"),
    ("depth", "-2", "row 3: `depth`: must be an integer >= 1, got '-2'"),
    ("params", "0", "row 3: `params`: must be a positive parameter count"),
])
def test_bad_cells_are_one_line_naming_file_row_and_column_with_exit_2(tmp_path, capsys, column, value, expected):
    rng = np.random.default_rng(7)
    table, _ = sweep_table(rng, Ladder(shapes=((256, 4), (512, 8)), budgets=(1e9,), missing=()))
    table["params"] = [12 * d * w * w for w, d in zip(table["width"], table["depth"])]
    table[column] = table[column].astype(object)
    table.loc[2, column] = value
    path = _write(tmp_path, table)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "runs.csv" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_predict_reads_the_scaling_law_and_says_how_far_it_extrapolates(tmp_path, capsys):
    rng = np.random.default_rng(8)
    table, _ = sweep_table(rng, Ladder())
    path = _write(tmp_path, table)
    assert main(["predict", str(path), "--parametrization", "sp", "--params", "7e9", "--tokens", "1T"]) == 0
    out = capsys.readouterr().out
    assert "predicted optimal learning rate for sp at N = 7e+09, D = 1e+12" in out
    assert "octaves above the largest measured parameter count" in out
    truth = Ladder().c - 0.35 * math.log2(7e9) - 0.10 * math.log2(1e12)
    predicted = float(out.split(": 2^")[1].split()[0])
    assert abs(predicted - truth) < 1.0
