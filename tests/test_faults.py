"""Faults a user meets end in one line and exit 2, lose no finished run, and leave nothing half-written:
a read-only or unwritable store, a full disk, an unwritable report folder, corrupt records of every shape,
an absurd learning rate, a pipe cut short (issues 26 and 28)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import two_budget_grid, write_grid

from mupcheck.errors import GridError
from mupcheck.outputs.cli import main
from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid
from mupcheck.store import CorruptRecordWarning, Store


def _tree(root: Path) -> dict[str, int]:
    """Every path under root with its modification time: what a read-only command must leave as it was."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _one_line(err: str) -> str:
    """The one error line of a command's stderr (other lines are its progress and notes)."""
    errors = [line for line in err.splitlines() if line.startswith("mupcheck: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def trained(tmp_path):
    """A two-budget grid trained into a store: (grid path, store root)."""
    grid = two_budget_grid(tmp_path, "[-11, -9, -7, -5, -3, -1]")  # optima inside the rates: predict fits
    assert main(["run", str(grid), "--store", str(tmp_path / "store"), "--no-progress"]) == 0
    return grid, tmp_path / "store"


def test_reading_a_store_writes_nothing_in_it(trained, tmp_path, capsys, pytester):
    """Committed records on a read-only checkout: report, predict, a run with nothing missing and pytest
    --mupcheck-no-train read them and create nothing (no locks/, no temporary file). As root a chmod
    cannot forbid writing, so the tree is compared; as another user the copy is also made read-only."""
    import shutil

    grid, store = trained
    shutil.rmtree(store / "locks")  # as in a checkout of committed records: locks/ is not committed
    before = _tree(store)
    if os.geteuid() != 0:
        for path in [store, *store.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    capsys.readouterr()
    assert main(["report", str(grid), "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    assert main(["predict", str(grid), "--store", str(store), "--width", "64", "--tokens", "1e6"]) == 0
    assert main(["run", str(grid), "--store", str(store), "--no-progress"]) == 0
    assert "(0 trained, 24 reused" in capsys.readouterr().out
    result = pytester.runpytest(str(grid), "--mupcheck-store", str(store), "--mupcheck-no-train",
                                "--mupcheck-reports", str(tmp_path / "out2"), "-p", "no:cacheprovider")
    assert result.ret in (0, 5) and "cannot" not in result.stdout.str()
    assert _tree(store) == before and not (store / "locks").exists()


@pytest.fixture
def read_only_copy(trained, tmp_path):
    """The trained store, bind-mounted read-only (a committed store on a read-only checkout): the kernel
    refuses every write, even root's. Skipped where this process cannot mount."""
    import shutil

    grid, store = trained
    shutil.rmtree(store / "locks")
    mounted = tmp_path / "ro"
    mounted.mkdir()
    if subprocess.run(["mount", "--bind", str(store), str(mounted)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mounted)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield grid, mounted
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


def test_every_read_command_works_on_a_read_only_mount(read_only_copy, tmp_path, capsys, pytester):
    grid, store = read_only_copy
    with pytest.raises(OSError):
        (store / "probe").write_text("")  # the mount is really read-only
    capsys.readouterr()
    assert main(["report", str(grid), "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    assert main(["predict", str(grid), "--store", str(store), "--width", "64", "--tokens", "1e6"]) == 0
    assert main(["export", str(grid), "--store", str(store), "--out", str(tmp_path / "runs.csv")]) == 0
    assert main(["run", str(grid), "--store", str(store), "--no-progress"]) == 0
    assert "(0 trained, 24 reused" in capsys.readouterr().out
    result = pytester.runpytest(str(grid), "--mupcheck-store", str(store), "--mupcheck-no-train",
                                "--mupcheck-reports", str(tmp_path / "out2"), "-p", "no:cacheprovider")
    assert result.ret == 0 and "failed" not in result.stdout.str().splitlines()[-1]
    result = pytester.runpytest(str(grid), "--mupcheck-store", str(store), "--mupcheck-reports",
                                str(tmp_path / "out3"), "-p", "no:cacheprovider")  # nothing missing: nothing written
    assert result.ret == 0


def test_an_unwritable_store_is_one_line_before_anything_trains(tmp_path, capsys, pytester):
    """A store under a file (unwritable even for root): `mupcheck run` and pytest each say so once, exit 2."""
    grid = write_grid(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    store = tmp_path / "file" / "store"
    assert main(["run", str(grid), "--store", str(store), "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "cannot write to the result store" in line and str(store) in line
    result = pytester.runpytest(str(grid), "--mupcheck-store", str(store), "-p", "no:cacheprovider")
    assert result.ret == 2 and "failed" not in result.stdout.str().splitlines()[-1]
    assert "cannot write to the result store" in result.stdout.str() + result.stderr.str()


def _fill_disk_at_the_fourth_record(monkeypatch):
    """The store's fsync raises ENOSPC at the fourth record, as a full disk does; returns the real fsync."""
    import mupcheck.store as store_module

    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    return real_fsync


def test_a_full_disk_ends_in_one_line_and_keeps_every_finished_run(tmp_path, capsys, monkeypatch):
    """The disk fills up while the fourth record is written: exit 2 naming the cause; the three finished
    records stay, no partial record or temporary file is left, and the rerun trains the other five."""
    grid, store = write_grid(tmp_path), tmp_path / "store"
    real_fsync = _fill_disk_at_the_fourth_record(monkeypatch)
    assert main(["run", str(grid), "--store", str(store), "--no-progress", "--workers", "1"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "No space left on device" in line and "result store" in line
    files = sorted(p.name for p in (store / "runs").iterdir())
    assert len(files) == 3 and all(f.endswith(".json") for f in files)
    import mupcheck.store as store_module

    monkeypatch.setattr(store_module.os, "fsync", real_fsync)
    assert main(["run", str(grid), "--store", str(store), "--no-progress"]) == 0
    assert "(5 trained, 3 reused" in capsys.readouterr().out


@pytest.fixture
def small_disk(tmp_path):
    """A 24 KB tmpfs (a few records fill it), where this machine lets us mount one; skipped elsewhere."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_real_full_disk_under_two_workers_is_one_line_and_loses_nothing(tmp_path, small_disk):
    """The store on a tmpfs that fills after a few records, trained by two worker processes (the default on
    this 2-core machine): exit 2 with one line; every record on the disk is whole, no temporary file is left;
    on a disk with room, the same command trains only the rest."""
    grid = write_grid(tmp_path)
    grid.write_text(grid.read_text().replace("seeds = [0]", "seeds = [0, 1, 2, 3, 4]"))  # 40 runs
    store = small_disk / "store"
    done = subprocess.run([sys.executable, "-m", "mupcheck", "run", str(grid), "--store", str(store),
                           "--no-progress", "--workers", "2"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "No space left on device" in _one_line(done.stderr)
    kept = list((store / "runs").iterdir())
    assert all(p.suffix == ".json" and json.loads(p.read_text())["result"] for p in kept)
    bigger = tmp_path / "store"
    subprocess.run(["cp", "-r", str(store), str(bigger)], check=True)
    again = subprocess.run([sys.executable, "-m", "mupcheck", "run", str(grid), "--store", str(bigger),
                            "--no-progress"], capture_output=True, text=True)
    assert again.returncode == 0 and f"({40 - len(kept)} trained, {len(kept)} reused" in again.stdout


def test_a_full_disk_under_pytest_is_one_line_and_keeps_every_finished_run(tmp_path, pytester, monkeypatch):
    grid, store = write_grid(tmp_path), tmp_path / "store"
    _fill_disk_at_the_fourth_record(monkeypatch)  # pytester runs in this process: the plugin trains here
    result = pytester.runpytest(str(grid), "--mupcheck-store", str(store), "--mupcheck-no-report",
                                "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 2 and "No space left on device" in out and "Traceback" not in out
    assert len(list((store / "runs").iterdir())) == 3


def test_a_corrupt_record_under_pytest_is_set_aside_and_retrained(tmp_path, pytester):
    grid, store = write_grid(tmp_path), tmp_path / "store"
    assert main(["run", str(grid), "--store", str(store), "--no-progress"]) == 0
    plan = plan_grid(load_grid(grid))
    path = Store(store).path(plan.key(plan.configs[0]))
    path.write_text(json.dumps({**json.loads(path.read_text()), "key_material": None}))
    result = pytester.runpytest(str(grid), "--mupcheck-store", str(store), "--mupcheck-no-report",
                                "-p", "no:cacheprovider", "-W", "default")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret in (0, 5) and "corrupt run record" in out and "Traceback" not in out
    assert len(list((store / "runs").glob("*.json"))) == 8 and path.with_name(path.name + ".corrupt").exists()


def test_an_unwritable_report_folder_stops_pytest_before_training(tmp_path, pytester):
    grid = write_grid(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    result = pytester.runpytest(str(grid), "--mupcheck-store", str(tmp_path / "store"), "--mupcheck-reports",
                                str(tmp_path / "file" / "reports"), "-p", "no:cacheprovider")
    assert result.ret == 2 and "cannot write reports to" in result.stdout.str() + result.stderr.str()
    assert not (tmp_path / "store" / "runs").exists()  # found before any run trained


# Every shape of a broken record: not JSON, not UTF-8, JSON of the wrong type, fields missing, null or of the
# wrong type. Each is moved aside with one warning and its run trained again; none is a traceback.
DAMAGES = {
    "not json": lambda d: "{not json",
    "not utf-8": lambda d: "\udcff",
    "a list": lambda d: [],
    "wrong key": lambda d: {**d, "key": "wrong"},
    "key_material null": lambda d: {**d, "key_material": None},
    "key_material a list": lambda d: {**d, "key_material": []},
    "config null": lambda d: {**d, "key_material": {**d["key_material"], "config": None}},
    "result null": lambda d: {**d, "result": None},
    "status unknown": lambda d: {**d, "result": {**d["result"], "status": "great"}},
    "loss a string": lambda d: {**d, "result": {**d["result"], "loss": "low"}},
    "loss NaN for ok": lambda d: {**d, "result": {**d["result"], "loss": float("nan")}},
    "steps missing": lambda d: {**d, "result": {k: v for k, v in d["result"].items() if k != "steps"}},
    "checkpoint malformed": lambda d: {**d, "result": {**d["result"], "checkpoints": [{"step": "x"}]}},
    "fused malformed": lambda d: {**d, "result": {**d["result"], "fused": {"members": 1, "extra": 2}}},
    "provenance a list": lambda d: {**d, "provenance": [1, 2]},
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_corrupt_record_of_any_shape_is_quarantined_and_rerun(tmp_path, capsys, damage):
    grid = write_grid(tmp_path)
    store = Store(tmp_path / "store")
    assert main(["run", str(grid), "--store", str(store.root), "--no-progress"]) == 0
    plan = plan_grid(load_grid(grid))
    path = store.path(plan.key(plan.configs[0]))
    broken = DAMAGES[damage](json.loads(path.read_text()))
    path.write_text(broken if isinstance(broken, str) else json.dumps(broken), errors="surrogateescape")
    capsys.readouterr()
    with pytest.warns(CorruptRecordWarning, match="corrupt run record"):
        assert main(["run", str(grid), "--store", str(store.root), "--no-progress"]) == 0
    assert "(1 trained, 7 reused" in capsys.readouterr().out
    assert path.with_name(path.name + ".corrupt").exists() and store.load(plan.key(plan.configs[0])) is not None


@pytest.mark.parametrize("value", ["1000", "-1e6", "17"])
def test_an_absurd_learning_rate_is_refused_at_load_naming_the_key(tmp_path, value):
    path = write_grid(tmp_path)
    path.write_text(path.read_text().replace("lr_log2 = [-8, -6]", f"lr_log2 = [-8, {value}]"))
    with pytest.raises(GridError, match=r"`lr_log2`: must hold log2 learning rates between -64 and 16"):
        load_grid(path)


def test_a_failing_check_keeps_its_status_when_its_output_is_cut(tmp_path):
    """`mupcheck coord-check ... | head -1` under pipefail: the SP twin fails its check, and the pipeline
    fails too (the BrokenPipe handler used to return 0)."""
    cmd = (f"set -o pipefail; {sys.executable} -m mupcheck coord-check --model gpt --parametrization sp "
           f"--widths 16,32,64,128 --steps 2 --seeds 1 --plot {tmp_path / 'c.png'} | head -1")
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
