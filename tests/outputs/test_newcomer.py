"""What a new user tripped over (issue 15): where reports land, write failures, errors under pytest,
progress in logs, the command line's small promises."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_GRID, two_budget_grid, write_grid

from mupcheck.outputs.cli import main
from mupcheck.sweep.progress import ProgressBar, SweepSummary


def _grid(pytester, extra: str = "", model: str = "gpt") -> Path:
    grids = pytester.path / "grids"
    grids.mkdir(exist_ok=True)
    path = grids / "tiny.toml"
    text = TINY_GRID.format(model=model, extra=extra)
    path.write_text(text if ":" not in model else text.replace('["mup", "sp"]', '["mup"]', 1))
    return path


def test_reports_land_where_pytest_was_started_even_with_a_store_elsewhere(pytester, tmp_path_factory):
    _grid(pytester)
    store = tmp_path_factory.mktemp("elsewhere") / "store"
    result = pytester.runpytest("grids/tiny.toml", "--mupcheck-store", str(store), "-p", "no:cacheprovider")
    assert (pytester.path / "reports" / "tiny.md").is_file()
    assert "mupcheck report: " + str(pytester.path / "reports" / "tiny.md") in result.stdout.str()


def test_an_unwritable_report_folder_is_one_line_and_exit_2(pytester):
    _grid(pytester)
    (pytester.path / "taken").write_text("a file, not a folder")
    result = pytester.runpytest("grids/tiny.toml", "--mupcheck-store", "store", "--mupcheck-reports", "taken/reports",
                                "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == 2 and "Traceback" not in out
    # Found before training (issue 28), not after it: nothing was trained.
    assert "cannot write reports to taken/reports: Not a directory" in out + result.stderr.str()
    assert "--mupcheck-reports DIR" in out + result.stderr.str() and not (pytester.path / "store" / "runs").exists()


def test_cli_report_to_an_unwritable_folder_is_one_line(tmp_path, capsys):
    grid = write_grid(tmp_path)
    store = str(tmp_path / "store")
    assert main(["run", str(grid), "--store", store, "--no-progress"]) == 0
    (tmp_path / "taken").write_text("")
    capsys.readouterr()
    assert main(["report", str(grid), "--store", store, "--out", str(tmp_path / "taken" / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the report" in err and "--out DIR" in err


def test_a_store_that_cannot_be_written_stops_before_training(pytester, monkeypatch):
    import tempfile

    _grid(pytester)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # as a read-only or foreign store does
    result = pytester.runpytest("grids/tiny.toml", "--mupcheck-store", "store", "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == 2 and "INTERNALERROR" not in out and "Traceback" not in out
    assert "cannot write to the result store at store/runs: Permission denied" in out and "--mupcheck-store" in out
    assert not list((pytester.path / "store" / "runs").glob("*.json"))


def test_a_bad_model_is_one_collection_error_not_a_failure_per_item(pytester):
    (pytester.path / "brokenmodel.py").write_text("def build(width):\n    raise RuntimeError('no such layer')\n")
    _grid(pytester, model="brokenmodel:build")
    result = pytester.runpytest("grids/tiny.toml", "--mupcheck-store", "store", "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == 2 and "1 error" in out and "failed" not in out.splitlines()[-1]
    assert out.count("build(16) raised RuntimeError: no such layer") == 1


def test_missing_data_folder_is_one_collection_error(pytester):
    _grid(pytester)
    path = pytester.path / "grids" / "tiny.toml"
    path.write_text(path.read_text().replace('data = "synthetic"', 'data = "no_such_folder"'))
    result = pytester.runpytest("grids/tiny.toml", "--mupcheck-store", "store", "-p", "no:cacheprovider")
    assert result.ret == 2 and result.stdout.str().count("no_such_folder does not exist") == 1


def test_progress_is_plain_lines_when_not_on_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(SweepSummary(total=2), enabled=True, stream=stream)
    bar.handle(("start", 0, "gpt mup width=16"))
    bar.handle(("done", 0, "k1", True, "ok"))
    bar.handle(("done", 0, "k2", True, "ok"))
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("mupcheck: runs 0/2; training gpt mup width=16") and lines[-1] == "mupcheck: runs 2/2"
    assert "\r" not in stream.getvalue()  # no bar frames in a log


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("mupcheck 0.")


def test_coord_check_errors_name_the_flag_that_was_typed(capsys):
    assert main(["coord-check", "--model", "gpt", "--widths", "64,128", "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "--widths: must span at least 8x" in err and "[coord_check]" not in err


def test_predict_into_a_closed_pipe_is_quiet(tmp_path):
    path = two_budget_grid(tmp_path, "[-11, -10, -9, -8, -7, -6, -5, -4, -3]")
    store = str(tmp_path / "store")
    assert main(["run", str(path), "--store", store, "--no-progress"]) == 0
    cmd = (f"{sys.executable} -m mupcheck predict {path} --width 64 --tokens 1e9 --store {store} | head -c 10")
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
