"""The team's own training code as a grid's trainer (issue 43): a command template or a Python function, the
metrics protocol, the store, resume, workers, GPU slots, failures and the coordinate check of the trainer's own
training step. Every run here is a real process running tests/trainers/nanogpt_train.py (argparse, mup, its own
loop and schedule) on CPU, at a budget of 16 steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_until

from mupcheck.errors import GridError, MupcheckError
from mupcheck.outputs.cli import main
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid
from mupcheck.store import Store
from mupcheck.sweep.balance import gpu_slots
from mupcheck.sweep.local import run_grid

SCRIPT = Path(__file__).resolve().parents[2] / "grids" / "trainers" / "nanogpt_train.py"
COMMAND = (f"{sys.executable} nanogpt_train.py --n_embd {{width}} --lr {{lr}} --max_tokens {{tokens}} --seed {{seed}} "
           "--out {run_dir}")


def _grid(folder: Path, command: str = COMMAND, extra: str = "", widths: str = "[32, 64]",
          lrs: str = "[-8, -6]", name: str = "theirs") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nanogpt_train.py").write_text(SCRIPT.read_text())
    path = folder / f"{name}.toml"
    trainer = f'command = "{command}"' if command else ""
    path.write_text(f'name = "{name}"\nwidths = {widths}\ntokens = [2048]\nlr_log2 = {lrs}\nseeds = [0]\n'
                    f'parametrization = ["mup"]\nbatch_size = 8\nseq_len = 16\n{extra}\n[trainer]\n{trainer}\n')
    return path


def _losses(path: Path, store: Store) -> dict[tuple[int, float], float | None]:
    plan = plan_grid(load_grid(path), "cpu")
    out = {}
    for cfg in plan.configs:
        record = store.load(plan.key(cfg))
        out[(cfg.width, cfg.lr_log2)] = None if record is None else record.result.loss
    return out


def test_a_trainer_grid_trains_with_two_workers_resumes_and_is_judged(tmp_path, capsys):
    path = _grid(tmp_path / "g")
    store = tmp_path / "store"
    assert main(["run", str(path), "--store", str(store), "--workers", "2", "--no-progress"]) == 0
    assert "done: 4/4 runs (4 trained" in capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in (store / "runs").glob("*.json")]
    assert len(records) == 4 and all(r["result"]["engine"] == "trainer" for r in records)
    assert all(r["result"]["checkpoints"] and any("train.py: n_embd=" in line for line in r["result"]["log"])
               for r in records)  # the curve is the metric lines; the rest of the output is the log
    assert main(["run", str(path), "--store", str(store), "--no-progress"]) == 0
    assert "(0 trained, 4 reused" in capsys.readouterr().out  # resumed: nothing trained again
    suite = GridSuite(plan_grid(load_grid(path), "cpu"), Store(store))
    assert len(suite.df) == 4 and set(suite.df["status"]) <= {"ok", "unstable", "diverged"}
    assert main(["report", str(path), "--store", str(store), "--out", str(tmp_path / "out")]) in (0, 1)
    assert "The team's own trainer" in (tmp_path / "out" / "theirs.md").read_text()


def test_pytest_judges_a_trainer_grid(tmp_path, pytester):
    path = _grid(pytester.path / "g")
    result = pytester.runpytest(str(path), "--mupcheck-store", str(tmp_path / "store"), "--mupcheck-no-report",
                                "-p", "no:cacheprovider", "-v")
    out = result.stdout.str()
    assert "width[mup tokens=2K 32->64]" in out and "wider[mup tokens=2K]" in out, out
    assert len(list((tmp_path / "store" / "runs").glob("*.json"))) == 4


def test_the_python_form_gives_what_the_command_gives(tmp_path):
    """The same script as `python = "nanogpt_train:train"`: the same losses, bit for bit on CPU."""
    command = _grid(tmp_path / "c")
    function = _grid(tmp_path / "f", command="", extra="")
    function.write_text(function.read_text().replace("[trainer]\n", '[trainer]\npython = "nanogpt_train:train"\n'))
    store = Store(tmp_path / "store")
    for path in (command, function):
        run_grid(load_grid(path), store, device="cpu", show_progress=False)
    assert _losses(command, store) == _losses(function, store)
    assert None not in _losses(command, store).values()


@pytest.mark.parametrize(("edit", "expected"), [
    (("--lr {lr}", "--lr {rate}"), r"trainer.command.*\{rate\} is not a placeholder; allowed: .*\{lr\}"),
    (("--lr {lr}", "--lr 0.01"), r"trainer.command.*the grid sweeps lr \(2 values\), but the command never passes "
                                 r"\{lr\}"),
    (("nanogpt_train.py", "absent.py"), r"trainer.code.*no file .*absent.py"),
    (("--seed {seed}", "--seed {seed"), r"trainer.command.*is not a template"),
])
def test_a_bad_trainer_command_is_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, edit, expected):
    path = _grid(tmp_path / "g", command=COMMAND.replace(*edit))
    assert main(["run", str(path), "--store", str(tmp_path / "store"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mupcheck: error: ") and "Traceback" not in "".join(err), err
    with pytest.raises(GridError, match=expected):
        plan_grid(load_grid(path), "cpu")
    assert not (tmp_path / "store" / "runs").exists()


def test_a_trainer_table_needs_one_form_and_no_model(tmp_path):
    path = _grid(tmp_path / "g")
    path.write_text(path.read_text().replace("[trainer]\n", '[trainer]\npython = "nanogpt_train:train"\n'))
    with pytest.raises(GridError, match=r"trainer.*needs one of `command`.*or `python`"):
        load_grid(path)
    path = _grid(tmp_path / "h")
    path.write_text('model = "gpt"\n' + path.read_text())
    with pytest.raises(GridError, match=r"`model`: a grid with a \[trainer\] trains with the team's own code"):
        load_grid(path)


def test_runs_that_fail_are_named_kept_in_failures_and_left_missing(tmp_path, capsys):
    """A non-zero exit at width 64: two failed runs, each said in one line with its last output; the width-32
    runs are stored; the report lists the failures; a later sweep tries them again."""
    path = _grid(tmp_path / "g", command=COMMAND + " --fail_width 64")
    store = Store(tmp_path / "store")
    summary = run_grid(load_grid(path), store, device="cpu", show_progress=False)
    err = capsys.readouterr().err
    assert len(summary.failed) == 2 and len(list((store.root / "runs").glob("*.json"))) == 2
    assert err.count("the trainer failed: exited with status 1: RuntimeError: CUDA out of memory") == 2
    failure = json.loads(next((store.root / "failures").glob("*.json")).read_text())
    assert failure["backend"] == "trainer" and any("out of memory" in line for line in failure["log"])
    assert main(["report", str(path), "--store", str(store.root), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "theirs.md").read_text()
    assert "2 of them failed to train" in report and "CUDA out of memory" in report


@pytest.mark.parametrize(("flags", "expected"), [
    (" --silent", "printed no metric line"),
    (" --hang", "timed out after 1 s"),
])
def test_a_run_that_prints_no_metric_or_hangs_failed(tmp_path, capsys, flags, expected):
    path = _grid(tmp_path / "g", command=COMMAND + flags, widths="[32]", lrs="[-8]")
    if "hang" in flags:  # the trainer's own limit, under test: a run that never ends is stopped at it
        path.write_text(path.read_text().replace("[trainer]\n", "[trainer]\ntimeout_s = 1\n"))
    summary = run_grid(load_grid(path), Store(tmp_path / "store"), device="cpu", show_progress=False)
    assert len(summary.failed) == 1 and expected in next(iter(summary.failed.values()))


def test_a_grid_whose_runs_all_fail_stops_at_the_first_error(tmp_path, capsys):
    path = _grid(tmp_path / "g", command=COMMAND + " --fail_width {width}", lrs="[-9, -8, -7, -6]")
    assert main(["run", str(path), "--store", str(tmp_path / "store"), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mupcheck: error: the trainer failed on each of its first 3 runs, and none finished")
    assert len(list((tmp_path / "store" / "failures").glob("*.json"))) == 3  # not all eight


def test_metrics_written_to_the_run_folder_are_read(tmp_path):
    path = _grid(tmp_path / "g", command=COMMAND + " --metrics_file", widths="[32]", lrs="[-8]")
    store = Store(tmp_path / "store")
    run_grid(load_grid(path), store, device="cpu", show_progress=False)
    (loss,) = _losses(path, store).values()
    assert loss is not None and loss > 0


def test_a_changed_trainer_never_reuses_a_stale_record(tmp_path):
    path = _grid(tmp_path / "g")
    before = {plan_grid(load_grid(path), "cpu").key(c) for c in plan_grid(load_grid(path), "cpu").configs}
    script = tmp_path / "g" / "nanogpt_train.py"
    script.write_text(script.read_text() + "\n# a changed schedule\n")
    after = {plan_grid(load_grid(path), "cpu").key(c) for c in plan_grid(load_grid(path), "cpu").configs}
    assert not before & after


def test_gpu_slots_give_each_worker_its_devices():
    assert gpu_slots("0,1") == ("0", "1")
    assert gpu_slots("0,1", runs_per_gpu=2) == ("0", "0", "1", "1")
    assert gpu_slots("all", visible="2,3") == ("2", "3")
    assert gpu_slots("all", count=3) == ("0", "1", "2")
    assert gpu_slots(None) == ()
    for bad in ("0,,1", "0,0"):
        with pytest.raises(ValueError, match="write GPU ids separated by commas"):
            gpu_slots(bad)
    with pytest.raises(ValueError, match="no GPU that CUDA can see"):
        gpu_slots("all", count=0)


def test_each_worker_gives_its_runs_its_gpu(tmp_path):
    """--gpus 0,1: two workers, each run with CUDA_VISIBLE_DEVICES set to its worker's GPU (read back from the
    runs' own output; the script trains on CPU either way)."""
    path = _grid(tmp_path / "g")
    store = tmp_path / "store"
    assert main(["run", str(path), "--store", str(store), "--gpus", "0,1", "--no-progress"]) == 0
    seen = set()
    for p in (store / "runs").glob("*.json"):
        line = next(x for x in json.loads(p.read_text())["result"]["log"] if "cuda_visible=" in x)
        seen.add(line.split("cuda_visible=")[1])
    assert seen <= {"0", "1"} and seen
    with pytest.raises(MupcheckError, match="--gpus gives GPUs to a \\[trainer\\]'s runs"):
        run_grid(load_grid(Path(__file__).parents[2] / "grids" / "smoke.toml"), Store(store), gpus="0")


def test_ctrl_c_stops_the_trainers_whole_process_group(tmp_path):
    path = _grid(tmp_path / "g", command=COMMAND + " --hang", widths="[32]", lrs="[-8]")
    proc = subprocess.Popen([sys.executable, "-m", "mupcheck", "run", str(path), "--store", str(tmp_path / "store"),
                             "--workers", "1", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    pids = tmp_path / "store" / "trainer-runs"
    assert wait_until(lambda: any(pids.glob("*/pid")), lambda: proc.poll() is None)
    trainer = int(next(pids.glob("*/pid")).read_text())
    proc.send_signal(signal.SIGINT)
    proc.communicate()
    assert wait_until(lambda: not _alive(trainer), lambda: True)


def test_kill_9_of_a_sweep_then_resume_trains_only_what_was_not_finished(tmp_path):
    path = _grid(tmp_path / "g", lrs="[-9, -8, -7, -6]")
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "mupcheck", "run", str(path), "--store", str(store),
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    assert wait_until(lambda: len(list((store / "runs").glob("*.json"))) >= 2, lambda: proc.poll() is None)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in (store / "runs").glob("*.json")}
    summary = run_grid(load_grid(path), Store(store), device="cpu", show_progress=False)
    assert summary.trained == 8 - len(kept) and len(summary.outcomes) == 8
    assert all((store / "runs" / name).stat().st_mtime_ns == t for name, t in kept.items())


def test_the_trainers_own_training_step_is_coordinate_checked(tmp_path, capsys):
    """mupcheck.watch in the script: the correct muP trainer passes its coordinate check (the grid's coord item),
    and the same script with nanoGPT's schedule bug (every group at the base rate) fails it under `mupcheck
    coord-check --grid`, which trains the runs the check needs and names the layers whose updates grow."""
    extra = '[coord_check]\nparametrization = ["mup"]\nlr_log2 = -6\n'
    path = _grid(tmp_path / "ok", command=COMMAND + " --watch", widths="[32, 64, 256]", lrs="[-6]", extra=extra)
    store = Store(tmp_path / "store_ok")
    run_grid(load_grid(path), store, device="cpu", show_progress=False)
    outcome = GridSuite(plan_grid(load_grid(path), "cpu"), store).outcome("coord[mup]")
    assert outcome.outcome == "pass", outcome.detail
    bugged = _grid(tmp_path / "bug", command=COMMAND + " --watch --bug group_lr", widths="[32, 64, 256]",
                   lrs="[-8, -6]", extra=extra)
    assert main(["coord-check", "--grid", str(bugged), "--store", str(tmp_path / "store_bug")]) == 1
    out = capsys.readouterr().out
    assert "update" in out and "grow with width" in out
    assert len(list((tmp_path / "store_bug" / "runs").glob("*.json"))) == 3  # only the check's rate was trained


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")

