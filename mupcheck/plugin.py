"""pytest plugin: a grid file is a test suite, one item per transfer comparison.

    pytest grids/cpu_width.toml            # train what is missing, then one verdict per item
    pytest grids/ -n 2                     # runs spread over two xdist workers, same verdicts
    pytest grids/ --mupcheck-no-train      # skip (listing the missing runs) instead of training

Registered through the `pytest11` entry point. `.toml` files inside a folder named `grids` (or
named on the command line) are collected as `GridFile`s. Items, with ids that read like the finding:
`lint[mup]` (muP lint of the model at every width), `coord[mup]` (coordinate check, when the grid
has a `[coord_check]` table), one transfer item per comparison, e.g.
`grids/cpu_width.toml::width[mup tokens=512K 32->256]`, power-rule items `rule_tokens[...]`, and
`wider[mup tokens=512K]`. Missing runs are trained before the items run, in every process that
runs items (the store's locks spread the runs over xdist workers and keep any run from being
trained twice). Comparisons listed in the grid's `expect_break` are strict
xfails. At the end (on the xdist controller only) `reports/<grid>.md` is written from the store.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from mupcheck.errors import MupcheckError
from mupcheck.grid import Grid, Parametrization, format_tokens, load_grid
from mupcheck.store import STORE_ENV, Store

_STATE = pytest.StashKey["_State"]()


@dataclass
class _State:
    store_root: str | None
    device: str | None
    fuse: int | None
    compile: bool | None
    no_train: bool
    reports_dir: Path
    write_reports: bool
    started: float = field(default_factory=time.time)
    plans: dict[Path, Any] = field(default_factory=dict)
    errors: dict[Path, MupcheckError] = field(default_factory=dict)
    optima: dict[Path, Any] = field(default_factory=dict)
    frames: dict[Path, Any] = field(default_factory=dict)
    grid_paths: dict[str, Path] = field(default_factory=dict)  # nodeid prefix -> grid file, seen in reports
    written: list[str] = field(default_factory=list)
    progress: Any = None  # the controller's _StoreProgress thread under xdist
    coord_results: dict[Path, dict[str, Any]] = field(default_factory=dict)  # reused by the report

    @functools.cached_property
    def store(self) -> Store:
        # Created on first use: a pytest run that collects no grid must not create a store directory.
        return Store.open(self.store_root)

    def plan(self, grid: Grid) -> Any:
        from mupcheck.sweep import plan_grid

        path = Path(grid.path)
        if path not in self.plans:
            self.plans[path] = plan_grid(grid, self.device)
        return self.plans[path]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mupcheck", "mupcheck: muP learning-rate transfer suite")
    group.addoption("--mupcheck-store", metavar="DIR", default=None,
                    help=f"result store (default: ${STORE_ENV}, else ./.mupcheck)")
    group.addoption("--mupcheck-no-train", action="store_true",
                    help="do not train missing runs: skip their items and list what is missing")
    group.addoption("--mupcheck-device", default=None, help="cpu, cuda, cuda:N or auto (default: the grid's)")
    group.addoption("--mupcheck-fuse", type=int, default=None, metavar="N",
                    help="train up to N runs that differ only in lr, seed and tokens as one batched model "
                         "(default: the grid's `fuse`; 1: one at a time)")
    group.addoption("--mupcheck-compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile fused training, or not (default: the grid's `compile`)")
    group.addoption("--mupcheck-reports", metavar="DIR", default=None,
                    help="where reports are written (default: reports/ under the rootdir)")
    group.addoption("--mupcheck-no-report", action="store_true", help="write no report")
    group.addoption("--mupcheck-progress", type=float, default=30.0, metavar="SECONDS",
                    help="under xdist, how often the controller reports runs in the store (default 30)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mupcheck: an item collected from a mupcheck grid file")
    reports = config.getoption("mupcheck_reports") or config.rootpath / "reports"
    state = config.stash[_STATE] = _State(
        store_root=config.getoption("mupcheck_store"),
        device=config.getoption("mupcheck_device"),
        fuse=config.getoption("mupcheck_fuse"),
        compile=config.getoption("mupcheck_compile"),
        no_train=config.getoption("mupcheck_no_train"),
        reports_dir=Path(reports),
        write_reports=not config.getoption("mupcheck_no_report"),
    )
    config.pluginmanager.register(_SessionHooks(config, state), "mupcheck-session")
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        import torch

        # Share the cores among xdist workers: one-thread processes beat one multi-thread process here.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(worker["workercount"])))
    # User model factories are imported from the working directory, as in the CLI.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and (file_path.parent.name == "grids" or parent.session.isinitpath(file_path)):
        return GridFile.from_parent(parent, path=file_path)
    return None


class GridFile(pytest.File):
    """A grid file: one `TransferItem` per comparison the grid asks for."""

    def collect(self):
        grid = load_grid(self.path)
        self.grid = grid
        reason = _missing_gpu(grid, self.config.getoption("mupcheck_device"))
        for item in self._items(grid):
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
            yield item

    def _items(self, grid: Grid):
        from mupcheck.transfer import is_expected_break, plan_comparisons, rule_comparisons

        if "mup" in grid.parametrization:
            yield LintItem.from_parent(self, name="lint[mup]")
        if grid.coord_check is not None:
            for par in grid.coord_check.parametrization:
                yield CoordItem.from_parent(self, name=f"coord[{par}]", parametrization=par)
        for comp in plan_comparisons(grid):
            item = TransferItem.from_parent(self, name=comp.test_id, comparison=comp)
            item.add_marker(pytest.mark.mupcheck)
            if is_expected_break(comp, grid.transfer):
                item.add_marker(pytest.mark.xfail(
                    strict=True, raises=AssertionError,
                    reason=f"expected break along {comp.axis} (expect_break in {self.path.name})"))
            yield item
        for comp in rule_comparisons(grid):
            yield TransferItem.from_parent(self, name=f"rule_{comp.test_id}", comparison=comp, with_rule=True)
        if "mup" in grid.parametrization and len(grid.widths) > 1:
            for tokens in grid.tokens:
                yield WiderItem.from_parent(self, name=f"wider[mup tokens={format_tokens(tokens)}]", tokens=tokens)

    def repr_failure(self, excinfo):  # type: ignore[override]  # pytest's own signature is untyped
        if isinstance(excinfo.value, MupcheckError):
            return str(excinfo.value)  # a user mistake: the message, not a traceback
        return super().repr_failure(excinfo)


class _GridItem(pytest.Item):
    """An item of a grid file; failures print their message, not a traceback."""

    @property
    def grid(self) -> Grid:
        return cast(GridFile, self.parent).grid

    @property
    def state(self) -> _State:
        return self.config.stash[_STATE]

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (AssertionError, MupcheckError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, self.name  # a line number (0: the file) lets pytest report skips


class LintItem(_GridItem):
    """muP lint of the grid's model at every width: base shapes, readout, optimizer."""

    def runtest(self) -> None:
        from mupcheck.lint import lint_grid

        findings = lint_grid(self.grid, self.state.plan(self.grid).data)
        if findings:
            raise AssertionError(f"{len(findings)} muP lint finding(s):\n" + "\n".join(map(str, findings)))


class CoordItem(_GridItem):
    """Coordinate check of the grid's model at one parametrization (the `[coord_check]` table)."""

    def __init__(self, *, parametrization: Parametrization, **kw: Any):
        super().__init__(**kw)
        self.parametrization = parametrization

    def runtest(self) -> None:
        from mupcheck.coord import check_model

        result = check_model(self.grid, self.parametrization, self.state.plan(self.grid).data)
        self.state.coord_results.setdefault(Path(self.grid.path), {})[self.parametrization] = result
        if not result.passed:
            raise AssertionError(result.message())


class WiderItem(_GridItem):
    """'Wider is better' under muP: at the reference width's best learning rate, loss falls with width."""

    def __init__(self, *, tokens: int, **kw: Any):
        super().__init__(**kw)
        self.tokens = tokens

    def runtest(self) -> None:
        from mupcheck.transfer import reference_value, wider_is_better

        grid = self.grid
        optima = _optima(self.state, grid, Path(grid.path))
        verdict = wider_is_better(optima, "mup", self.tokens, grid.widths, reference_value(grid, "width"),
                                  grid.transfer.wider_tolerance)
        if not verdict.passed:
            raise AssertionError(verdict.message())


class TransferItem(_GridItem):
    """One comparison: does the optimum of the reference cell transfer to the other cell?

    With `with_rule`, a tokens comparison is judged after the grid's power rule moved the reference
    learning rate by (T_other / T_ref)^-beta.
    """

    def __init__(self, *, comparison: Any, with_rule: bool = False, **kw: Any):
        super().__init__(**kw)
        self.comparison, self.with_rule = comparison, with_rule

    def runtest(self) -> None:
        from mupcheck.transfer import TransferError, judge, rule_beta

        grid = self.grid
        optima = _optima(self.state, grid, Path(grid.path))
        beta = 0.0
        if self.with_rule:
            beta, _ = rule_beta(self.state.frames[Path(grid.path)], grid, self.comparison.parametrization)
        verdict = judge(self.comparison, optima, grid.transfer, beta=beta)
        if not verdict.passed:
            raise TransferError(verdict.message())


def _optima(state: _State, grid: Grid, path: Path) -> Any:
    from mupcheck.collect import MissingRunsError, collect, find_optima

    if path in state.errors:
        raise state.errors[path]
    if path not in state.optima:
        try:
            state.frames[path] = collect(state.plan(grid), state.store)
            state.optima[path] = find_optima(state.frames[path])
        except MissingRunsError as e:
            if state.no_train:
                pytest.skip(f"--mupcheck-no-train: {e}")
            raise
    return state.optima[path]


def _missing_gpu(grid: Grid, device_option: str | None) -> str | None:
    """Why a grid that asks for CUDA is skipped on a machine without it (None: it can run here)."""
    import torch

    device = device_option or grid.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"{Path(grid.path).name} trains on {device!r}, and torch sees no CUDA device here"
    return None


def _is_xdist_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("dsession")


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Before any item runs: train the missing runs of every grid that has selected items."""
    config = session.config
    state = config.stash[_STATE]
    if state.no_train or config.option.collectonly:
        return None
    if _is_xdist_controller(config):
        # The workers train and show nothing; the controller reports how far the store has come.
        state.progress = _StoreProgress(config, state, config.getoption("mupcheck_progress"))
        state.progress.start()
        return None
    from mupcheck.sweep import run_grid

    grids = {id(item.parent): cast(GridFile, item.parent) for item in session.items
             if isinstance(item, (TransferItem, WiderItem))}
    workerinput = getattr(config, "workerinput", None)  # set by pytest-xdist in its workers
    in_worker = workerinput is not None
    # Each xdist worker trains on its own GPU when there are several (see sweep.pin_device).
    worker = int(workerinput["workerid"].lstrip("gw")) if workerinput is not None else None
    capture = config.pluginmanager.getplugin("capturemanager")
    for grid_file in grids.values():
        grid = grid_file.grid
        if _missing_gpu(grid, state.device):
            continue  # its items are skipped, with the reason
        try:
            with capture.global_and_fixture_disabled():
                if not in_worker:
                    print(f"\nmupcheck: {grid_file.path.name}: training missing runs into {state.store.root}",
                          file=sys.stderr)
                summary = run_grid(grid, state.store, device=state.device, show_progress=not in_worker,
                                   fuse=state.fuse, compile=state.compile, worker=worker)
                if not in_worker:
                    print(f"mupcheck: {grid_file.path.name}: {summary.line()}", file=sys.stderr)
            if summary.interrupted:
                raise KeyboardInterrupt
        except MupcheckError as e:
            state.errors[Path(grid.path)] = e
    return None


def _grid_files(config: pytest.Config) -> list[Path]:
    """The grid files a command line names: .toml files given, and those in folders named `grids`."""
    found = []
    for arg in config.args:
        path = Path(arg.split("::")[0])
        if path.is_file() and path.suffix == ".toml":
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob("*.toml") if p.parent.name == "grids")
    return found


class _StoreProgress(threading.Thread):
    """On the xdist controller: every `interval` seconds, runs in the store per grid, with an ETA."""

    def __init__(self, config: pytest.Config, state: _State, interval: float = 30.0):
        super().__init__(daemon=True, name="mupcheck-progress")
        self.config, self.state, self.interval = config, state, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        try:
            plans = [self.state.plan(load_grid(p)) for p in _grid_files(self.config)]
        except MupcheckError:
            return  # the workers report the problem
        keys = {plan.grid.name: [plan.key(c) for c in plan.configs] for plan in plans}
        start, first = time.monotonic(), None
        while not self.stopped.wait(self.interval):
            done = {name: sum(self.state.store.path(k).exists() for k in ks) for name, ks in keys.items()}
            total, finished = sum(len(ks) for ks in keys.values()), sum(done.values())
            first = finished if first is None else first
            rate = (finished - first) / (time.monotonic() - start)
            eta = f", ETA {(total - finished) / rate / 60:.0f} min" if rate > 0 and finished < total else ""
            parts = ", ".join(f"{name} {done[name]}/{len(ks)}" for name, ks in keys.items())
            if reporter is not None:
                reporter.write_line(f"mupcheck: runs in the store: {parts}{eta}")
            if finished >= total:
                return

    def stop(self) -> None:
        self.stopped.set()


class _SessionHooks:
    """Hooks that need the session state: which grids took part, and the reports at the end."""

    def __init__(self, config: pytest.Config, state: _State):
        self.config, self.state = config, state

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
        from mupcheck.report import write_report

        elapsed = time.time() - state.started
        started_iso = _dt.datetime.fromtimestamp(state.started, _dt.UTC).isoformat(timespec="seconds")
        for file_part, path in state.grid_paths.items():
            try:
                plan = state.plan(load_grid(path))
                extra = {
                    "command": "`" + " ".join(["pytest", *config.invocation_params.args]) + "`",
                    "report written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "wall time": f"{elapsed / 60:.1f} min (the whole pytest session)",
                    "runs this session": _trained_since(plan, state.store, started_iso),
                }
                state.reports_dir.mkdir(parents=True, exist_ok=True)
                coord = state.coord_results.get(Path(plan.grid.path))
                state.written.append(str(write_report(plan, state.store, state.reports_dir, extra, coord)))
            except MupcheckError as e:
                state.written.append(f"not written for {file_part}: {str(e).splitlines()[0]}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.state.written:
            terminalreporter.write_line(f"mupcheck report: {line}")


def _trained_since(plan: Any, store: Store, started_iso: str) -> str:
    dates = [r["provenance"]["date"] for r in (store.load(plan.key(c)) for c in plan.configs) if r]
    trained = sum(d >= started_iso for d in dates)
    return f"{trained} trained, {len(dates) - trained} reused from the store"
