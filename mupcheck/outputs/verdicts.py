"""The suite of one grid, computed once: every check, its outcome, and the evidence behind it.

    checks = planned_checks(grid)              # known from the grid file alone (pytest collects these)
    suite = GridSuite(plan, store)             # the evidence, gathered lazily and once
    suite = GridSuite(grid)                    # a results grid: its runs are read from its results files
    suite.outcome("width[mup tokens=1M 32->256]")   # -> Outcome(outcome, summary, detail)
    suite.outcomes()                           # every check, in order: what the report renders

The pytest items and the report both render from a `GridSuite`, so they cannot disagree, and nothing is
computed twice: the runs are collected once, the optima found once, lint and coordinate checks run once,
the drift law and the power rule's beta fitted once per parametrization.

Outcomes: "pass", "fail", "xfail" (an expected break that happened), "xpass" (an expected break that did
not: a failure, since the control then shows nothing), "inconclusive" (the data cannot decide; not a
pass: pytest shows it as a skip with the reason, or a failure under --mupcheck-inconclusive=fail).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mupcheck.analysis.comparison import (
    Comparison,
    is_expected_break,
    plan_comparisons,
    reference_value,
    rule_comparisons,
    size_ladder,
)
from mupcheck.analysis.drift import AxisLaw, DriftFit, MarginLaw, WidthLaw, axis_law, drift_law, margin_law, width_law
from mupcheck.analysis.noise import NoiseModel, noise_model
from mupcheck.analysis.optima import CellOptimum, find_optima, one_slice
from mupcheck.analysis.scaling import ScalingLaw, scaling_law
from mupcheck.analysis.stability import StabilityVerdict, judge_stability
from mupcheck.analysis.transfer import Verdict, batch_rule_exponent, judge, rule_beta
from mupcheck.analysis.wider import WiderVerdict, wider_is_better
from mupcheck.checks.coord import CoordResult, check_model, check_trainer_coords, coords_frame
from mupcheck.checks.lint import LintFinding, lint_grid
from mupcheck.collect import collect_available, collect_results
from mupcheck.fmt import format_tokens
from mupcheck.plan import Plan
from mupcheck.spec import AXES, Cell, Grid, Parametrization
from mupcheck.store import Store

__all__ = ["GridSuite", "NoiseFloor", "Outcome", "PlannedCheck", "planned_checks"]

Kind = Literal["lint", "coord", "transfer", "rule", "stability", "wider"]
OutcomeName = Literal["pass", "fail", "xfail", "xpass", "inconclusive"]


@dataclass(frozen=True)
class PlannedCheck:
    """A check the grid asks for, known before anything trains."""

    id: str
    kind: Kind
    comparison: Comparison | None = None
    parametrization: Parametrization | None = None
    tokens: int | None = None
    expected_break: bool = False
    at: tuple[tuple[str, int], ...] = ()  # a wider check's depth and batch size, where the grid varies them

    @property
    def needs_runs(self) -> bool:
        return self.kind in ("transfer", "rule", "stability", "wider")


def planned_checks(grid: Grid) -> list[PlannedCheck]:
    """Every check of a grid, in the order items and report rows appear."""
    checks: list[PlannedCheck] = []
    arm = grid.mup_arm
    if arm is not None and not grid.imported and grid.trainer is None:  # no model of mupcheck's to lint
        checks.append(PlannedCheck(f"lint[{arm}]", "lint", parametrization=arm))
    for par in grid.coord_check.parametrization if grid.coord_check else ():
        checks.append(PlannedCheck(f"coord[{par}]", "coord", parametrization=par))
    for comp in plan_comparisons(grid):
        expected = is_expected_break(comp, grid.transfer)
        checks.append(PlannedCheck(comp.test_id, "transfer", comp, expected_break=expected))
    for comp in rule_comparisons(grid):
        checks.append(PlannedCheck(f"rule_{comp.test_id}", "rule", comp))
    # The stability margin of every comparison that is expected to transfer: an SP control is expected to
    # move its optimum, and where its transferred rate lands against the wall is not a promise of SP's.
    for comp in plan_comparisons(grid):
        if not is_expected_break(comp, grid.transfer):
            checks.append(PlannedCheck(f"stability_{comp.test_id}", "stability", comp))
    if arm is not None and len(grid.widths) > 1:
        for d, b, at in grid.slices():
            name = " ".join([f"{arm} tokens={{}}", *(f"{a}={v}" for a, v in at)])
            checks += [PlannedCheck(f"wider[{name.format(format_tokens(t))}]", "wider", parametrization=arm,
                                    tokens=t, at=at) for t in grid.tokens
                       if len(wider_widths(grid, arm, t, d, b)) > 1]
    return checks


def wider_widths(grid: Grid, arm: str, tokens: int, depth: int, batch_size: int) -> tuple[int, ...]:
    """The widths 'wider is better' compares at one budget, depth and batch size: those the grid has runs at
    (a ragged sweep may lack some), when the reference width is among them; () otherwise."""
    widths = tuple(w for w in grid.widths if grid.has_cell(Cell(arm, w, tokens, depth, batch_size)))
    return widths if reference_value(grid, "width") in widths else ()


def reference_slice(grid: Grid) -> tuple[int, int]:
    """The depth and batch size the laws along width and tokens are fitted at: the reference ones."""
    return reference_value(grid, "depth"), reference_value(grid, "batch_size")


@dataclass(frozen=True)
class Outcome:
    """What one check concluded: the outcome, one line, and the evidence."""

    check: PlannedCheck
    outcome: OutcomeName
    summary: str
    detail: str
    borderline: str = ""  # a decisive transfer verdict whose deciding bound lies near its threshold: why


@dataclass(frozen=True)
class NoiseFloor:
    """How much seeds alone move things in this grid: the optimum (log2) and the loss at a fixed rate."""

    parametrization: str
    n_seeds: int
    optimum_sd: tuple[float, ...]  # per cell with >= 2 seeds and a found optimum
    loss_spread: tuple[float, ...]  # per cell: relative SD of the loss across seeds at its best rate

    def sentence(self) -> str:
        if self.n_seeds < 2:
            return f"{self.parametrization}: one seed: the noise floor is unknown (add seeds)"
        parts = []
        if self.optimum_sd:
            parts.append(f"the optimum's seed-to-seed SD is {np.median(self.optimum_sd):.2f} log2 (median over "
                         f"{len(self.optimum_sd)} cells; largest {max(self.optimum_sd):.2f})")
        if self.loss_spread:
            parts.append(f"the loss at a cell's best rate varies by {100 * np.median(self.loss_spread):.2f}% "
                         f"(median relative SD; largest {100 * max(self.loss_spread):.2f}%)")
        return f"{self.parametrization}, {self.n_seeds} seeds: " + "; ".join(parts)


def _noise_floor(optima: dict[Cell, CellOptimum], parametrization: str) -> NoiseFloor:
    cells = [o for k, o in optima.items() if k.parametrization == parametrization]
    n = max((o.n_seeds for o in cells), default=0)
    sds = tuple(o.seed_sd for o in cells if math.isfinite(o.seed_sd))
    spreads = []
    for o in cells:
        if o.n_seeds < 2 or not math.isfinite(o.best_measured_log2):
            continue
        j = list(o.xs).index(o.best_measured_log2)
        values = np.array([curve[j] for _, curve in o.seed_losses])
        if np.isfinite(values).all():
            spreads.append(float(values.std(ddof=1) / values.mean()))
    return NoiseFloor(parametrization, n, sds, tuple(spreads))


class GridSuite:
    """The evidence of one grid's checks, gathered on first use and kept."""

    def __init__(self, source: Plan | Grid, store: Store | None = None, frame: pd.DataFrame | None = None):
        """`source`: the plan of a grid this package trains (its runs are read from `store`), or a results
        grid (its runs are read from its results files). `frame` stands in for the runs (a collected frame):
        for tests and saved frames."""
        self.plan = source if isinstance(source, Plan) else None
        self.store = store
        self.grid = source.grid if isinstance(source, Plan) else source
        self._coord: dict[Parametrization, CoordResult] = {}
        self.rule_errors: dict[str, str] = {}  # rule checks whose rule could not be fitted, and why
        self.planned = {c.id: c for c in planned_checks(self.grid)}
        self.missing: tuple[tuple[Cell, int], ...] = ()  # cells with runs missing from the store (collect_available)
        if frame is not None:
            # A frame that does not record depth or batch size (0, see Cell) is the grid's one depth and size.
            for axis in ("depth", "batch_size"):
                if axis not in frame or (frame[axis] == 0).all():
                    frame = frame.assign(**{axis: getattr(self.grid, axis)})
            self.__dict__["df"] = frame  # what the cached property would have collected

    # --- evidence (each computed once) ---------------------------------------------------------

    @functools.cached_property
    def df(self) -> pd.DataFrame:
        """Every run of the grid's complete cells: a cell with runs missing from the store is left out whole and
        listed in `missing` (MissingRunsError when no cell is complete)."""
        if self.grid.imported:
            return collect_results(self.grid)
        if self.store is None or self.plan is None:
            raise ValueError("a GridSuite of a trained grid needs its plan and store, or its frame")
        found = collect_available(self.plan, self.store)
        self.missing = found.missing
        return found.frame

    def missing_cells(self, check: PlannedCheck) -> list[Cell]:
        """The cells a check needs that have runs missing from the store."""
        absent = {cell for cell, _ in self.missing}
        if not absent:
            return []
        needed: list[Cell] = []
        if check.comparison is not None:
            needed = [check.comparison.cell(check.comparison.ref), check.comparison.cell(check.comparison.other)]
        elif check.kind == "wider" and check.tokens is not None:
            coords = {**{a: self.grid.values(a)[0] for a in AXES[2:]}, **dict(check.at)}
            needed = [Cell(self.grid.mup_arm or "mup", w, check.tokens, coords["depth"], coords["batch_size"])
                      for w in self.grid.widths]
        return [c for c in needed if c in absent]

    def failures(self) -> list[dict[str, Any]]:
        """Why runs of the grid that are missing could not be trained (the store's failures/), in plan order."""
        if self.store is None or self.plan is None or not self.missing:
            return []
        folder = self.store.root / "failures"
        out = []
        for cfg in self.plan.configs:
            path = folder / f"{self.plan.key(cfg)}.json"
            if path.is_file() and self.store.load(self.plan.key(cfg)) is None:
                with contextlib.suppress(OSError, ValueError):
                    out.append(json.loads(path.read_text()))
        return out

    @functools.cached_property
    def optima(self) -> dict[Cell, CellOptimum]:
        return find_optima(self.df, self.grid.stability.boundary_rise, self.grid.tuned)

    @functools.cached_property
    def lr_optima(self) -> dict[Cell, CellOptimum]:
        """Under a joint sweep (the learning rate and another key, `Grid.joint`), the learning rate's optima
        with the other key tuned per seed (collect.along); {} otherwise. The items judge the swept key; the
        report shows these beside it (the joint optimum)."""
        return find_optima(self.df, self.grid.stability.boundary_rise, "lr") if self.grid.joint else {}

    @functools.cached_property
    def lr_verdicts(self) -> dict[str, Verdict]:
        """Under a joint sweep, each transfer comparison judged on `lr_optima` (by check id): whether the
        learning rate's part of the joint optimum moves too."""
        checks = [c for c in self.planned.values()
                  if self.grid.joint and c.kind == "transfer" and c.comparison is not None]
        noise = {par: noise_model(self.lr_optima, par, self.grid.noise)
                 for par in {c.comparison.parametrization for c in checks if c.comparison is not None}}
        return {c.id: judge(c.comparison, self.lr_optima, self.grid.transfer, noise=noise[c.comparison.parametrization])
                for c in checks if c.comparison is not None}

    @functools.cached_property
    def reference_optima(self) -> dict[Cell, CellOptimum]:
        """The cells at the reference depth and batch size: what the laws along width and tokens rest on."""
        return one_slice(self.optima, *reference_slice(self.grid))

    @functools.cached_property
    def lint_findings(self) -> list[LintFinding]:
        assert self.plan is not None, "a results grid has no model to lint"
        return lint_grid(self.grid, self.plan.data)

    def coord(self, parametrization: Parametrization) -> CoordResult:
        if parametrization not in self._coord:
            assert self.plan is not None, "a results grid has no model to check"
            if self.grid.trainer is not None:  # the team's own training step, as mupcheck.watch recorded it
                self._coord[parametrization] = check_trainer_coords(self.grid, parametrization,
                                                                    self._trainer_coords(parametrization))
            else:
                self._coord[parametrization] = check_model(self.grid, parametrization, self.plan.data)
        return self._coord[parametrization]

    def _trainer_coords(self, parametrization: str) -> pd.DataFrame:
        """The coordinate sizes a trainer's runs recorded: its first seed and budget, at the grid's rate nearest
        `[coord_check] lr_log2`, every width."""
        assert self.plan is not None and self.store is not None
        cc, grid = self.grid.coord_check, self.grid
        target = cc.lr_log2 if cc is not None else grid.lr_log2[0]
        rate = min(grid.rates_of(parametrization), key=lambda x: abs(x - target))
        runs = []
        for cfg in self.plan.configs:
            if (cfg.parametrization, cfg.lr_log2, cfg.seed, cfg.tokens) != (parametrization, rate, grid.seeds[0],
                                                                             grid.tokens[0]):
                continue
            record = self.store.load(self.plan.key(cfg))
            if record is not None and record.result.coords:
                runs.append((cfg.width, cfg.seed, record.result.coords))
        return coords_frame(runs)

    @functools.cache  # noqa: B019  # one suite per grid and session: the cache lives as long as it should
    def drift(self, parametrization: str) -> DriftFit | None:
        return drift_law(self.reference_optima, parametrization) if len(self.grid.tokens) >= 2 else None

    @functools.cache  # noqa: B019
    def width_law(self, parametrization: str) -> WidthLaw | None:
        return width_law(self.reference_optima, parametrization) if len(self.grid.widths) >= 2 else None

    @functools.cache  # noqa: B019
    def margin_law(self, parametrization: str, axis: Literal["tokens", "width"]) -> MarginLaw | None:
        values = self.grid.tokens if axis == "tokens" else self.grid.widths
        return margin_law(self.reference_optima, parametrization, axis) if len(values) >= 2 else None

    @functools.cache  # noqa: B019
    def axis_law(self, parametrization: str, axis: str, tokens: int | None = None) -> AxisLaw | None:
        """The slope of the optimum along depth or batch size (None where the grid has one value), over every
        token budget, or at one (`tokens`): how the slope changes with training length."""
        if len(self.grid.values(axis)) < 2:
            return None
        optima = self.optima if tokens is None else {k: o for k, o in self.optima.items() if k.tokens == tokens}
        return axis_law(optima, parametrization, axis)

    @functools.cache  # noqa: B019
    def rule(self, parametrization: str, axis: str = "tokens") -> tuple[float, str]:
        """A rule's exponent and where it came from: the power rule's beta along tokens, the batch rule's
        exponent along batch size."""
        if axis == "batch_size":
            return batch_rule_exponent(self.optima, self.grid, parametrization)
        return rule_beta(self.df[self.df["parametrization"] == parametrization], self.grid, parametrization)

    def noise_floor(self, parametrization: str) -> NoiseFloor:
        return _noise_floor(self.optima, parametrization)

    @property
    def has_scaling(self) -> bool:
        """The grid gets the published scaling law: a size ladder, or parameter counts from its results."""
        return bool(size_ladder(self.grid)) or self.grid.params_stated

    @functools.cache  # noqa: B019
    def scaling(self, parametrization: str) -> ScalingLaw | None:
        """log2 lr* = c - a log2 N - b log2 D (+ g log2 B) over the located cells (None without it)."""
        if not self.has_scaling:
            return None
        params = {(c.width, c.depth): self.grid.params_of(c.width, c.depth) for c in self.optima}
        return scaling_law(self.optima, parametrization, params)

    @functools.cache  # noqa: B019
    def noise(self, parametrization: str) -> NoiseModel:
        """The noise model of a parametrization's cells (for comparisons that cannot pair two seeds)."""
        return noise_model(self.optima, parametrization, self.grid.noise)

    @functools.cached_property
    def verdicts(self) -> dict[str, Verdict]:
        """The transfer verdicts, plain and with a rule, by check id. A rule that cannot be fitted (too few
        located optima where it is fitted) leaves its checks out, with the reason in `rule_errors`."""
        out = {}
        self.df  # noqa: B018  # collected first: it says which cells are missing
        for check in self.planned.values():
            if check.kind in ("transfer", "rule") and check.comparison is not None and not self.missing_cells(check):
                comp = check.comparison
                try:
                    beta = self.rule(comp.parametrization, comp.axis)[0] if check.kind == "rule" else 0.0
                except ValueError as e:
                    self.rule_errors[check.id] = str(e)
                    continue
                out[check.id] = judge(check.comparison, self.optima, self.grid.transfer, beta=beta,
                                      noise=self.noise(comp.parametrization))
        return out

    @functools.cached_property
    def stability(self) -> dict[str, StabilityVerdict]:
        """The stability margin of each planned `stability_...` check, by check id."""
        self.df  # noqa: B018  # collected first: it says which cells are missing
        return {c.id: judge_stability(c.comparison, self.optima, self.grid.stability)
                for c in self.planned.values() if c.kind == "stability" and c.comparison is not None
                and not self.missing_cells(c)}

    def wider(self, tokens: int, at: tuple[tuple[str, int], ...] = ()) -> WiderVerdict:
        held = tuple((a, self.grid.values(a)[0]) for a in AXES[2:] if a not in dict(at))
        coords = {**dict(held), **dict(at)}
        arm = self.grid.mup_arm or "mup"
        widths = wider_widths(self.grid, arm, tokens, coords["depth"], coords["batch_size"])
        return wider_is_better(self.optima, arm, tokens, widths, reference_value(self.grid, "width"),
                               self.grid.transfer.wider_tolerance, at, held)

    # --- outcomes --------------------------------------------------------------------------------

    @functools.cache  # noqa: B019
    def outcome(self, check_id: str) -> Outcome:
        check = self.planned[check_id]
        if check.needs_runs:
            self.df  # noqa: B018  # collected first: it says which cells are missing
        absent = self.missing_cells(check) if check.needs_runs else []
        if absent:
            runs = dict(self.missing)
            where = "; ".join(f"{c.where(self.grid.varied_axes)} ({runs[c]} run(s))" for c in absent)
            text = (f"{check.id}: INCONCLUSIVE: runs missing from the store in {where}: train them "
                    "(mupcheck run), then judge again")
            return Outcome(check, "inconclusive", text, text)
        if check.kind == "lint":
            findings = self.lint_findings
            failing = [f for f in findings if f.fails]
            detail = "\n".join(map(str, findings)) or f"no finding at widths {', '.join(map(str, self.grid.widths))}"
            summary = (f"{len(failing)} muP lint finding(s)" if failing else
                       f"no failing finding ({len(findings)} warning(s) or silenced)" if findings else "no finding")
            return Outcome(check, "fail" if failing else "pass", summary, detail)
        if check.kind == "coord":
            assert check.parametrization is not None
            result = self.coord(check.parametrization)
            return Outcome(check, "pass" if result.passed else "fail", result.message().splitlines()[0],
                           result.message())
        if check.kind == "wider":
            assert check.tokens is not None
            v = self.wider(check.tokens, check.at)
            return Outcome(check, v.outcome, v.message().splitlines()[0], v.message())
        if check.kind == "stability":
            sv = self.stability[check_id]
            return Outcome(check, sv.outcome, sv.summary(), sv.summary())
        verdict = self.verdicts.get(check_id)
        if verdict is None:  # its rule could not be fitted
            assert check.comparison is not None
            text = f"{check.comparison.title()}: INCONCLUSIVE: {self.rule_errors[check_id]}"
            return Outcome(check, "inconclusive", text, text)
        return Outcome(check, _transfer_outcome(verdict, check.expected_break), verdict.summary(), verdict.message(),
                       verdict.borderline)

    def outcomes(self) -> list[Outcome]:
        """Every planned check's outcome, in order (the runs must all be in the store)."""
        return [self.outcome(c) for c in self.planned]


def _transfer_outcome(verdict: Verdict, expected_break: bool) -> OutcomeName:
    if verdict.outcome == "inconclusive":
        return "inconclusive"
    if expected_break:
        return "xfail" if verdict.outcome == "breaks" else "xpass"
    return "pass" if verdict.outcome == "transfers" else "fail"
