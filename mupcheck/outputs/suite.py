"""The suite behind the pytest plugin: grid files as test files, one item per verdict, training
before the items run, and the reports at the end.

Imported by `mupcheck.outputs.plugin` only when a pytest run involves a grid file: it imports
torch, pandas and matplotlib (about 3 s, measured on the project's 2-core machine), which a pytest
run without grids must not pay for.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest
import torch

from mupcheck.analysis.transfer import TransferError
from mupcheck.collect import MissingRunsError, collect_coarse
from mupcheck.engine.models import build_model
from mupcheck.errors import MupcheckError
from mupcheck.fmt import format_duration
from mupcheck.outputs.plugin import grid_files
from mupcheck.outputs.report import write_report
from mupcheck.outputs.verdicts import GridSuite, PlannedCheck, planned_checks
from mupcheck.plan import Plan, plan_grid, refinement_advice, refinement_configs
from mupcheck.provenance import utc_now
from mupcheck.spec import Grid, load_grid
from mupcheck.store import CorruptRecordWarning, Store
from mupcheck.sweep.local import run_grid
from mupcheck.sweep.progress import WorkMeter

__all__ = ["STATE", "GridFile", "State", "SuiteHooks", "activate"]

STATE = pytest.StashKey["State"]()


def activate(config: pytest.Config) -> State:
    """This session's state, created (and the suite's hooks registered) on first use."""
    if STATE in config.stash:
        return config.stash[STATE]
    # Reports go to reports/ in the directory pytest was started from: a place the user can predict, never
    # pytest's rootdir (which a --mupcheck-store outside the project can move to a common parent).
    reports = config.getoption("mupcheck_reports") or config.invocation_params.dir / "reports"
    state = config.stash[STATE] = State(
        store_root=config.getoption("mupcheck_store"),
        device=config.getoption("mupcheck_device"),
        fuse=config.getoption("mupcheck_fuse"),
        compile=config.getoption("mupcheck_compile"),
        backend=config.getoption("mupcheck_backend"),
        ray_address=config.getoption("mupcheck_ray_address"),
        gpus=config.getoption("mupcheck_gpus"),
        no_train=config.getoption("mupcheck_no_train"),
        reports_dir=Path(reports),
        write_reports=not config.getoption("mupcheck_no_report"),
        inconclusive=config.getoption("mupcheck_inconclusive"),
    )
    config.pluginmanager.register(SuiteHooks(config, state), "mupcheck-suite")
    return state


@dataclass
class State:
    """What one pytest session knows about its grids: options, plans, optima, reports written."""

    store_root: str | None
    device: str | None
    fuse: int | None
    compile: bool | None
    backend: str | None
    ray_address: str | None
    gpus: str | None
    no_train: bool
    reports_dir: Path
    write_reports: bool
    started: float = field(default_factory=time.time)
    plans: dict[Path, Plan] = field(default_factory=dict)
    suites: dict[Path, GridSuite] = field(default_factory=dict)
    inconclusive: str = "skip"
    grid_paths: dict[str, Path] = field(default_factory=dict)  # nodeid prefix -> grid file, seen in reports
    written: list[str] = field(default_factory=list)
    progress: StoreProgress | None = None  # the controller's progress thread under xdist

    @functools.cached_property
    def store(self) -> Store:
        # Created on first use: a pytest run that collects no grid must not create a store directory.
        return Store.open(self.store_root)

    def plan(self, grid: Grid) -> Plan:
        path = Path(grid.path)
        if path not in self.plans:
            self.plans[path] = plan_grid(grid, self.device)
        return self.plans[path]

    def suite(self, grid: Grid) -> GridSuite:
        """The grid's checks and their evidence, shared by its items and its report."""
        path = Path(grid.path)
        if path not in self.suites:
            self.suites[path] = GridSuite(grid) if grid.imported else GridSuite(self.plan(grid), self.store)
        return self.suites[path]



class GridFile(pytest.File):
    """A grid file: one item per check the grid asks for (`mupcheck.outputs.verdicts.planned_checks`)."""

    def collect(self):
        grid = load_grid(self.path)
        self.grid = grid
        reason = None if grid.imported else _missing_gpu(grid, self.config.getoption("mupcheck_device"))
        if reason is None and not grid.imported:
            # Data and model problems are one collection error here, not the same failure in every item.
            state = self.config.stash[STATE]
            plan = state.plan(grid)  # a trainer's command is checked here (mupcheck.engine.command.check_trainer)
            if grid.trainer is None:
                build_model(plan.configs[0], plan.data.vocab_size)
        for check in planned_checks(grid):
            item = CheckItem.from_parent(self, name=check.id, check=check)
            item.add_marker(pytest.mark.mupcheck)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
            yield item

    def repr_failure(self, excinfo):  # type: ignore[override]  # pytest's own signature is untyped
        if isinstance(excinfo.value, MupcheckError):
            return str(excinfo.value)  # a user mistake: the message, not a traceback
        return super().repr_failure(excinfo)


class BorderlineVerdict(UserWarning):
    """A decisive verdict whose deciding bound lies within 0.05 log2 of the band's edge or 0.02 points of the
    regret threshold: it stands, but a little more data could move it."""


class CheckItem(pytest.Item):
    """One check of a grid, rendered from the grid's suite (computed once per grid and session).

    pass -> passed; fail -> failed with the evidence; xfail (an expected break happened) -> xfailed;
    xpass (an expected break did not happen) -> failed; inconclusive -> skipped with the reason, or failed
    under --mupcheck-inconclusive=fail.
    """

    def __init__(self, *, check: PlannedCheck, **kw: Any):
        super().__init__(**kw)
        self.check = check

    @property
    def grid(self) -> Grid:
        return cast(GridFile, self.parent).grid

    @property
    def state(self) -> State:
        return self.config.stash[STATE]

    def runtest(self) -> None:
        suite = self.state.suite(self.grid)
        path = Path(self.grid.path)
        if self.check.needs_runs:
            try:
                suite.df  # noqa: B018  # the runs, collected once for every item of the grid
            except MissingRunsError as e:
                if self.state.no_train:
                    pytest.skip(f"--mupcheck-no-train: {e}")
                raise
        result = suite.outcome(self.check.id)
        if result.borderline:
            # The outcome stands; a passing item shows no reason, so the warnings summary carries it.
            self.user_properties.append(("borderline", result.borderline))
            warnings.warn(BorderlineVerdict(f"{self.name}: borderline: {result.borderline}"), stacklevel=1)
        if result.outcome == "xfail":
            pytest.xfail(f"expected break (expect_break in {path.name}): {result.summary}")
        if result.outcome == "xpass":
            raise TransferError(f"[XPASS(strict)] expected break did not happen (expect_break in {path.name}): "
                                f"{result.detail}")
        if result.outcome == "inconclusive":
            if self.state.inconclusive == "fail":
                raise TransferError(f"INCONCLUSIVE (--mupcheck-inconclusive=fail): {result.detail}")
            pytest.skip(f"inconclusive: {result.summary}")
        if result.outcome == "fail":
            raise TransferError(result.detail)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (AssertionError, MupcheckError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, self.name  # a line number (0: the file) lets pytest report skips


def _missing_gpu(grid: Grid, device_option: str | None) -> str | None:
    """Why a grid that asks for CUDA is skipped on a machine without it (None: it can run here)."""
    device = device_option or grid.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"{Path(grid.path).name} trains on {device!r}, and torch sees no CUDA device here"
    return None


def _is_xdist_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("dsession")


class StoreProgress(threading.Thread):
    """On the xdist controller: every `interval` seconds, runs in the store per grid, with an ETA that
    weighs runs by their FLOPs (the workers' steps are not seen here: it moves as runs finish)."""

    def __init__(self, config: pytest.Config, state: State, interval: float = 30.0):
        super().__init__(daemon=True, name="mupcheck-progress")
        self.config, self.state, self.interval = config, state, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        try:
            grids = [load_grid(p) for p in grid_files(self.config)]
            plans = [self.state.plan(g) for g in grids if not g.imported]  # a results grid trains nothing
        except MupcheckError:
            return  # the workers report the problem
        costs = {plan.grid.name: plan.costs() for plan in plans}  # key -> (FLOPs, steps), in plan order
        keys = {name: list(grid_costs) for name, grid_costs in costs.items()}
        if not keys:
            return  # no grid on the command line: nothing to report
        refined = {plan.grid.name: plan.grid.refine is None for plan in plans}
        work = WorkMeter({k: v for grid_costs in costs.values() for k, v in grid_costs.items()})
        work.eta(time.monotonic(), self._stored(keys), sum(len(ks) for ks in keys.values()))
        while not self.stopped.wait(self.interval):
            stored = self._stored(keys)
            done = {name: sum(k in stored for k in ks) for name, ks in keys.items()}
            for plan in plans:  # once a grid's coarse runs are in, its refinement runs join the count
                name = plan.grid.name
                if not refined[name] and done[name] == len(keys[name]):
                    extra = replace(plan, configs=tuple(
                        refinement_configs(plan.grid, collect_coarse(plan, self.state.store)))).costs()
                    keys[name] = keys[name] + list(extra)
                    work.add(extra)
                    refined[name] = True
            total, finished = sum(len(ks) for ks in keys.values()), sum(done.values())
            seconds = work.eta(time.monotonic(), stored, total)
            eta = f", ETA {format_duration(seconds)}" if seconds is not None else ""
            parts = ", ".join(f"{name} {done[name]}/{len(ks)}" for name, ks in keys.items())
            if reporter is not None:
                reporter.write_line(f"mupcheck: runs in the store: {parts}{eta}")
            if finished >= total and all(refined.values()):
                return

    def _stored(self, keys: dict[str, list[str]]) -> set[str]:
        return {k for ks in keys.values() for k in ks if self.state.store.path(k).exists()}

    def stop(self) -> None:
        self.stopped.set()


class SuiteHooks:
    """Hooks that need the session state: which grids took part, and the reports at the end."""

    def __init__(self, config: pytest.Config, state: State):
        self.config, self.state = config, state

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        """Before any item runs: train the missing runs of every grid that has selected items."""
        config = session.config
        state = self.state
        if config.option.collectonly:
            return None
        if state.write_reports and not hasattr(config, "workerinput"):
            # Before any training: a report folder nobody can write would otherwise be found at the end.
            problem = _unwritable(state.reports_dir)
            if problem:
                pytest.exit(f"mupcheck: cannot write reports to {state.reports_dir}: {problem}; choose a writable "
                            "folder (--mupcheck-reports DIR) or --mupcheck-no-report", returncode=2)
        if state.no_train:
            return None
        if _is_xdist_controller(config):
            # The workers train and show nothing; the controller reports how far the store has come.
            state.progress = StoreProgress(config, state, config.getoption("mupcheck_progress"))
            state.progress.start()
            return None

        grids = {id(item.parent): cast(GridFile, item.parent) for item in session.items
                 if isinstance(item, CheckItem) and item.check.needs_runs}
        workerinput = getattr(config, "workerinput", None)  # set by pytest-xdist in its workers
        in_worker = workerinput is not None
        # Each xdist worker trains on its own GPU when there are several (see sweep.pin_device).
        worker = int(workerinput["workerid"].lstrip("gw")) if workerinput is not None else None
        capture = config.pluginmanager.getplugin("capturemanager")
        for grid_file in grids.values():
            grid = grid_file.grid
            if grid.imported:
                if not in_worker:
                    self._advise(grid_file)
                continue  # trained elsewhere: nothing to train
            if _missing_gpu(grid, state.device):
                continue  # its items are skipped, with the reason
            try:
                with capture.global_and_fixture_disabled():
                    if not in_worker:
                        print(f"\nmupcheck: {grid_file.path.name}: training missing runs into {state.store.root}",
                              file=sys.stderr)
                    # Without xdist, as `mupcheck run` does: a process per core for a CPU grid worth it.
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", CorruptRecordWarning)
                        summary = run_grid(grid, state.store, device=state.device, show_progress=not in_worker,
                                           workers=1 if in_worker else 0,
                                           fuse=state.fuse, compile=state.compile, worker=worker,
                                           backend=state.backend, ray_address=state.ray_address,
                                           gpus=state.gpus, peers=int(workerinput["workercount"]) if workerinput else 1)
                    # pytest shows warnings raised by tests, not by this hook: say each corrupt record here.
                    for w in caught:
                        if issubclass(w.category, CorruptRecordWarning):
                            print(f"mupcheck: {grid_file.path.name}: {w.message}", file=sys.stderr)
                        else:
                            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    if not in_worker:
                        print(f"mupcheck: {grid_file.path.name}: {summary.line()}", file=sys.stderr)
                if summary.interrupted:
                    raise KeyboardInterrupt
            except MupcheckError as e:
                # A store that cannot be written, a model that cannot be built: one line for the session,
                # exit 2, as `mupcheck run` gives; finished runs are already in the store.
                pytest.exit(f"mupcheck: {grid_file.path.name}: {e}", returncode=2)
        return None

    def _advise(self, grid_file: GridFile) -> None:
        """A results grid trains nothing: where a trained grid would add refinement runs, say what to run."""
        try:
            lines = refinement_advice(grid_file.grid, self.state.suite(grid_file.grid).df)
        except MupcheckError:
            return  # its items report the problem
        capture = self.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nmupcheck: {grid_file.path.name}: results trained elsewhere; nothing to train", file=sys.stderr)
            for line in lines:
                print(f"mupcheck: {grid_file.path.name}: run next: {line}", file=sys.stderr)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the xdist controller this sees the workers' items too.
        file_part = report.nodeid.split("::")[0]
        if file_part.endswith(".toml") and report.when == "call":
            self.state.grid_paths.setdefault(file_part, self.config.rootpath / file_part)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state, config = self.state, self.config
        if state.progress is not None:
            state.progress.stop()
        if not state.write_reports or hasattr(config, "workerinput"):
            return

        elapsed = time.time() - state.started
        for file_part, path in state.grid_paths.items():
            try:
                suite = state.suite(load_grid(path))
                extra = {
                    "command": "`" + " ".join(["pytest", *config.invocation_params.args]) + "`",
                    "report written": utc_now(),
                    "wall time": f"{elapsed / 60:.1f} min (the whole pytest session)",
                }
                if not suite.grid.imported:
                    extra["runs this session"] = _trained_since(suite.df, state.store, state.started)
                # Under xdist the controller has no suite of its own: it reads the store (checks rerun here).
                written = write_report(suite, state.reports_dir, extra, as_json=True)
                state.written.append(str(written))
            except MupcheckError as e:
                state.written.append(f"not written for {file_part}: {str(e).splitlines()[0]}")
                session.exitstatus = pytest.ExitCode.INTERRUPTED  # 2: a verdict nobody can read is no pass

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.state.written:
            terminalreporter.write_line(f"mupcheck report: {line}")


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (created if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".mupcheck-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return e.strerror or str(e)
    return None


def _trained_since(df: pd.DataFrame, store: Store, started: float) -> str:
    """'N trained, M reused from the store' over the suite's collected runs (refinement runs included):
    a record written since the session started was trained in it. By the file's time, not the record's
    date: that is whole seconds, so a run stored in the second a session started would count as its own."""
    trained = sum(store.path(key).stat().st_mtime >= started for key in df["key"])
    return f"{trained} trained, {len(df) - trained} reused from the store"
