"""Results trained elsewhere: read, validated, judged like the suite's own runs; bad input is one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from mupcheck.analysis.optima import find_optima
from mupcheck.collect import collect_results, frame_of
from mupcheck.errors import GridError
from mupcheck.outputs.cli import main
from mupcheck.outputs.json_report import SCHEMA
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.sources.files import runs_table, write_results
from mupcheck.sources.tables import read_results
from mupcheck.spec import SETTINGS_KEYS, load_grid
from mupcheck.store import Store

ROOT = Path(__file__).resolve().parents[1]
CONSTANT = ROOT / "reports" / "cpu_horizon_constant.store"


def _committed_records():
    return list(Store(CONSTANT).records())


def _results_grid(tmp_path: Path, body: str, name: str = "theirs.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


SETTINGS = """
[refine]
step_log2 = 0.25
span_log2 = 1.0
[transfer]
lr_rule = "power"
lr_rule_fit_tokens = [131072, 262144, 524288]
"""


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_the_committed_records_exported_and_imported_give_the_same_verdicts(tmp_path, suffix):
    """cpu_horizon_constant's 325 records, written as a results table and read back by a results grid: every
    comparison, power rule and stability item comes out as it does from the records themselves."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    records = _committed_records()
    assert len(records) == 325
    write_results(runs_table(records, SETTINGS_KEYS), tmp_path / f"runs{suffix}")
    imported = GridSuite(load_grid(_results_grid(tmp_path, f'name = "theirs"\nresults = "runs{suffix}"\n' + SETTINGS)))
    own = GridSuite(load_grid(ROOT / "grids" / "cpu_horizon_constant.toml"), frame=frame_of(records))
    assert imported.grid.tokens == own.grid.tokens and imported.grid.seeds == own.grid.seeds
    assert set(imported.verdicts) == set(own.verdicts) and len(own.verdicts) == 6
    for check_id, v in own.verdicts.items():
        w = imported.verdicts[check_id]
        assert (w.outcome, w.reason) == (v.outcome, v.reason)
        # CSV keeps 16 significant digits: the numbers agree to far below anything the report prints.
        assert w.shift == pytest.approx(v.shift, abs=1e-9) and w.regret == pytest.approx(v.regret, abs=1e-9)
    assert {k: s.outcome for k, s in imported.stability.items()} == {k: s.outcome for k, s in own.stability.items()}
    assert imported.drift("mup").beta == pytest.approx(own.drift("mup").beta, abs=1e-9)


def test_the_example_results_grid_reads_a_wandb_style_export(tmp_path):
    """grids/example_results.toml maps a W&B-style export's columns (config.lr, summary.val_loss, ...) and
    judges it as the same sweep trained here."""
    grid = load_grid(ROOT / "grids" / "example_results.toml")
    assert grid.imported and grid.widths == (32,) and len(grid.tokens) == 5 and grid.seeds == (0, 1, 2, 3, 4)
    imported = GridSuite(grid)
    own = GridSuite(load_grid(ROOT / "grids" / "cpu_horizon_constant.toml"), frame=frame_of(_committed_records()))
    for check_id, v in imported.verdicts.items():
        assert v.outcome == own.verdicts[check_id].outcome
        assert v.shift == pytest.approx(own.verdicts[check_id].shift, abs=1e-9)
    assert [o.check.id for o in imported.outcomes()][0].startswith("tokens[")  # no model: no lint item


def test_mlflow_style_columns_and_a_glob_of_files(tmp_path):
    rows = runs_table(_committed_records(), SETTINGS_KEYS)
    table = rows.rename(columns={"width": "params.d_model", "tokens": "params.tokens", "lr": "params.lr",
                                 "seed": "params.seed", "loss": "metrics.val_loss"})
    table = table[["params.d_model", "params.tokens", "params.lr", "params.seed", "metrics.val_loss"]]
    (tmp_path / "runs").mkdir()
    write_results(table.iloc[:200], tmp_path / "runs" / "part1.csv")
    write_results(table.iloc[200:], tmp_path / "runs" / "part2.csv")
    grid = load_grid(_results_grid(tmp_path, 'name = "mlflow"\n[results]\npath = "runs/*.csv"\n[results.columns]\n'
                                   'width = "params.d_model"\ntokens = "params.tokens"\nlr = "params.lr"\n'
                                   'seed = "params.seed"\nloss = "metrics.val_loss"\n'))
    assert len(collect_results(grid)) == 325


def _bad(tmp_path: Path, csv: str, extra: str = "") -> str:
    (tmp_path / "runs.csv").write_text(csv)
    path = _results_grid(tmp_path, f'name = "bad"\nresults = "runs.csv"\n{extra}')
    with pytest.raises(GridError) as info:
        load_grid(path)
    message = str(info.value)
    assert "\n" not in message
    return message


HEADER = "width,tokens,lr,seed,loss\n"


@pytest.mark.parametrize(("csv", "extra", "expected"), [
    ("width,tokens,lr,seed\n32,1000,0.01,0\n", "", "runs.csv: no column `loss`"),
    (HEADER + "32,1000,0.01,0,2.5\n32,1000,0.01,1,abc\n", "", "runs.csv: row 2: `loss`: 'abc' is not a number"),
    (HEADER + "32,1000,0.01,0,2.5\n32,1000,0.01,0,2.6\n", "",
     "row 1 and", ),
    (HEADER + "-32,1000,0.01,0,2.5\n", "", "row 1: `width`: must be an integer >= 1, got '-32'"),
    ("", "", "runs.csv: "),
    (HEADER, "", "runs.csv: has no rows"),
    (HEADER + "32,1000,-0.01,0,2.5\n", "", "row 1: `lr`: must be a positive learning rate"),
    ("width,tokens,lr,seed,loss,status\n32,1000,0.01,0,2.5,crashed\n", "",
     "row 1: `status`: 'crashed' is not one of ok, unstable, diverged"),
    ("width,tokens,lr,seed,loss,schedule\n32,1000,0.01,0,2.5,cosine\n32,1000,0.01,1,2.5,constant\n", "",
     "several `schedule` values (constant, cosine): set schedule = ... in the grid"),
    (HEADER + "32,1000,0.01,0,2.5\n", '[results.columns]\nloss = "summary.val_loss"\n',
     "the grid's [results.columns] table"),
])
def test_bad_input_is_one_line_naming_the_file_row_and_column(tmp_path, csv, extra, expected):
    if extra.startswith("[results.columns]"):
        (tmp_path / "runs.csv").write_text(csv)
        path = _results_grid(tmp_path, f'name = "bad"\n[results]\npath = "runs.csv"\n{extra}')
        with pytest.raises(GridError, match="no column 'summary.val_loss' \\(mapped to `loss` by "
                                            "\\[results.columns\\]\\); its columns: 'width'"):
            load_grid(path)
        return
    message = _bad(tmp_path, csv, extra)
    assert expected in message, message
    if expected == "row 1 and":
        assert "runs.csv: row 1 and " in message and "runs.csv: row 2 are the same run" in message
        assert 'duplicates = "mean"' in message


def test_a_missing_file_and_an_empty_glob(tmp_path):
    with pytest.raises(GridError, match="no such results file 'nope.csv'"):
        load_grid(_results_grid(tmp_path, 'name = "x"\nresults = "nope.csv"\n'))
    with pytest.raises(GridError, match="no file matches 'runs/\\*.csv'"):
        load_grid(_results_grid(tmp_path, 'name = "x"\nresults = "runs/*.csv"\n'))
    with pytest.raises(GridError, match="trains a model or reads `results`"):
        load_grid(_results_grid(tmp_path, 'name = "x"\nmodel = "gpt"\nresults = "nope.csv"\n'))


def test_duplicates_mean_averages_reruns_and_a_diverged_rerun_wins(tmp_path):
    csv = (HEADER + "32,1000,0.01,0,2.5\n32,1000,0.01,0,2.7\n32,1000,0.02,0,2.4\n32,1000,0.02,0,nan\n"
           "32,1000,0.04,0,2.6\n")
    (tmp_path / "runs.csv").write_text(csv)
    found = read_results("runs.csv", tmp_path, "g.toml", duplicates="mean")
    by_lr = found.frame.set_index("lr_log2")
    at = {lr: round(math.log2(lr), 6) for lr in (0.01, 0.02)}  # rates are kept to 1e-6 log2
    assert by_lr.loc[at[0.01], "loss"] == pytest.approx(2.6)
    assert by_lr.loc[at[0.02], "status"] == "diverged" and math.isnan(by_lr.loc[at[0.02], "loss"])
    assert found.combined == 2


def test_a_curve_lets_the_suite_judge_a_run_unstable(tmp_path):
    (tmp_path / "c.csv").write_text("step,loss\n100,4.0\n200,3.0\n300,5.5\n400,3.2\n")
    csv = ("width,tokens,lr,seed,loss,initial_loss,curve,train_loss@100,train_loss@200\n"
           '32,1000,0.01,0,3.0,6.0,"[4.0, 3.0, 2.9]",,\n'
           "32,1000,0.02,0,3.2,6.0,c.csv,,\n")
    (tmp_path / "runs.csv").write_text(csv.replace(",train_loss@100,train_loss@200", "").replace(",,\n", "\n"))
    frame = read_results("runs.csv", tmp_path, "g.toml").frame
    assert list(frame["status"]) == ["ok", "unstable"]  # the file's curve gave back 2.5 of the 3.0 learned
    stepped = "width,tokens,lr,seed,loss,initial_loss,train_loss@100,train_loss@200\n32,1000,0.01,0,6.2,6.0,5.0,6.1\n"
    (tmp_path / "runs.csv").write_text(stepped)
    assert list(read_results("runs.csv", tmp_path, "g.toml").frame["status"]) == ["unstable"]


def test_a_ragged_sweep_is_judged_on_what_each_seed_ran(tmp_path):
    """Imported sweeps are rarely complete: a seed without some rates still gives its optimum."""
    table = runs_table(_committed_records(), SETTINGS_KEYS)
    table = table[table["tokens"] == 131072]
    ragged = table.drop(table[(table["seed"] == 4) & (table["lr_log2"] == -5.5)].index)
    write_results(ragged, tmp_path / "runs.csv")
    cell = find_optima(collect_results(load_grid(_results_grid(tmp_path, 'name = "r"\nresults = "runs.csv"\n'))))
    optimum = cell[("mup", 32, 131072)]
    assert optimum.found and len(optimum.found_optima) == 5 and math.isfinite(optimum.optimum_log2)


def test_cli_report_json_round_trip_and_refinement_advice(tmp_path, capsys):
    write_results(runs_table(_committed_records(), SETTINGS_KEYS), tmp_path / "runs.csv")
    grid = _results_grid(tmp_path, 'name = "theirs"\nresults = "runs.csv"\n' + SETTINGS)
    assert main(["run", str(grid)]) == 2
    assert "nothing to train" in capsys.readouterr().err
    assert main(["report", str(grid), "--json", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "run next: mup width=32 tokens=512K: run lr_log2" in err
    data = json.loads((tmp_path / "out" / "theirs.json").read_text())
    suite = GridSuite(load_grid(grid))
    assert data["schema"] == SCHEMA and data["grid"]["imported"] is True
    assert {c["id"]: c["outcome"] for c in data["comparisons"]} == {k: v.outcome for k, v in suite.verdicts.items()}
    one = next(c for c in data["comparisons"] if c["id"] == "tokens[mup width=32 128K->2M]")
    v = suite.verdicts["tokens[mup width=32 128K->2M]"]
    assert one["shift"] == pytest.approx(v.shift) and one["regret_interval"] == pytest.approx(list(v.regret_interval))
    cells = {(c["width"], c["tokens"]): c for c in data["cells"]}
    assert cells[(32, 2097152)]["margin_log2"] == pytest.approx(suite.optima[("mup", 32, 2097152)].margin)
    assert data["laws"]["mup"]["tokens"]["lack_of_fit"] is True and data["laws"]["mup"]["width"] is None
    # The schema the README documents, key for key: a tool that reads it must not be surprised.
    assert set(data) == {"schema", "grid", "tuned", "counts", "outcomes", "cells", "comparisons", "stability",
                         "missing", "noise", "laws", "provenance"}
    assert data["noise"]["mup"]["optimum"]["source"] == "pooled seeds"
    assert data["tuned"] == {"key": "lr", "sweep_log2": [], "joint": False}
    assert set(data["cells"][0]) == {"parametrization", "width", "tokens", "depth", "batch_size", "lr_log2",
                                     "interval", "censored", "n_seeds", "n_found", "loss", "stability_log2",
                                     "stability_interval", "stability_censored", "margin_log2", "margin_interval",
                                     "flags", "tuned", "optimum_log2", "joint_lr_log2", "joint_lr_interval",
                                     "resolution"}
    assert data["cells"][0]["optimum_log2"] == data["cells"][0]["lr_log2"]
    assert set(one) == {"id", "kind", "axis", "parametrization", "fixed", "at", "ref", "other", "outcome", "verdict",
                        "transferred", "shift", "interval", "noise", "band", "band_outer", "band_sides",
                        "band_source", "regret", "regret_interval", "regret_source", "regret_noise",
                        "regret_diverged", "regret_read_at", "regret_diverged_nearby", "reason", "borderline",
                        "beta"}
    assert set(data["stability"][0]) == {"id", "axis", "parametrization", "fixed", "ref", "other", "outcome",
                                         "transferred", "boundary", "boundary_censored", "margin", "interval",
                                         "min_margin", "reason"}
    report = (tmp_path / "out" / "theirs.md").read_text()
    assert "## Rates to run next" in report and "runs.csv` (sha256" in report and "nothing was trained" in report


def test_pytest_judges_a_results_grid_and_a_broken_one_is_one_collection_error(pytester):
    write_results(runs_table(_committed_records(), SETTINGS_KEYS), pytester.path / "runs.csv")
    (pytester.path / "grids").mkdir()
    (pytester.path / "grids" / "theirs.toml").write_text('name = "theirs"\nresults = "../runs.csv"\n' + SETTINGS)
    result = pytester.runpytest("grids/theirs.toml", "-p", "no:cacheprovider", "--mupcheck-reports", "out")
    result.assert_outcomes(passed=5, skipped=5)
    assert (pytester.path / "out" / "theirs.json").is_file() and "run next:" in result.stderr.str()
    (pytester.path / "runs.csv").write_text(HEADER + "32,1000,0.01,0,x\n")
    result = pytester.runpytest("grids/theirs.toml", "-p", "no:cacheprovider", "--mupcheck-no-report")
    assert result.ret == 2 and "row 1: `loss`: 'x' is not a number" in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_results_survive_pandas_quirks(tmp_path):
    """A column pandas would read as float, an integer written 1e6, stray spaces in headers."""
    (tmp_path / "runs.csv").write_text(" width ,tokens,lr_log2,seed,loss\n32.0,1e6,-8,0,2.5\n32,1e6,-7,0,2.4\n"
                                       "32,1e6,-6,0,2.6\n")
    frame = read_results("runs.csv", tmp_path, "g.toml").frame
    assert list(frame["width"]) == [32, 32, 32] and list(frame["tokens"]) == [1000000] * 3
    assert isinstance(frame, pd.DataFrame)
