"""Markdown reports with plots: `reports/<grid>.md` and PNGs in `reports/<grid>/`.

    path = write_report(plan, store, out_dir=Path("reports"), provenance_extra={...})

The report is computed from the store alone (the same functions the test items use), so
`mupcheck report grids/X.toml` and the end of a pytest run write the same verdicts. Sections:
verdicts, optimal learning rates, plots, warnings, provenance (how it was produced).
`render_report` is a pure function of its inputs, for golden-file tests.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mupcheck.analysis.collect import CellOptimum, collect, find_optima
from mupcheck.analysis.drift import PUBLISHED, fit_drift
from mupcheck.analysis.transfer import (
    Verdict,
    is_expected_break,
    judge,
    plan_comparisons,
    reference_value,
    rule_beta,
    rule_comparisons,
    wider_is_better,
)
from mupcheck.checks.coord import CoordResult, check_model
from mupcheck.checks.lint import lint_grid
from mupcheck.fmt import format_tokens
from mupcheck.outputs.plots import plot_coords, plot_loss_curves, plot_optima
from mupcheck.plan import Plan
from mupcheck.provenance import git_commit
from mupcheck.spec import Grid, Parametrization
from mupcheck.store import Store

__all__ = ["render_report", "verdict_outcome", "write_report"]

Optima = dict[tuple[str, int, int], CellOptimum]


def verdict_outcome(verdict: Verdict, grid: Grid) -> str:
    """pass / FAIL / xfail / XPASS, as pytest reports the item."""
    expected = is_expected_break(verdict.comparison, grid.transfer)
    if expected:
        return "xfail (expected break)" if not verdict.passed else "XPASS: expected break did not happen"
    return "pass" if verdict.passed else "FAIL"


# --- markdown --------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _optimum_cell(opt: CellOptimum) -> str:
    if not opt.found:
        return "all diverged"
    text = f"{opt.lr_log2:.2f}"
    if opt.interval:
        text += f" [{opt.interval[0]:.2f}, {opt.interval[1]:.2f}]"
    if any("edge" in f for f in opt.flags):
        text += " (edge)"
    return text


def render_report(grid: Grid, df: pd.DataFrame, optima: Optima, verdicts: list[Verdict],
                  provenance: dict[str, str], plots: list[str],
                  checks: Sequence[tuple[str, str, str]] = (), drift: Sequence[str] = ()) -> str:
    """The report's markdown text (plots are given as paths relative to the report).

    `checks` are rows (check, outcome, detail) of the muP implementation checks: lint, coordinate
    check, wider-is-better.
    """
    out = [f"# mupcheck report: `{grid.name}`", ""]
    n_fail = sum(verdict_outcome(v, grid) in ("FAIL", "XPASS: expected break did not happen") for v in verdicts)
    out += [f"Model `{grid.model}`, parametrizations {', '.join(grid.parametrization)}; widths "
            f"{', '.join(map(str, grid.widths))} (base {grid.base_width}); tokens "
            f"{', '.join(format_tokens(t) for t in grid.tokens)}; lr_log2 {grid.lr_log2[0]:g} .. "
            f"{grid.lr_log2[-1]:g} ({len(grid.lr_log2)} values); seeds {', '.join(map(str, grid.seeds))}; "
            f"{grid.optimizer}, {grid.schedule} schedule. {len(df)} runs.", ""]
    out += [f"**{len(verdicts) - n_fail} of {len(verdicts)} comparisons as expected; {n_fail} unexpected.** "
            f"A comparison passes when the optimum moves by at most {grid.transfer.tolerance_log2:g} log2 and "
            f"the regret (relative extra loss of using the reference cell's optimal LR) is at most "
            f"{100 * grid.transfer.max_regret:g}%.", ""]

    out += [f"- {line}" for line in _summary(verdicts, grid)] + [""]
    out += ["## Verdicts", ""]
    rows = []
    for v in verdicts:
        c = v.comparison
        shift = f"{v.shift:+.2f}" if math.isfinite(v.shift) else "n/a"
        regret = f"{100 * v.regret:.2f}%" if math.isfinite(v.regret) else "inf"
        rows.append([c.axis, c.parametrization, c.label, f"{v.ref.lr_log2:.2f}",
                     f"{v.other.lr_log2:.2f}", shift, regret, verdict_outcome(v, grid)])
    out += [_table(["axis", "param.", "comparison", "ref lr*", "other lr*", "shift (log2)", "regret", "verdict"],
                   rows) if rows else "The grid varies neither width nor tokens: nothing to compare.", ""]

    out += ["## Optimal learning rates", "",
            "log2 of the optimal learning rate per cell (parabola-refined; 95% bootstrap interval over seeds "
            "when there are two or more; *(edge)*: on the edge of `lr_log2`).", ""]
    for par in grid.parametrization:
        rows = [[str(w)] + [_optimum_cell(optima[(par, w, t)]) for t in grid.tokens] for w in grid.widths]
        out += [f"**{par}**", "", _table(["width \\ tokens"] + [format_tokens(t) for t in grid.tokens], rows), ""]

    if drift:
        out += ["## Drift along tokens", ""] + list(drift) + [""]

    if checks:
        out += ["## Is the muP implementation right?", "",
                "muP lint of the model at every width, coordinate checks (if the grid has a `[coord_check]` "
                "table), and 'wider is better' at the reference width's best learning rate.", ""]
        out += [_table(["check", "outcome", "detail"],
                       [[name, outcome, detail.replace("\n", "<br>").replace("|", "\\|")]
                        for name, outcome, detail in checks]), ""]

    if plots:
        out += ["## Plots", ""]
        out += [f"![{Path(p).stem}]({p})" for p in plots]
        out += [""]

    warnings = _warnings(df, optima)
    out += ["## Warnings", ""]
    out += [f"- {w}" for w in warnings] if warnings else ["None."]
    out += [""]

    out += ["## Provenance", "", _table(["", ""], [[k, v] for k, v in provenance.items()]), ""]
    return "\n".join(out)


def _summary(verdicts: list[Verdict], grid: Grid) -> list[str]:
    """One plain sentence per (parametrization, axis): how far the optimum moved, and the verdicts."""
    lines = []
    for par in grid.parametrization:
        for axis in ("width", "tokens"):
            group = [v for v in verdicts if v.comparison.parametrization == par and v.comparison.axis == axis]
            if not group:
                continue
            moved = [v for v in group if math.isfinite(v.shift)]
            passed = sum(v.passed for v in group)
            ref = group[0].comparison.ref
            ref_text = format_tokens(ref) if axis == "tokens" else str(ref)
            if moved:
                worst = max(moved, key=lambda v: abs(v.shift))
                where = worst.comparison.label
                moved_text = f"the optimum moved by at most {abs(worst.shift):.2f} log2 ({worst.shift:+.2f}, {where})"
            else:
                moved_text = "no optimum could be compared"
            verdict = "transfers" if passed == len(group) else "breaks" if passed == 0 else "mixed"
            lines.append(f"**{par} along {axis}** (reference {axis} {ref_text}): {moved_text}; "
                         f"{passed} of {len(group)} comparisons within tolerance: **{verdict}**.")
    return lines


def _warnings(df: pd.DataFrame, optima: Optima) -> list[str]:
    flags = list(OrderedDict.fromkeys(f for opt in optima.values() for f in opt.flags))
    repeats = df["data_repeats"].astype(float)
    if (repeats > 1).any():
        flags.append(f"{int((repeats > 1).sum())} run(s) saw their training data more than once "
                     f"(up to {repeats.max():.2f} times): repeated data changes the experiment")
    return flags


def _unique(values: Any) -> str:
    vals = sorted({str(v) for v in values if v is not None and v == v})
    return ", ".join(vals) if vals else "unknown"


def _engine_summary(engines: pd.Series) -> str:
    """'solo: 12 runs; fused x8: 64 runs' -- how the runs were trained."""
    counts = engines.fillna("solo").value_counts()
    return "; ".join(f"{engine}: {n} runs" for engine, n in sorted(counts.items()))


def provenance_for(plan: Plan, df: pd.DataFrame, extra: dict[str, str]) -> dict[str, str]:
    """How the report was produced: command, grid hash, device, versions, dates, times (from the
    collected frame, which carries each run's provenance)."""
    grid_path = Path(plan.grid.path)
    ends = pd.to_datetime(df["date"])  # a record is dated when its run finished
    starts = ends - pd.to_timedelta(df["wall_time_s"].fillna(0.0), unit="s")
    span = (ends.max() - starts.min()).total_seconds()
    try:
        shown = grid_path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = grid_path
    commits = _unique(df["mupcheck_commit"])
    info = {
        "grid file": f"`{shown.as_posix()}` (sha256 {hashlib.sha256(grid_path.read_bytes()).hexdigest()[:12]})",
        "data": f"{plan.data.description} (fingerprint {plan.data.fingerprint})",
        "device": _unique(df["device"]),
        "engine": _engine_summary(df["engine"]),
        "torch": _unique(df["torch"]),
        "mup": _unique(df["mup"]),
        "mupcheck": _unique(df["mupcheck"])
        + (f"; runs trained at commit {commits}" if commits != "unknown" else "")
        + (f"; report written at commit {git_commit(grid_path)}" if git_commit(grid_path) else ""),
        "runs trained": f"{df['date'].min()} .. {df['date'].max()} (finished)",
        "training span": f"{span / 60:.1f} min from the first run's start to the last run's end",
        # A fused run's wall_time_s is its share of its group's time, so the sum is the device time.
        "compute": f"{df['wall_time_s'].sum() / 60:.1f} min summed over {len(df)} runs",
    }
    info.update(extra)
    return info


def drift_section(grid: Grid, df: pd.DataFrame, optima: Optima) -> list[str]:
    """Markdown lines: the fitted drift law per parametrization, and the power rule's verdicts."""
    if len(grid.tokens) < 2:
        return []
    lines = ["Fit of log2 lr*(T) = a_width - beta * log2 T over the cells with an optimum (one intercept per "
             "width, one shared slope; 95% bootstrap interval over " +
             ("seeds" if len(grid.seeds) > 1 else "the token-budget cells of each width") + ").", ""]
    rows = []
    for par in grid.parametrization:
        fit = fit_drift(df, par)
        if fit is None:
            continue
        interval = f"[{fit.interval[0]:.3f}, {fit.interval[1]:.3f}]" if fit.interval else "n/a"
        rows.append([par, "joint", f"{fit.beta:.3f}", interval, fit.sentence()])
        rows += [[par, str(w), f"{b:.3f}", "", f"a = {a:.2f}"] for w, (a, b) in fit.per_width.items()]
    lines += [_table(["param.", "width", "beta", "95% interval", "reading"], rows), "", f"*{PUBLISHED}.*", ""]
    lines += _rules_compared(grid, df, optima)
    comps = rule_comparisons(grid)
    if comps:
        rule_rows = []
        for rule_par in sorted({c.parametrization for c in comps}):
            beta, source = rule_beta(df[df["parametrization"] == rule_par], grid, rule_par)
            for c in (c for c in comps if c.parametrization == rule_par):
                v = judge(c, optima, grid.transfer, beta=beta)
                shift = f"{v.shift:+.2f}" if math.isfinite(v.shift) else "n/a"
                regret = f"{100 * v.regret:.2f}%" if math.isfinite(v.regret) else "inf"
                rule_rows.append([par, c.label, source, f"{v.transferred:.2f}",
                                  f"{v.other.lr_log2:.2f}", shift, regret, "pass" if v.passed else "FAIL"])
        lines += ["", "**Power rule** (`lr_rule = \"power\"`): the reference optimum moved by "
                  "(T / T_ref)^-beta, checked on cells not used to fit beta.", "",
                  _table(["param.", "comparison", "beta", "transferred lr", "other lr*", "off by (log2)", "regret",
                          "verdict"], rule_rows)]
    return lines


def _rules_compared(grid: Grid, df: pd.DataFrame, optima: Optima) -> list[str]:
    """How far each candidate beta would carry the shortest budget's optimum along tokens, all cells."""
    comps = [c for c in plan_comparisons(grid) if c.axis == "tokens"]
    lines = []
    for par in grid.parametrization:
        mine = [c for c in comps if c.parametrization == par]
        fit = fit_drift(df, par)
        if not mine or fit is None:
            continue
        candidates = [("no rule (beta 0)", 0.0), (f"this grid's fit (beta {fit.beta:.3f}; in-sample)", fit.beta),
                      ("the published WSD value (beta 0.5)", 0.5)]
        for name, beta in candidates:
            verdicts = [judge(c, optima, grid.transfer, beta=beta) for c in mine]
            shifts = [abs(v.shift) for v in verdicts if math.isfinite(v.shift)]
            worst = f"{max(shifts):.2f}" if shifts else "n/a"
            lines.append(f"- {par}, {name}: the transferred optimum misses by at most {worst} log2; "
                         f"{sum(v.passed for v in verdicts)} of {len(verdicts)} tokens comparisons within tolerance.")
    return lines


def implementation_checks(plan: Plan, optima: Optima, plot_dir: Path,
                          coord_results: dict[Parametrization, CoordResult] | None = None
                          ) -> tuple[list[tuple[str, str, str]], list[Path]]:
    """Rows for the report's muP-implementation section, and the coordinate-check plots.

    `coord_results` (parametrization -> CoordResult) are checks already run in this process.
    """
    grid = plan.grid
    rows: list[tuple[str, str, str]] = []
    plots: list[Path] = []
    if "mup" not in grid.parametrization:
        return rows, plots
    findings = lint_grid(grid, plan.data)
    rows.append(("lint[mup]", "FAIL" if findings else "pass",
                 "\n".join(str(f) for f in findings) or f"no finding at widths {', '.join(map(str, grid.widths))}"))
    for par in grid.coord_check.parametrization if grid.coord_check else ():
        result = (coord_results or {}).get(par) or check_model(grid, par, plan.data)
        path = plot_dir / f"coord_check_{par}.png"
        plot_coords(result.data, path, title=par)
        plots.append(path)
        rows.append((f"coord[{par}]", "pass" if result.passed else "FAIL", result.message()))
    if len(grid.widths) > 1:
        for tokens in grid.tokens:
            v = wider_is_better(optima, "mup", tokens, grid.widths, reference_value(grid, "width"),
                                grid.transfer.wider_tolerance)
            rows.append((v.test_id, "pass" if v.passed else "FAIL", v.message()))
    return rows, plots


def write_report(plan: Plan, store: Store, out_dir: Path, provenance_extra: dict[str, str],
                 coord_results: dict[Parametrization, CoordResult] | None = None) -> Path:
    """Collect the grid's runs from the store and write `<out_dir>/<grid>.md` with its plots."""
    grid = plan.grid
    df = collect(plan, store)
    optima = find_optima(df)
    verdicts = [judge(c, optima, grid.transfer) for c in plan_comparisons(grid)]
    plot_dir = out_dir / grid.name
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_loss_curves(df, optima, grid, plot_dir) + plot_optima(optima, grid, plot_dir)
    checks, coord_plots = implementation_checks(plan, optima, plot_dir, coord_results)
    rel = [p.relative_to(out_dir).as_posix() for p in plots + coord_plots]
    text = render_report(grid, df, optima, verdicts, provenance_for(plan, df, provenance_extra), rel, checks,
                         drift_section(grid, df, optima))
    path = out_dir / f"{grid.name}.md"
    path.write_text(text, encoding="utf-8")
    return path
