"""Sweeps read straight from the tracking systems teams log them to (issue 37): an MLflow tracking store (a
file store and SQLite), TensorBoard event files written by SummaryWriter, an Optuna study in SQLite. Each test
logs a simulated sweep with the library itself (no mocks), judges it from its store with a short grid file,
and checks that everything downstream equals the judgement of the same runs given as a CSV table. A source's
tests are skipped where its extra is not installed; CI installs them all."""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from simulate import Cell, simulate, spaced

from mupcheck.errors import GridError
from mupcheck.outputs.cli import main
from mupcheck.outputs.json_report import suite_json
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.spec import load_grid

STEPS = (10, 20, 30, 40)


def _sweep() -> list[dict[str, Any]]:
    """An SP width sweep with a known truth (the optimum falls one octave per doubling of width): 2 widths x 2
    budgets x 9 rates an octave apart x 2 seeds; the runs past the wall diverged (their curve ends in NaN), and
    one run's curve spikes (mupcheck judges it unstable from its curve)."""
    rng = np.random.default_rng(37)
    cells = {("sp", w, t): Cell(-5.0 - math.log2(w / 32)) for w in (32, 128) for t in (2**20, 2**22)}
    frame = simulate(rng, cells, seeds=range(3), refine=False, coarse=spaced(1.0, -10, -2))
    runs = []
    for r in frame.itertuples():
        diverged = r.status == "diverged"
        final = math.nan if diverged else float(r.loss)
        curve = [6.0, 5.0, 4.5, math.nan] if diverged else [final * f for f in (1.6, 1.3, 1.1, 1.0)]
        runs.append({"width": int(r.width), "tokens": int(r.tokens), "seed": int(r.seed), "lr": 2.0 ** r.lr_log2,
                     "loss": final, "diverged": diverged, "curve": list(zip(STEPS, curve))})
    spiked = next(run for run in runs if not run["diverged"] and run["width"] == 128)
    spiked["curve"] = [(s, spiked["loss"] * f) for s, f in zip(STEPS, (1.6, 1.1, 1.5, 1.0))]
    return runs


RUNS = _sweep()


def _csv_grid(tmp_path: Path, float32: bool = False, curves: bool = True) -> Path:
    """The same runs as a results table, the reference every source must match (with `float32`, the losses
    as a source that stores them in single precision holds them: TensorBoard's scalars; without `curves`, as a
    source that logs no training curve holds them)."""
    kept = (lambda x: float(np.float32(x))) if float32 else float
    rows = [{"width": r["width"], "tokens": r["tokens"], "seed": r["seed"], "lr": r["lr"],
             "loss": "" if r["diverged"] else kept(r["loss"]), "status": "diverged" if r["diverged"] else "ok",
             **({"curve": json.dumps([[s, kept(v)] for s, v in r["curve"]])} if curves else {})} for r in RUNS]
    folder = tmp_path / "csv"
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    path = folder / "from_csv.toml"
    path.write_text('name = "from_csv"\nparametrization = "sp"\nresults = "runs.csv"\n')
    return path


def _judged(path: Path) -> dict[str, Any]:
    """Everything the suite says of a grid (its JSON report), less what names the grid and its inputs."""
    out = suite_json(GridSuite(load_grid(path)), {})
    return {k: v for k, v in out.items() if k not in ("grid", "provenance")}


def _assert_same_as_csv(path: Path, tmp_path: Path, float32: bool = False, curves: bool = True) -> None:
    judged, reference = _judged(path), _judged(_csv_grid(tmp_path, float32, curves))
    assert judged == reference
    outcomes = {o["id"]: o["outcome"] for o in reference["outcomes"]}
    assert outcomes["width[sp tokens=1M 32->128]"] == "fail"  # SP breaks: the sweep is not trivially judged
    statuses = pd.DataFrame(GridSuite(load_grid(path)).df)["status"].value_counts()
    assert statuses.get("unstable", 0) == (1 if curves else 0) and statuses["diverged"] > 0


def _report(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> str:
    assert main(["report", str(path), "--out", str(tmp_path / "reports")]) == 1  # SP breaks: a check fails
    capsys.readouterr()
    return (tmp_path / "reports" / f"{load_grid(path).name}.md").read_text()


def _fails_in_one_line(path: Path, capsys: pytest.CaptureFixture, expected: str) -> None:
    with pytest.raises(GridError, match=expected):
        load_grid(path)
    assert main(["report", str(path), "--out", str(path.parent / "reports")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


# --- MLflow --------------------------------------------------------------------------------------------------

MLFLOW_GRID = """name = "from_mlflow"
parametrization = "sp"
[results]
source = "mlflow"
tracking_uri = "{uri}"
experiment = "lr-sweep"
curve = "train_loss"
[results.columns]
lr = "params.lr"
loss = "metrics.val_loss"
width = "params.d_model"
tokens = "params.tokens"
seed = "params.seed"
"""


def _log_mlflow(uri: str) -> None:
    """The sweep as a trainer logs it: params, the training loss at each step, the final validation loss; a
    diverged run ends FAILED; one more run was killed, and one is still running."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.entities import Metric, Param

    with warnings.catch_warnings():  # MLflow's SQL store warns of its own use of SQLAlchemy
        warnings.simplefilter("ignore", DeprecationWarning)
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("lr-sweep")
    extra = [dict(RUNS[0], status="KILLED"), dict(RUNS[1], status="RUNNING")]
    for run in [*RUNS, *extra]:
        created = client.create_run(experiment)
        params = [Param("d_model", str(run["width"])), Param("tokens", str(run["tokens"])),
                  Param("seed", str(run["seed"])), Param("lr", repr(run["lr"]))]
        metrics = [Metric("train_loss", v, 0, s) for s, v in run["curve"]]
        metrics.append(Metric("val_loss", run["loss"], 0, STEPS[-1]))
        client.log_batch(created.info.run_id, metrics=metrics, params=params)
        status = run.get("status", "FAILED" if run["diverged"] else "FINISHED")
        if status != "RUNNING":
            client.set_terminated(created.info.run_id, status=status)


@pytest.fixture(scope="module")
def mlflow_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store and one file store (mlruns/) holding the same sweep, logged once per test module."""
    pytest.importorskip("mlflow")
    folder = tmp_path_factory.mktemp("mlflow store")  # a space: a file URI percent-encodes it
    _log_mlflow(f"sqlite:///{folder / 'mlflow.db'}")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 writes a file store only when asked
    try:
        _log_mlflow((folder / "mlruns").as_uri())
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
    return folder


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "mlruns"])
def test_an_mlflow_store_judges_as_its_csv_export(mlflow_stores, tmp_path, uri, capsys):
    path = mlflow_stores / f"grid_{uri.split(':')[0].split('/')[0]}.toml"
    path.write_text(MLFLOW_GRID.format(uri=uri))
    _assert_same_as_csv(path, tmp_path)
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"killed": 1, "still running": 1}
    report = _report(path, tmp_path, capsys)
    assert "2 left out, not results (1 killed, 1 still running)" in report
    assert f"MLflow {uri} experiment 'lr-sweep' ({len(RUNS) + 2} runs; sha256 " in report


@pytest.mark.parametrize(("edit", "expected"), [
    (("tracking_uri = \"sqlite:///mlflow.db\"", "tracking_uri = \"sqlite:///absent.db\""),
     r"results.tracking_uri.*no MLflow store at 'sqlite:///absent.db'"),
    (("experiment = \"lr-sweep\"", "experiment = \"lr_sweep\""),
     r"results.experiment.*no experiment 'lr_sweep' in sqlite:///mlflow.db \(it has: 'Default', 'lr-sweep'\)"),
    (("loss = \"metrics.val_loss\"", "loss = \"metrics.valid_loss\""),
     r"no column 'metrics.valid_loss' \(mapped to `loss`"),
    (("lr = \"params.lr\"", "lr = \"params.learning_rate\""),
     r"no column 'params.learning_rate' \(mapped to `lr`"),
    (("experiment = \"lr-sweep\"\n", ""), r"results.experiment.*required key is missing"),
    (("curve = \"train_loss\"", "study = \"x\""), r"results.study.*belongs to source = 'optuna'"),
])
def test_a_bad_mlflow_source_is_one_line_and_exit_2(mlflow_stores, capsys, edit, expected):
    path = mlflow_stores / "bad.toml"
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db").replace(*edit))
    _fails_in_one_line(path, capsys, expected)


def test_an_mlflow_filter_selects_runs_and_a_bad_one_is_named(mlflow_stores, capsys):
    path = mlflow_stores / "filtered.toml"
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db").replace(
        'curve = "train_loss"', 'curve = "train_loss"\nfilter = "params.seed = \'0\'"'))
    grid = load_grid(path)
    assert grid.seeds == (0,)
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db").replace(
        'curve = "train_loss"', 'filter = "params.seed === 0"'))
    _fails_in_one_line(path, capsys, r"results.filter.*MLflow cannot search sqlite:///mlflow.db with filter")


# --- TensorBoard ----------------------------------------------------------------------------------------------

TENSORBOARD_GRID = """name = "from_tensorboard"
parametrization = "sp"
[results]
source = "tensorboard"
logdir = "runs"
pattern = "w{width}_t{tokens}_run{run}"
curve = "train/loss"
[results.columns]
loss = "val/loss"
"""


def write_tensorboard_runs(folder: Path) -> None:
    """The sweep as SummaryWriter writes it, under folder/runs (see the fixture below)."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    for k, run in enumerate(RUNS):
        with SummaryWriter(str(folder / "runs" / f"w{run['width']}_t{run['tokens']}_run{k}")) as writer:
            for step, value in run["curve"]:
                writer.add_scalar("train/loss", value, step)
            writer.add_scalar("val/loss", run["loss"], STEPS[-1])
            writer.add_hparams({"lr": run["lr"], "seed": run["seed"]}, {"hparam/val_loss": run["loss"]},
                               run_name=".")


@pytest.fixture(scope="module")
def tensorboard_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep as SummaryWriter writes it: a folder per run named by width and budget, the rate and seed in
    the hparams plugin, the training loss at each step, the final validation loss; one more folder of notes
    whose name fits no pattern."""
    folder = tmp_path_factory.mktemp("tensorboard")
    write_tensorboard_runs(folder)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder / "runs" / "notes")) as writer:
        writer.add_text("notes", "a folder of notes beside the runs")
    return folder


def test_tensorboard_logs_judge_as_their_csv_export(tensorboard_logs, tmp_path, capsys):
    path = tensorboard_logs / "grid.toml"
    path.write_text(TENSORBOARD_GRID)
    _assert_same_as_csv(path, tmp_path, float32=True)
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"folder name does not fit the pattern": 1}
    report = _report(path, tmp_path, capsys)
    assert f"TensorBoard logs runs (w{{width}}_t{{tokens}}_run{{run}}) ({len(RUNS) + 1} runs; sha256 " in report


@pytest.mark.parametrize(("edit", "expected"), [
    (('logdir = "runs"', 'logdir = "logs"'), r"results.logdir.*no log folder 'logs'"),
    (('loss = "val/loss"', 'loss = "valid/loss"'), r"no column 'valid/loss' \(mapped to `loss`"),
    (('pattern = "w{width}_t{tokens}_run{run}"', 'pattern = "width{width}"'),
     r"no run to judge: every run was left out \(\d+ folder name does not fit the pattern\)"),
])
def test_a_bad_tensorboard_source_is_one_line_and_exit_2(tensorboard_logs, capsys, edit, expected):
    path = tensorboard_logs / "bad.toml"
    path.write_text(TENSORBOARD_GRID.replace(*edit))
    _fails_in_one_line(path, capsys, expected)


# --- Optuna ---------------------------------------------------------------------------------------------------

OPTUNA_GRID = """name = "from_optuna"
parametrization = "sp"
[results]
source = "optuna"
storage = "sqlite:///study.db"
study = "lr-transfer"
[results.columns]
lr = "params.lr"
loss = "value"
width = "user_attrs.width"
tokens = "user_attrs.tokens"
seed = "user_attrs.seed"
"""


@pytest.fixture(scope="module")
def optuna_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep as trials of a study: the rate a param, width, budget and seed user attributes, the training
    loss its intermediate values; a diverged run is a FAIL trial (Optuna refuses a NaN objective); one more trial
    was pruned, one is still running."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tmp_path_factory.mktemp("optuna")
    study = optuna.create_study(study_name="lr-transfer", storage=f"sqlite:///{folder / 'study.db'}")
    rate = {"lr": optuna.distributions.FloatDistribution(2**-12, 1.0, log=True)}
    states = optuna.trial.TrialState
    for run in [*RUNS, dict(RUNS[0], state=states.PRUNED), dict(RUNS[1], state=states.RUNNING)]:
        state = run.get("state", states.FAIL if run["diverged"] else states.COMPLETE)
        study.add_trial(optuna.trial.create_trial(
            params={"lr": run["lr"]}, distributions=rate, state=state,
            value=run["loss"] if state == states.COMPLETE else None,
            user_attrs={"width": run["width"], "tokens": run["tokens"], "seed": run["seed"]},
            intermediate_values=dict(run["curve"])))
    return folder


def test_an_optuna_study_judges_as_its_csv_export(optuna_study, tmp_path, capsys):
    path = optuna_study / "grid.toml"
    path.write_text(OPTUNA_GRID)
    _assert_same_as_csv(path, tmp_path)
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"pruned": 1, "still running": 1}
    report = _report(path, tmp_path, capsys)
    assert f"Optuna sqlite:///study.db study 'lr-transfer' ({len(RUNS) + 2} runs; sha256 " in report


def test_pytest_items_of_an_optuna_study_are_those_of_its_csv_export(optuna_study, tmp_path, pytester):
    """The same pytest items and outcomes, from the study as from the table."""
    csv = _csv_grid(tmp_path)
    (pytester.path / "csv").mkdir()
    for name in ("runs.csv", "from_csv.toml"):
        (pytester.path / "csv" / name).write_text((csv.parent / name).read_text())
    (pytester.path / "study.db").write_bytes((optuna_study / "study.db").read_bytes())
    (pytester.path / "from_optuna.toml").write_text(OPTUNA_GRID)
    outcomes = []
    for grid in ("csv/from_csv.toml", "from_optuna.toml"):
        result = pytester.runpytest(grid, "-p", "no:cacheprovider", "--mupcheck-no-report", "-rA")
        outcomes.append(sorted(f"{line.split(' ')[0]} {line.split('::', 1)[1].split(' - ')[0]}"
                               for line in result.stdout.lines if "::" in line and line.split(" ")[0].isupper()))
    assert outcomes[0] == outcomes[1] and any(line.startswith("FAILED") for line in outcomes[0]), outcomes


@pytest.mark.parametrize(("edit", "expected"), [
    (('storage = "sqlite:///study.db"', 'storage = "sqlite:///studies.db"'),
     r"results.storage.*no Optuna storage at 'sqlite:///studies.db'"),
    (('study = "lr-transfer"', 'study = "lr_transfer"'),
     r"results.study.*no study 'lr_transfer' in sqlite:///study.db \(it has: 'lr-transfer'\)"),
    (('lr = "params.lr"', 'lr = "params.learning_rate"'), r"no column 'params.learning_rate' \(mapped to `lr`"),
    (('storage = "sqlite:///study.db"\n', ""), r"results.storage.*required key is missing"),
])
def test_a_bad_optuna_source_is_one_line_and_exit_2(optuna_study, capsys, edit, expected):
    path = optuna_study / "bad.toml"
    path.write_text(OPTUNA_GRID.replace(*edit))
    _fails_in_one_line(path, capsys, expected)


def test_a_source_whose_extra_is_missing_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    """Without the extra, one line says which to install (the import is blocked here, as where it is absent)."""
    import builtins

    real_import = builtins.__import__

    def blocked(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "optuna":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    path = tmp_path / "grid.toml"
    path.write_text(OPTUNA_GRID)
    _fails_in_one_line(path, capsys, r"results.source.*pip install 'mupcheck\[optuna\]'")


def test_the_documented_source_tables_are_valid_keys(tmp_path):
    """Each `[results] source = ...` recipe in docs/imported.md passes the grid's key checks: loading it stops only
    at the store, which is not there."""
    for extra in ("mlflow", "tensorboard", "optuna"):
        pytest.importorskip(extra)
    docs = (Path(__file__).parents[1] / "docs" / "imported.md").read_text()
    recipes = [block for block in re.findall(r"```toml\n(.*?)```", docs, re.S) if "source = " in block]
    assert len(recipes) == 3
    for k, block in enumerate(recipes):
        path = tmp_path / f"recipe{k}.toml"
        path.write_text(block if block.startswith("name") else f'name = "recipe{k}"\n{block}')
        with pytest.raises(GridError, match=r"no MLflow store|no log folder|no Optuna storage"):
            load_grid(path)
