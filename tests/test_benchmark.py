"""The benchmark script runs end to end on CPU (tiny sizes) and writes its table as JSON rows.

Speed itself is measured by running the script on a GPU, never asserted here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
from helpers import write_grid

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fused_speed.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("fused_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_rows_and_the_reference_report(tmp_path):
    grid = write_grid(tmp_path)
    path = _load_script().main(["--device", "cpu", "--grid", str(grid), "--widths", "16", "32", "--models", "2",
                                "--steps", "6", "--warmup-steps", "1", "--fuse", "2",
                                "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")])
    rows = json.loads(path.read_text())
    assert [(r["mode"], r["width"], r["models"]) for r in rows] == [
        ("solo", 16, 1), ("fused", 16, 2), ("solo", 32, 1), ("fused", 32, 2), ("fused", None, 2)]
    for row in rows:
        assert {"tokens_per_s", "mfu", "device", "torch", "mup", "date"} <= set(row)
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] and row["device"].startswith("cpu")
    grid_row = rows[-1]
    assert grid_row["runs"] == 8 and grid_row["wall_time_s"] > 0
    # Throughput over the tokens the grid's 8 runs trained (none diverge here: their whole budgets).
    assert grid_row["tokens_per_s"] == pytest.approx(8 * 2048 / grid_row["wall_time_s"])
    # Per width, from the run records: muP and SP groups of 2 (so up to two first steps), none solo.
    widths = grid_row["widths"]
    assert [(w["width"], w["runs"], w["group_sizes"], w["solo"], w["diverged"]) for w in widths] == [
        (16, 4, [2], 0, 0), (32, 4, [2], 0, 0)]
    for w in widths:
        assert 0 < w["wall_time_s"] < grid_row["wall_time_s"] and w["canary_max_rel_diff"] < 0.01
        assert 1 <= len(w["first_step_s"]) <= 2 and min(w["first_step_s"]) > 0
    report = (tmp_path / "reports" / "tiny.md").read_text()
    assert "python benchmarks/fused_speed.py --device cpu" in report and "fused x2: 8 runs" in report


def test_pool_of_solo_processes_is_a_row(tmp_path):
    grid = write_grid(tmp_path)
    path = _load_script().main(["--device", "cpu", "--grid", str(grid), "--widths", "16", "--models", "2",
                                "--steps", "6", "--warmup-steps", "1", "--skip-grid", "--pool", "2",
                                "--pool-width", "16", "--pool-seconds", "1", "--out", str(tmp_path / "results")])
    rows = json.loads(path.read_text())
    pool = rows[-1]
    assert (pool["mode"], pool["width"], pool["models"]) == ("pool", 16, 2)
    assert pool["tokens_per_s"] > 0 and len(pool["steps_per_process"]) == 2 and min(pool["steps_per_process"]) > 0


def test_an_interrupted_grid_reports_what_it_finished(tmp_path, monkeypatch):
    script = _load_script()
    real = script.run_grid

    def interrupted(*args, **kwargs):
        summary = real(*args, **kwargs)
        summary.interrupted = True  # as after Ctrl-C or `timeout -s INT`: the runs so far are stored
        return summary

    monkeypatch.setattr(script, "run_grid", interrupted)
    path = script.main(["--device", "cpu", "--grid", str(write_grid(tmp_path)), "--grid-only", "--fuse", "2",
                        "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")])
    row = json.loads(path.read_text())[-1]
    assert row["interrupted"] and row["report"] is None and row["runs_done"] == 8
    assert not (tmp_path / "reports" / "tiny.md").exists()


def test_grid_only_refuses_a_store_that_holds_runs(tmp_path):
    from mupcheck.errors import MupcheckError

    grid = write_grid(tmp_path)
    script = _load_script()
    args = ["--device", "cpu", "--grid", str(grid), "--grid-only", "--fuse", "2", "--store", str(tmp_path / "store"),
            "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    rows = json.loads(script.main(args).read_text())
    assert [(r["mode"], r["runs"]) for r in rows] == [("fused", 8)]
    assert len(list((tmp_path / "store" / "runs").glob("*.json"))) == 8  # kept for pytest grids/...
    with pytest.raises(MupcheckError, match="already holds runs"):
        script.main(args)


def test_grid_compile_overrides_the_grid_files_setting(tmp_path, monkeypatch):
    script = _load_script()
    real, seen = script.run_grid, []

    def spy(grid, *args, **kwargs):
        seen.append(grid.compile)
        return real(dataclasses.replace(grid, compile=False), *args, **kwargs)  # CPU: no inductor build here

    monkeypatch.setattr(script, "run_grid", spy)
    path = script.main(["--device", "cpu", "--grid", str(write_grid(tmp_path)), "--grid-only", "--fuse", "2",
                        "--grid-compile", "on", "--out", str(tmp_path / "results"),
                        "--reports", str(tmp_path / "reports")])
    assert seen == [True] and json.loads(path.read_text())[-1]["compiled"] is True


def test_the_shared_runs_benchmark_compares_both_sweeps_on_tiny_copies_of_the_horizon_grids(tmp_path):
    """benchmarks/shared_runs.py end to end: each horizon grid trained with and without shared runs, the same
    numbers and the same report either way; its times are measured, never asserted here."""
    root = Path(__file__).resolve().parents[1]
    for name in ("cpu_horizon_cosine", "cpu_horizon_constant"):
        text = (root / "grids" / f"{name}.toml").read_text()
        (tmp_path / f"{name}.toml").write_text(
            text.replace("widths = [32]", "widths = [16]").replace("base_width = 32", "base_width = 16")
            .replace("tokens = [131072, 262144, 524288, 1048576, 2097152]", "tokens = [16384, 32768, 65536]")
            .replace("warmup_tokens = 16384", "warmup_tokens = 2048")
            .replace("eval_tokens = 16384", "eval_tokens = 512")
            .replace("lr_rule_fit_tokens = [131072, 262144, 524288]", "lr_rule_fit_tokens = [16384, 32768]"))
    spec = importlib.util.spec_from_file_location("shared_runs", root / "benchmarks" / "shared_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.main(["--grid-dir", str(tmp_path), "--rates", "-6", "-5", "--seeds", "0", "1",
                        "--out", str(tmp_path / "out")])
    result = json.loads(path.read_text())
    assert [r["grid"] for r in result["rows"]] == ["horizon_constant", "horizon_wsd", "horizon_cosine"]
    for row in result["rows"]:
        assert row["runs"] == 12 and row["same_numbers"] and row["same_report"]
        assert row["shared_missing"] == row["alone_missing"] == 0  # a report of every run trained
        assert row["shared_s"] > 0 and row["alone_s"] > 0
    assert result["torch"] and result["mup"] and result["command"].startswith("python benchmarks/shared_runs.py")
