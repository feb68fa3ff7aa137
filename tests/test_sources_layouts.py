"""Tracking stores as teams really fill them (issue 42): nested MLflow runs, runs that never logged the loss,
TensorBoard's one-writer hparams layout, stores that are not what the grid says, and a store's bytes, which a
report never changes. Each store is written by the real library; the judgement is compared with the same runs
given as a CSV table (tests/test_sources.py)."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_sources import (
    MLFLOW_GRID,
    OPTUNA_GRID,
    RUNS,
    STEPS,
    TENSORBOARD_GRID,
    _assert_same_as_csv,
    _fails_in_one_line,
    _judged,
    write_tensorboard_runs,
)

from mupcheck.outputs.cli import main
from mupcheck.spec import load_grid


def _client(uri: str) -> Any:
    mlflow = pytest.importorskip("mlflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mlflow.tracking.MlflowClient(tracking_uri=uri)


def _log_run(client: Any, experiment: str, run: dict[str, Any], parent: str | None = None,
             log_loss: bool = True, tags: dict[str, str] | None = None) -> str:
    from mlflow.entities import Metric, Param

    all_tags = dict(tags or {})
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    created = client.create_run(experiment, tags=all_tags)
    params = [Param("d_model", str(run["width"])), Param("tokens", str(run["tokens"])),
              Param("seed", str(run["seed"])), Param("lr", repr(run["lr"]))]
    metrics = [Metric("train_loss", v, 0, s) for s, v in run["curve"]]
    if log_loss:
        metrics.append(Metric("val_loss", run["loss"], 0, STEPS[-1]))
    client.log_batch(created.info.run_id, metrics=metrics, params=params)
    client.set_terminated(created.info.run_id, status="FAILED" if run["diverged"] else "FINISHED")
    return created.info.run_id


def _parent(client: Any, experiment: str, params: dict[str, str], tags: dict[str, str] | None = None) -> str:
    from mlflow.entities import Param

    created = client.create_run(experiment, tags=tags or {})
    if params:
        client.log_batch(created.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return created.info.run_id


def _log_fluently(uri: str, halves: list[list[dict[str, Any]]]) -> None:
    """The sweep as a training script logs it with MLflow's fluent API: a parent run per half of the sweep, each
    run of it `mlflow.start_run(nested=True)` inside."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("lr-sweep")
        for k, part in enumerate(halves):
            with mlflow.start_run(run_name=f"sweep-{k}"):
                for run in part:
                    mlflow.start_run(nested=True)
                    mlflow.log_params({"d_model": run["width"], "tokens": run["tokens"], "seed": run["seed"],
                                       "lr": repr(run["lr"])})
                    for step, value in run["curve"]:
                        mlflow.log_metric("train_loss", value, step=step)
                    mlflow.log_metric("val_loss", run["loss"], step=STEPS[-1])
                    mlflow.end_run(status="FAILED" if run["diverged"] else "FINISHED")
    finally:
        mlflow.set_tracking_uri(previous)


def test_nested_mlflow_runs_read_as_mlflows_ui_shows_them(tmp_path, capsys):
    """`mlflow.start_run(nested=True)` under a parent run per half of the sweep: a parent that only holds the
    sweep's runs is a container, left out and counted, and the verdicts are those of the runs alone. Issue 42:
    the documented grid failed with 'row 121: width: nan is not a number' on the parent."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _client(uri).create_experiment("lr-sweep")
    _log_fluently(uri, [RUNS[: len(RUNS) // 2], RUNS[len(RUNS) // 2:]])
    path = tmp_path / "grid.toml"
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db"))
    _assert_same_as_csv(path, tmp_path)
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"parent runs that only hold nested runs": 2}
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 1  # SP breaks: a check fails
    capsys.readouterr()
    assert "2 parent runs that only hold nested runs" in (tmp_path / "out" / "from_mlflow.md").read_text()


OPTUNA_VIA_MLFLOW = """name = "from_mlflow"
parametrization = "sp"
[results]
source = "mlflow"
tracking_uri = "sqlite:///mlflow.db"
experiment = "lr-sweep"
[results.columns]
lr = "params.lr"
loss = "metrics.val_loss"
width = "params.width"
tokens = "params.tokens"
seed = "params.seed"
status = "tags.state"          # the trial's state, as Optuna's callback tags it
[results.status]
COMPLETE = "ok"
FAIL = "diverged"
"""


def test_optunas_mlflow_callback_nested_under_a_study_run_reads_as_its_trials(tmp_path):
    """optuna-integration's MLflowCallback(nest_trials): one MLflow run per trial under the study's run, the trial's
    params and value, its state as a tag. A NaN objective fails the trial and logs no metric: its state tag says
    FAIL, which the grid translates to diverged. The study run is a container."""
    optuna = pytest.importorskip("optuna")
    mlflow = pytest.importorskip("mlflow")
    integration = pytest.importorskip("optuna_integration.mlflow")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = integration.MLflowCallback(tracking_uri=uri, metric_name="val_loss", mlflow_kwargs={"nested": True})
    study = optuna.create_study(study_name="lr-sweep")
    for run in RUNS:
        study.enqueue_trial({"width": run["width"], "tokens": run["tokens"], "seed": run["seed"], "lr": run["lr"]})
    rates = sorted({r["lr"] for r in RUNS})

    def objective(trial: Any) -> float:
        width = trial.suggest_categorical("width", [32, 128])
        tokens = trial.suggest_categorical("tokens", [2**20, 2**22])
        seed = trial.suggest_categorical("seed", [0, 1, 2])
        lr = trial.suggest_categorical("lr", rates)
        run = next(r for r in RUNS if (r["width"], r["tokens"], r["seed"], r["lr"]) == (width, tokens, seed, lr))
        return math.nan if run["diverged"] else run["loss"]

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("lr-sweep")
        with mlflow.start_run(run_name="study"):
            mlflow.log_params({"sampler": "TPESampler", "n_trials": len(RUNS)})
            study.optimize(objective, n_trials=len(RUNS), callbacks=[callback])
    finally:
        mlflow.set_tracking_uri(previous)
    path = tmp_path / "grid.toml"
    path.write_text(OPTUNA_VIA_MLFLOW)
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"parent runs that only hold nested runs": 1}
    _assert_same_as_csv(path, tmp_path, curves=False)


@pytest.mark.ray
@pytest.mark.usefixtures("one_ray_test_at_a_time")
def test_ray_tunes_mlflow_callback_under_a_parent_run_reads_as_its_trials(tmp_path):
    """Ray Tune's MLflowLoggerCallback: one MLflow run per trial (its config as params, every reported result as
    metrics, tagged with the trial's name), nested under the tuning job's run through the parentRunId tag."""
    pytest.importorskip("ray.tune")
    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    experiment = client.create_experiment("lr-sweep")
    parent = _parent(client, experiment, {"search": "grid"})
    part = [r for r in RUNS if r["seed"] == 0 and r["tokens"] == 2**20][:8]

    def trainable(config: dict[str, Any]) -> None:
        run = next(r for r in part if (r["width"], r["lr"]) == (config["width"], config["lr"]))
        for _, value in run["curve"]:
            tune.report({"train_loss": value, "val_loss": run["loss"]})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuner = tune.Tuner(trainable, param_space={
            "width": tune.grid_search(sorted({r["width"] for r in part})),
            "lr": tune.grid_search(sorted({r["lr"] for r in part})), "tokens": 2**20, "seed": 0},
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0, callbacks=[MLflowLoggerCallback(
                tracking_uri=uri, experiment_name="lr-sweep", tags={"mlflow.parentRunId": parent},
                save_artifact=False)]))
        tuner.fit()
    finally:
        ray.shutdown()
    path = tmp_path / "grid.toml"
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db").replace("params.d_model", "params.width"))
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"parent runs that only hold nested runs": 1}
    from mupcheck.outputs.verdicts import GridSuite

    df = GridSuite(grid).df
    combos = {(r["width"], r["lr"]) for r in part}
    assert len(df) <= len(part) and {(int(w), 2.0**x) for w, x in zip(df["width"], df["lr_log2"])} <= combos
    assert (df["status"] == "diverged").sum() == sum(r["diverged"] for r in part
                                                     if (r["width"], r["lr"]) in combos)


def test_finished_runs_that_never_logged_the_loss_are_left_out_named_not_diverged(tmp_path):
    """Issue 42: four FINISHED runs without `val_loss` were counted as diverged, and muP 64 -> 512 broke on them."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    experiment = client.create_experiment("lr-sweep")
    for run in RUNS:
        _log_run(client, experiment, run)
    silent = [r for r in RUNS if not r["diverged"]][:4]
    for run in silent:  # reruns that crashed before evaluating, but exited cleanly
        _log_run(client, experiment, dict(run, seed=run["seed"] + 10), log_loss=False)
    path = tmp_path / "grid.toml"
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db"))
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"logged no `metrics.val_loss`": 4}
    assert 10 not in grid.seeds  # their seeds never became runs
    _assert_same_as_csv(path, tmp_path)


def test_a_curve_metric_no_run_logged_is_one_line(tmp_path, capsys):
    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("lr-sweep")
    for run in RUNS[:4]:
        _log_run(client, experiment, run)
    path = tmp_path / "grid.toml"
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db").replace('curve = "train_loss"',
                                                                         'curve = "train/loss"'))
    capsys.readouterr()  # MLflow's own log of creating the store
    _fails_in_one_line(path, capsys, r"results.curve.*no run of experiment 'lr-sweep' logged the metric "
                                     r"'train/loss' \(they logged: 'train_loss', 'val_loss'\)")


def test_a_curve_of_one_point_is_a_final_loss_not_an_unstable_run(tmp_path):
    """`curve = "val_loss"` logged once per run: no run is judged unstable from one point."""
    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("lr-sweep")
    for run in RUNS:
        _log_run(client, experiment, run)
    path = tmp_path / "grid.toml"
    path.write_text(MLFLOW_GRID.format(uri="sqlite:///mlflow.db").replace('curve = "train_loss"',
                                                                         'curve = "val_loss"'))
    from mupcheck.outputs.verdicts import GridSuite

    statuses = GridSuite(load_grid(path)).df["status"].value_counts().to_dict()
    assert "unstable" not in statuses and statuses["ok"] == sum(not r["diverged"] for r in RUNS)


def test_runs_that_differ_in_an_unmapped_column_are_not_called_reruns(tmp_path, capsys):
    """Width left unmapped: four widths looked like reruns, and following the advice to average them judged one
    cell. The column that tells them apart is named instead, with or without duplicates = "mean"."""
    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("lr-sweep")
    for run in RUNS:
        _log_run(client, experiment, run)
    path = tmp_path / "grid.toml"
    unmapped = MLFLOW_GRID.format(uri="sqlite:///mlflow.db").replace('width = "params.d_model"\n', "")
    capsys.readouterr()  # MLflow's own log of creating the store
    for extra in ("", 'duplicates = "mean"\n'):
        path.write_text(unmapped.replace('curve = "train_loss"\n', f'curve = "train_loss"\n{extra}'))
        _fails_in_one_line(path, capsys, r"results.columns.*look like reruns of one run, but differ in "
                                         r"`params.d_model` \(128, 32\): map it to the axis it is")


# --- stores that are not what the grid says, read without a write -------------------------------------------------

def _bytes_and_time(path: Path) -> dict[str, tuple[str, int]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns) for f in files}


def _mlflow_store(folder: Path) -> None:
    client = _client(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("lr-sweep")
    for run in RUNS:
        _log_run(client, experiment, run)


def _optuna_store(folder: Path) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="lr-transfer", storage=f"sqlite:///{folder / 'study.db'}")
    rate = {"lr": optuna.distributions.FloatDistribution(2**-12, 1.0, log=True)}
    for run in RUNS:
        state = optuna.trial.TrialState.FAIL if run["diverged"] else optuna.trial.TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            params={"lr": run["lr"]}, distributions=rate, state=state,
            value=None if run["diverged"] else run["loss"],
            user_attrs={"width": run["width"], "tokens": run["tokens"], "seed": run["seed"]},
            intermediate_values=dict(run["curve"])))


def _file_store(folder: Path) -> None:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        client = _client((folder / "mlruns").as_uri())
        experiment = client.create_experiment("lr-sweep")
        for run in RUNS:
            _log_run(client, experiment, run)
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


# (grid, store, what writes it): a report on each leaves every byte and time of the store as it was
READ_ONLY = {
    "mlflow sqlite": (MLFLOW_GRID.format(uri="sqlite:///mlflow.db"), "mlflow.db", _mlflow_store),
    "mlflow file store": (MLFLOW_GRID.format(uri="file:./mlruns"), "mlruns", _file_store),
    "optuna sqlite": (OPTUNA_GRID, "study.db", _optuna_store),
    "tensorboard": (TENSORBOARD_GRID, "runs", write_tensorboard_runs),
}


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_a_report_never_changes_the_bytes_of_the_store_it_reads(name, tmp_path, capsys):
    grid, store, write = READ_ONLY[name]
    write(tmp_path)
    before = _bytes_and_time(tmp_path / store)
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) in (0, 1)
    capsys.readouterr()
    assert _bytes_and_time(tmp_path / store) == before


BAD_STORES = {
    # (what the file holds, grid, the one line)
    "corrupt file as MLflow": ("garbage", MLFLOW_GRID.format(uri="sqlite:///store.db"),
                               r"results.tracking_uri.*store.db is not an MLflow tracking store: not a SQLite "
                               r"database"),
    "corrupt file as Optuna": ("garbage", OPTUNA_GRID.replace("study.db", "store.db"),
                               r"results.storage.*store.db is not an Optuna storage: not a SQLite database"),
    "empty file as MLflow": ("empty", MLFLOW_GRID.format(uri="sqlite:///store.db"),
                             r"store.db is not an MLflow tracking store: an empty database"),
    "empty file as Optuna": ("empty", OPTUNA_GRID.replace("study.db", "store.db"),
                             r"store.db is not an Optuna storage: an empty database"),
    "Optuna database as MLflow": ("optuna", MLFLOW_GRID.format(uri="sqlite:///store.db"),
                                  r"store.db is an Optuna storage, not an MLflow tracking store: set source = "
                                  r"\"optuna\""),
    "MLflow database as Optuna": ("mlflow", OPTUNA_GRID.replace("study.db", "store.db"),
                                  r"store.db is an MLflow tracking store, not an Optuna storage: set source = "
                                  r"\"mlflow\""),
    "an unreachable server": ("", MLFLOW_GRID.format(uri="http://127.0.0.1:9"),
                              r"results.tracking_uri.*MLflow cannot read http://127.0.0.1:9: .*set "
                              r"MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
    "a folder that is no mlruns": ("folder", MLFLOW_GRID.format(uri="file:./store.db"),
                                   r"store.db is not an MLflow file store"),
}


@pytest.mark.parametrize("name", sorted(BAD_STORES))
def test_a_store_that_is_not_what_the_grid_says_is_one_line_exit_2_and_left_as_it_was(name, tmp_path, capsys):
    content, grid, expected = BAD_STORES[name]
    store = tmp_path / "store.db"
    if content == "garbage":
        store.write_bytes(b"this is not a database, whatever its name says\n" * 20)
    elif content == "empty":
        store.write_bytes(b"")
    elif content == "folder":
        (store / "notes").mkdir(parents=True)
    elif content in ("optuna", "mlflow"):
        (_optuna_store if content == "optuna" else _mlflow_store)(tmp_path)
        (tmp_path / ("study.db" if content == "optuna" else "mlflow.db")).rename(store)
    before = _bytes_and_time(store) if store.exists() else {}
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    capsys.readouterr()  # MLflow's own log of creating a store
    _fails_in_one_line(path, capsys, expected)
    assert (_bytes_and_time(store) if store.exists() else {}) == before


def test_every_uri_form_mlflow_accepts_for_a_file_is_accepted(tmp_path):
    _file_store(tmp_path)
    _mlflow_store(tmp_path)
    for uri in ("mlruns", "file:./mlruns", (tmp_path / "mlruns").as_uri(), "sqlite:///mlflow.db",
                f"sqlite:///{tmp_path / 'mlflow.db'}"):
        path = tmp_path / "grid.toml"
        path.write_text(MLFLOW_GRID.format(uri=uri))
        assert _judged(path)["counts"]["fail"] >= 1, uri


# --- TensorBoard: one writer, one add_hparams call per trial ------------------------------------------------------

def test_one_writer_with_an_add_hparams_call_per_trial_is_one_run_per_call(tmp_path):
    """The PyTorch docs' pattern: `with SummaryWriter() as w: for trial: w.add_hparams(hparams, metrics)`. Issue
    42: 96 trials became '1 runs' and 0 checks."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "runs" / "sweep")) as writer:
        for k, run in enumerate(RUNS):
            writer.add_hparams({"width": run["width"], "tokens": run["tokens"], "seed": run["seed"], "lr": run["lr"]},
                               {"val_loss": run["loss"]}, run_name=f"trial{k}")
    path = tmp_path / "grid.toml"
    path.write_text('name = "from_tensorboard"\nparametrization = "sp"\n[results]\nsource = "tensorboard"\n'
                    'logdir = "runs"\n[results.columns]\nloss = "val_loss"\n')
    grid = load_grid(path)
    assert grid.widths == (32, 128) and grid.seeds == (0, 1, 2)
    # The same runs as a table (single precision, as TensorBoard stores them; no curves: add_hparams logs none).
    rows = [{"width": r["width"], "tokens": r["tokens"], "seed": r["seed"], "lr": float(np.float32(r["lr"])),
             "loss": "" if r["diverged"] else float(np.float32(r["loss"]))} for r in RUNS]
    (tmp_path / "csv").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "csv" / "runs.csv", index=False)
    (tmp_path / "csv" / "grid.toml").write_text('name = "from_csv"\nparametrization = "sp"\nresults = "runs.csv"\n')
    judged, reference = _judged(path), _judged(tmp_path / "csv" / "grid.toml")
    assert judged == reference and sum(judged["counts"].values()) >= 8


# --- Optuna: an objective that returned NaN -----------------------------------------------------------------------

def test_an_optuna_objective_that_returned_nan_is_failed_unless_the_grid_says_it_diverged(tmp_path):
    """Optuna stores a NaN objective as FAIL with no value, like one that raised: left out as failed, or diverged
    where the grid translates it ([results.status] failed = "diverged")."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="lr-transfer", storage=f"sqlite:///{tmp_path / 'study.db'}")
    queue = list(RUNS)

    def objective(trial: Any) -> float:
        run = queue.pop(0)
        trial.suggest_float("lr", run["lr"], run["lr"])
        for key in ("width", "tokens", "seed"):
            trial.set_user_attr(key, run[key])
        return math.nan if run["diverged"] else run["loss"]

    study.optimize(objective, n_trials=len(RUNS))
    path = tmp_path / "grid.toml"
    path.write_text(OPTUNA_GRID)
    diverged = sum(r["diverged"] for r in RUNS)
    grid = load_grid(path)
    assert grid.results is not None and dict(grid.results.left_out) == {"failed": diverged}
    path.write_text(OPTUNA_GRID + '[results.status]\nfailed = "diverged"\n')
    from mupcheck.outputs.verdicts import GridSuite

    statuses = GridSuite(load_grid(path)).df["status"].value_counts().to_dict()
    assert statuses["diverged"] == diverged
