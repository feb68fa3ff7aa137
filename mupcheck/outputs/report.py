"""Markdown reports with plots: `reports/<grid>.md` and PNGs in `reports/<grid>/`.

    path = write_report(GridSuite(plan, store), out_dir=Path("reports"), provenance_extra={...})

The report renders a `GridSuite` (`mupcheck.outputs.verdicts`): the same outcomes the pytest items
show, computed once, from the store alone (no training). Sections: the outcomes and how they are
decided (with what that means for a family of decisions), the noise floor, the verdicts with their
intervals, the optimal learning rates, the stability boundary and margin, the laws along width and
tokens with their checks, the muP implementation checks, plots, warnings, what changed (when given),
provenance (how it was produced). `render_report` is a pure function of the suite, the provenance,
the plot paths and the changes text.
"""

from __future__ import annotations

import json
import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from mupcheck.analysis.comparison import size_ladder
from mupcheck.analysis.optima import CellOptimum, joint_argmin, tuned_names
from mupcheck.errors import ReportError
from mupcheck.fmt import format_tokens, plural
from mupcheck.outputs.json_report import suite_json
from mupcheck.outputs.law_sections import axis_section, drift_section, scaling_section
from mupcheck.outputs.markdown import SHOWN, cell_text, interval_text, regret_text, shift_text, table
from mupcheck.outputs.plots import plot_coords, plot_loss_curves, plot_optima
from mupcheck.outputs.provenance_table import provenance_for
from mupcheck.outputs.verdicts import GridSuite, Outcome
from mupcheck.plan import refinement_advice
from mupcheck.spec import AXES, Cell, Grid, swept_quantity

__all__ = ["render_report", "write_report"]


def _slices(grid: Grid) -> list[tuple[int, int, str]]:
    """(depth, batch size, ' at depth 4, batch 16') for each combination the grid has (Grid.slices); the name
    is empty for the axes it does not vary."""
    return [(d, b, " at " + ", ".join(f"{a.replace('_size', '')} {v}" for a, v in named) if named else "")
            for d, b, named in grid.slices()]


def _results_header(grid: Grid, runs: int) -> str:
    """What a results grid holds, saying "not stated" for every setting neither its file nor its table gave:
    a default is never shown as if it had been measured."""
    assert grid.results is not None
    stated = dict(grid.results.stated)
    read = set(grid.results.columns_read)
    unstated = grid.not_stated

    def axis(name: str, column: str, values: tuple[int, ...], fmt: Callable[[int], str] = str) -> str:
        if column in unstated:
            return f"{name} not stated"
        return f"{name} {', '.join(fmt(v) for v in values)}"

    parts = [f"parametrization{'s' if len(grid.parametrization) > 1 else ''} {', '.join(grid.parametrization)}"
             + ("" if "parametrization" in read or dict(grid.results.listed).get("parametrization") else
                " (not stated: judged as muP)"),
             axis("widths", "width", grid.widths), axis("tokens", "tokens", grid.tokens, format_tokens)]
    ladder = size_ladder(grid)
    if ladder:
        source = ("parameters from the `params` column" if grid.params_stated else
                  "non-embedding parameters computed as 12 x depth x width^2")
        parts.append(f"{len(ladder)} model shapes scaled in width and depth together, {ladder[0][0]}x{ladder[0][1]} "
                     f"({ladder[0][2]:.3g}) to {ladder[-1][0]}x{ladder[-1][1]} ({ladder[-1][2]:.3g}; {source})")
    for name, column in (("depths", "depth"), ("batch sizes", "batch_size")):
        values = grid.values(column)
        if len(values) > 1:
            parts.append(f"{name} {', '.join(map(str, values))}")
        else:
            parts.append(f"{column.replace('_', ' ')} not stated" if column in unstated
                         else f"{column.replace('_', ' ')} {values[0]}")
    parts.append(f"lr_log2 {_rates_text(grid)} ({len(grid.lr_log2)} value{'s' if len(grid.lr_log2) > 1 else ''})")
    parts.append(f"seeds {', '.join(map(str, grid.seeds))}" if len(grid.seeds) > 1 else
                 f"one seed ({grid.seeds[0]})" if "seed" in read else "one seed (no seed column)")
    parts += [f"{key} {stated[key]}" if key in stated else f"{key} not stated" for key in ("optimizer", "schedule")]
    left_out = ", ".join(f"{n} {why}" for why, n in grid.results.left_out)
    skipped = f"; {grid.results.skipped} left out, not results ({left_out})" if grid.results.skipped else ""
    return f"Results trained elsewhere (see Provenance): {'; '.join(parts)}. {plural(runs, 'run')}{skipped}."


def _depth_batch_text(grid: Grid) -> str:
    """'; depths 2, 4, 8 (CompleteP rule, depth_alpha 1, base depth 2); batch sizes 8, 32' where they vary; the
    one depth where they do not (a result's numbers depend on the model's depth: say which)."""
    parts = []
    depths = grid.values("depth")
    if len(depths) == 1 and not grid.depth_alpha and not grid.imported:
        parts.append(f"depth {depths[0]}")
    elif len(depths) > 1 or grid.depth_alpha:
        rule = (f" (depth_alpha {grid.depth_alpha:g}: residual branches x (depth/{grid.base_depth})^-"
                f"{grid.depth_alpha:g}, CompleteP's rates and epsilon)" if grid.depth_alpha else " (no depth rule)")
        parts.append(f"depth{'s' if len(depths) > 1 else ''} {', '.join(map(str, depths))}{rule}")
    if len(grid.values("batch_size")) > 1:
        parts.append(f"batch sizes {', '.join(map(str, grid.values('batch_size')))} (equal token budgets)")
    return "".join(f"; {p}" for p in parts)


def _rates_text(grid: Grid) -> str:
    def span(rates: tuple[float, ...]) -> str:
        return f"{rates[0]:g}" if len(rates) == 1 else f"{rates[0]:g} .. {rates[-1]:g}"

    if not grid.arm_lr_log2:
        return span(grid.lr_log2)
    return ", ".join(f"{arm} {span(rates)}" for arm, rates in grid.arm_lr_log2)


def _how_decided(suite: GridSuite) -> str:
    t = suite.grid.transfer
    band = (f"the band of shifts that cost at most {100 * t.max_regret:g}% loss in the other cell (read off its "
            "curvature on each side of its optimum, so a flat optimum allows a wider shift; where a side has too "
            "few rates, or the fit reaches past its own points, from the runs: a run costlier than that caps the "
            "band, and the band reaches only as far as runs measured it cheap)" if t.tolerance_log2 is None
            else f"the fixed band +-{t.tolerance_log2:g} log2 (`tolerance_log2`)")
    return ("A comparison **breaks** when the transferred rate diverged in the other cell, when the *measured "
            "regret* (each seed's loss at the transferred rate, a real run, over its own smooth curve at the other "
            "cell's optimum, a fit over several runs, never that same run; with a 95% interval over seeds, or from "
            f"the noise model with one seed) lies above {100 * t.max_regret:g}%, or when the 95% interval of the "
            "optimum's shift lies outside "
            f"{band}. A regret read off the fitted curve is a number only inside the span of rates that fit used; "
            "past it, it is a lower bound from the run between the optimum and the transferred rate (*at least*: "
            "the loss only rises further out), which breaks the comparison where its interval lies above "
            f"{100 * t.max_regret:g}%. The shift is paired over seeds where two or more have an optimum in both cells "
            "(a seed fixes init and data order in both), and an optimum read off coarse rates widens it by the "
            "interpolant's resolution; otherwise it is the difference of the cells' means, with the noise model "
            "below (named beside the verdict; it holds the rates' resolution). A comparison **transfers** when the "
            "shift's interval lies inside the band and no measured regret reaches past it; otherwise, or without a "
            "noise estimate, or with an optimum censored on the edge of `lr_log2`, it is **inconclusive**, with the "
            "cause (not a pass: pytest skips it with the reason, or fails it under `--mupcheck-inconclusive=fail`). "
            "A decisive verdict whose deciding bound lies within 0.05 log2 of the band's edge, or within 0.02 points "
            "of the regret threshold, is marked **borderline**: it stands, but a little more data could move it.")


def _family_statement(suite: GridSuite, outcomes: list[Outcome]) -> str:
    """What a grid's many decisions mean together. Each is made at 95% on its own: correcting them (Holm,
    Bonferroni) would widen every interval by the number of comparisons, and the comparisons share their
    reference cell, so they are far from independent. The report states the bound instead."""
    decided = [o for o in outcomes if o.check.kind in ("transfer", "rule", "stability")
               and o.outcome != "inconclusive"]
    k = len([o for o in outcomes if o.check.kind in ("transfer", "rule", "stability")])
    if not k:
        return ""
    bound = min(1.0, 0.025 * k)
    return (f"**Many decisions at once.** This grid makes {k} interval decisions ({len(decided)} of them reached "
            "*transfers*, *breaks*, *pass* or *fail*). Each is a one-sided test at 2.5%: if every comparison sat "
            "exactly on its band's edge, the chance that at least one of them is decided wrongly is at most "
            f"{100 * bound:.0f}% (Bonferroni: {k} x 2.5%), not 2.5%. The outcomes are not adjusted for this, "
            "because the comparisons share their reference cell and are strongly correlated (an adjustment for "
            "independent tests would cost power for nothing); read a single surprising outcome among many with "
            "that in mind, and a pattern across comparisons as the stronger evidence.")


def render_report(suite: GridSuite, provenance: dict[str, str], plots: list[str], changes: str = "") -> str:
    """The report's markdown text (plots are given as paths relative to the report); `changes`, when given,
    is a "What changed" section (markdown) for a report regenerated after a change of method."""
    grid, df, optima = suite.grid, suite.df, suite.optima
    outcomes = suite.outcomes()
    counts: Counter[str] = Counter(o.outcome for o in outcomes)
    out = [f"# mupcheck report: `{grid.name}`", ""]
    model = ("Results trained elsewhere (see Provenance)" if grid.imported else
             f"The team's own trainer (`{grid.trainer.command or grid.trainer.python}`)" if grid.trainer else
             f"Model `{grid.model}`")
    refined = (f", refined by {grid.refine.step_log2:g} within {grid.refine.span_log2:g} of each argmin"
               if grid.refine else "")
    swept = (f"; {grid.sweep} swept over sweep_log2 {grid.sweep_log2[0]:g} .. {grid.sweep_log2[-1]:g} "
             f"({len(grid.sweep_log2)} values{refined})" if grid.sweep else "")
    if grid.imported:
        out += [_results_header(grid, len(df)), ""]
    else:
        out += [f"{model}, parametrizations {', '.join(grid.parametrization)}; widths "
                f"{', '.join(map(str, grid.widths))} (base {grid.base_width}); tokens "
                f"{', '.join(format_tokens(t) for t in grid.tokens)}; lr_log2 {_rates_text(grid)} ("
                f"{len(grid.lr_log2)} value{'s' if len(grid.lr_log2) > 1 else ''}" + ("" if grid.sweep else refined)
                + f"){swept}; seeds {', '.join(map(str, grid.seeds))}; {grid.optimizer}, "
                f"{grid.schedule} schedule{_depth_batch_text(grid)}. {plural(len(df), 'run')}.", ""]
    out += [_tuned_text(grid), ""] if grid.sweep else []
    out += [("**" + ", ".join(f"{counts[k]} {SHOWN[k]}" for k in SHOWN if counts[k]) + f"** of {len(outcomes)} "
             "checks." if outcomes else "**No checks**: the runs hold nothing to compare (one cell per "
             "parametrization, or no muP arm to check)."), "", _how_decided(suite), ""]
    family = _family_statement(suite, outcomes)
    out += [family, ""] if family else []
    out += [f"- {line}" for line in _summary(suite)] + [""]
    out += ["## Noise floor", ""] + [f"- {suite.noise_floor(p).sentence()}" for p in grid.parametrization] + [""]
    out += ["**Noise model** (what a comparison uses where it cannot pair two seeds, and a one-seed regret; "
            "`mupcheck.analysis.noise`):", ""] + [f"- {suite.noise(p).sentence()}" for p in grid.parametrization]
    out += [""]

    transfer = [o for o in outcomes if o.check.kind == "transfer"]
    out += ["## Verdicts", ""]
    out += [_verdict_table(suite, transfer) if transfer else
            "The grid varies neither width nor tokens: nothing to compare.", ""]

    _, key, what = tuned_names(grid.tuned)
    out += [f"## Optimal {'learning rates' if grid.tuned == 'lr' else f'`{grid.tuned}`'}", "",
            f"log2 of the optimal {what} per cell: the mean of the seeds' own optima, each read off a local "
            "cubic within 0.75 octave of its argmin (the wall above the optimum cannot pull it), or, where fewer "
            "than 5 rates lie that close, off an Akima interpolant between the measured rates, whose resolution "
            "(0.2 x the spacing) widens the interval; with its 95% interval over the same seeds; a seed whose "
            "optimum is pinned or censored is left out of both (the warnings list them); *censored*: on the edge "
            f"of `{key}`, so the optimum lies beyond.", ""]
    for par in grid.parametrization:
        for d, b, name in _slices(grid):
            # a ragged table (a size ladder) lists only the widths it ran at this depth and batch size
            widths = [w for w in grid.widths if any(grid.has_cell(Cell(par, w, t, d, b)) for t in grid.tokens)]
            rows = [[str(w)] + [cell_text(optima[Cell(par, w, t, d, b)]) if Cell(par, w, t, d, b) in optima else "-"
                                for t in grid.tokens] for w in widths]
            if not rows:
                continue
            out += [f"**{par}{name}**", "",
                    table(["width \\ tokens"] + [format_tokens(t) if t else "not stated" for t in grid.tokens], rows),
                    ""]

    if grid.joint:
        out += ["## Joint optimum", ""] + _joint_section(suite) + [""]
    out += ["## Stability boundary and margin", ""] + _stability_section(suite, outcomes) + [""]

    rules = [o for o in outcomes if o.check.kind == "rule"]
    drift = drift_section(suite, [o for o in rules if o.check.comparison and o.check.comparison.axis == "tokens"])
    if drift:
        out += ["## Drift along tokens", ""] + drift + [""]
    scaling = scaling_section(suite)
    if scaling:
        out += ["## Scaling law", ""] + scaling + [""]
    for axis, title in (("depth", "## Along depth"), ("batch_size", "## Along batch size")):
        on_axis = [o for o in rules if o.check.comparison and o.check.comparison.axis == axis]
        section = axis_section(suite, axis, on_axis)
        if section:
            out += [title, ""] + section + [""]

    checks = [o for o in outcomes if o.check.kind in ("lint", "coord", "wider")]
    if checks:
        out += ["## Is the muP implementation right?", "",
                "muP lint of the model at every width, coordinate checks (if the grid has a `[coord_check]` "
                "table), and 'wider is better' at the reference width's best learning rate.", ""]
        out += [table(["check", "outcome", "detail"],
                       [[o.check.id, SHOWN[o.outcome], o.detail.replace("\n", "<br>").replace("|", "\\|")]
                        for o in checks]), ""]

    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]

    advice = refinement_advice(grid, df) if grid.imported else []
    if advice:
        out += ["## Rates to run next", "",
                "These results were trained elsewhere, so mupcheck trains nothing; the `[refine]` table asks for "
                "these rates around each cell's argmin, which the results lack:", ""]
        out += [f"- {line}" for line in advice] + [""]
    if suite.missing:
        out += ["## Missing runs", "", f"{sum(n for _, n in suite.missing)} run(s) of the grid are not in the store; "
                "these cells are left out whole (an optimum read off part of a curve would be another estimate), and "
                "every check that needs one of them is inconclusive. Train them with `mupcheck run`, then write the "
                "report again.", ""]
        out += [table(["cell", "runs missing"], [[cell.where(grid.varied_axes), str(n)] for cell, n in suite.missing]),
                ""]
        failures = suite.failures()
        if failures:
            out += [f"{len(failures)} of them failed to train (`failures/` in the store); the first of them, with the "
                    "last lines of its output:", ""]
            for failure in failures[:5]:
                out += [f"- {failure.get('run', '?')}: {failure.get('error', '?')}"]
                out += [f"  > {line}" for line in failure.get("log", [])[-5:]]
            out += [""]
    warnings = _warnings(df, optima)
    out += ["## Warnings", ""] + ([f"- {w}" for w in warnings] if warnings else ["None."]) + [""]
    if changes:
        out += ["## What changed", "", changes.strip(), ""]
    out += ["## Provenance", "", table(["", ""], [[k, v] for k, v in provenance.items()]), ""]
    return "\n".join(out)


def _stability_section(suite: GridSuite, outcomes: list[Outcome]) -> list[str]:
    """Per cell: the boundary and the margin; their laws; the stability items."""
    grid, optima = suite.grid, suite.optima
    rise = grid.stability.boundary_rise
    lines = [f"The **boundary** is the lowest rate above a seed's optimum where training stops being usable: the "
             f"final loss exceeds the seed's best by more than {100 * rise:g}% (`[stability] boundary_rise`), or "
             "the run diverged or was unstable (its training loss spiked, or it ended no lower than it started). It is "
             "read between the last usable rate and the first unusable one (log-linear in the loss rise), so "
             "its resolution is the rate grid's there. The **margin** is boundary minus optimum, per seed. Both "
             "log2, mean over seeds with a 95% interval; *beyond the rates*: some seed had no unusable rate "
             "measured above its optimum, so the value is a lower bound.", ""]
    varied = [a for a in ("depth", "batch_size") if len(grid.values(a)) > 1]
    for par in grid.parametrization:
        rows = []
        for d, b, _ in _slices(grid):
            for w in grid.widths:
                for t in grid.tokens:
                    if Cell(par, w, t, d, b) not in optima:
                        continue  # a ragged sweep has no runs there
                    cell = optima[Cell(par, w, t, d, b)]
                    rows.append([*(str(cell.depth if a == "depth" else cell.batch_size) for a in varied),
                                 str(w), format_tokens(t), cell_text(cell),
                                 interval_text(cell.boundary, cell.boundary_interval, cell.boundary_censored),
                                 interval_text(cell.margin, cell.margin_interval, cell.boundary_censored)])
        lines += [f"**{par}**", "", table([*varied, "width", "tokens", "optimum", "boundary", "margin"], rows), ""]
        for axis in ("tokens", "width"):
            law = suite.margin_law(par, axis)
            if law is not None:
                lines.append(f"- {par}, margin along {axis}: {law.sentence()}; over {len(law.cells)} cells"
                             + (f" (left out, boundary beyond the rates or optimum not located: "
                                f"{', '.join(f'w{w}/{format_tokens(t)}' for w, t in law.left_out)})"
                                if law.left_out else "") + ".")
        lines.append("")
    items = [o for o in outcomes if o.check.kind == "stability"]
    if items:
        lines += [f"**Stability of the transferred rate** (`stability_...` items): the transferred rate must lie "
                  f"at least {grid.stability.min_margin_log2:g} log2 (`[stability] min_margin_log2`) below the "
                  "other cell's boundary, paired over seeds (each seed's reference optimum against its own "
                  "boundary in the other cell).", ""]
        rows = []
        for o in items:
            if o.check.id not in suite.stability:
                continue  # a cell with runs missing (## Missing runs)
            v = suite.stability[o.check.id]
            margin = (interval_text(v.margin, v.interval, False) if math.isfinite(v.margin) else "n/a")
            if v.boundary_censored and math.isfinite(v.margin):
                margin = ">= " + margin
            rows.append([v.comparison.parametrization, v.comparison.label, f"{v.transferred:.2f}",
                         interval_text(v.boundary, None, v.boundary_censored), margin,
                         SHOWN[o.outcome] + ("" if o.outcome == "pass" else f": {v.reason}")])
        lines.append(table(["param.", "comparison", "transferred lr", "other boundary", "margin below it [95%]",
                             "outcome"], rows))
    return lines


def _verdict_table(suite: GridSuite, transfer: list[Outcome]) -> str:
    rows = []
    for o in transfer:
        if o.check.id not in suite.verdicts:  # a cell with runs missing: the row says so
            c0 = o.check.comparison
            assert c0 is not None
            rows.append([c0.axis, c0.parametrization, c0.label, "-", "-", "-", "-", "-", f"{SHOWN[o.outcome]}: runs "
                         "missing from the store (## Missing runs)"])
            continue
        v = suite.verdicts[o.check.id]
        c = v.comparison
        band = v.bands.text() if all(map(math.isfinite, v.band)) else "n/a"
        shown = SHOWN[o.outcome] + (f" (borderline: {v.borderline})" if v.borderline else "")
        rows.append([c.axis, c.parametrization, c.label, cell_text(v.ref), cell_text(v.other), shift_text(v),
                     band, regret_text(v), shown + ("" if o.outcome in ("pass", "xfail") else f": {v.reason}")])
    star = tuned_names(suite.grid.tuned)[0]
    return table(["axis", "param.", "comparison", f"ref {star}", f"other {star}", "shift [95%]", "allowed",
                   f"regret at transferred {star[:-1]}", "verdict"], rows)


def _tuned_text(grid: Grid) -> str:
    """What a grid that sweeps another key judges, and how to read the tables that follow."""
    how = f"{swept_quantity(grid.sweep)} = 2^x"
    lr = (f"the learning rate is swept with it (lr_log2 {_rates_text(grid)}): each seed's {grid.sweep} curve "
          "takes its best learning rate at each value (a profile), and the **Joint optimum** section gives both "
          "coordinates and whether the learning rate's moves too" if grid.joint else
          f"the learning rate is held at lr_log2 {_rates_text(grid)}")
    return (f"**What is tuned: `{grid.sweep}`** (sweep_log2 = x, {how}); {lr}. Every optimum, interval, boundary, "
            f"margin and verdict below is of x, not of the learning rate: where a table or a plot says *rate* or "
            f"*lr*, read {grid.sweep}'s x.")


def _joint_section(suite: GridSuite) -> list[str]:
    """Under a joint sweep: per cell, the swept key's optimum (its curve tunes lr per seed), the learning rate's
    (its curve tunes the key per seed), and the measured argmin of the seed-mean loss over both; then whether
    the learning rate's optimum transfers along each comparison, judged like the items."""
    key = suite.grid.sweep
    argmins = joint_argmin(suite.df)
    lines = [f"Per cell: log2 of {key}'s optimum (its curve takes each seed's best learning rate at each value), "
             f"log2 of the learning rate's optimum (its curve takes each seed's best {key}), each the mean of the "
             f"seeds' own optima with a 95% interval; and the measured pair (lr_log2, {key} x) with the lowest "
             "seed-mean loss over the grid of both.", ""]
    rows = []
    for cell, opt in suite.optima.items():
        lr_opt = suite.lr_optima.get(cell)
        best = argmins.get(cell)
        pair = f"({best[0]:g}, {best[1]:g}): {best[2]:.4f}" if best else "none usable"
        rows.append([cell.where(()), cell_text(opt), cell_text(lr_opt) if lr_opt else "n/a", pair])
    lines += [table(["cell", f"{key}* (log2)", "lr* (log2)", "measured argmin (lr, x): loss"], rows), ""]
    if suite.lr_verdicts:
        lines += ["Does the learning rate's optimum move too? (each comparison of the items, judged on the lr* "
                  "column)", ""]
        lines += [f"- {v.comparison.title()}: {v.outcome}" + ("" if v.outcome == "transfers" else f": {v.reason}")
                  for v in suite.lr_verdicts.values()]
    return lines


def _summary(suite: GridSuite) -> list[str]:
    """One plain sentence per (parametrization, axis): the law along it, and the outcomes."""
    lines = []
    for par in suite.grid.parametrization:
        for axis in (*AXES, "size"):
            group = [suite.verdicts[o.id] for o in suite.planned.values()
                     if o.kind == "transfer" and o.comparison and o.comparison.parametrization == par
                     and o.comparison.axis == axis and o.id in suite.verdicts]
            if not group:
                continue
            law: Any = (suite.width_law(par) if axis == "width" else suite.drift(par) if axis == "tokens"
                        else suite.scaling(par) if axis == "size" else suite.axis_law(par, axis))
            law_text = law.sentence() if law is not None else "no law: too few found optima"
            tally = Counter(v.outcome for v in group)
            ref_text = group[0].comparison.value_text(group[0].comparison.ref)
            parts = ", ".join(f"{tally[k]} {k}" for k in ("transfers", "breaks", "inconclusive") if tally[k])
            name = axis.replace("_", " ")
            lines.append(f"**{par} along {name}** (reference {name} {ref_text}): {law_text}; of {len(group)} "
                         f"comparisons: {parts}.")
    return lines


def _warnings(df: pd.DataFrame, optima: dict[Cell, CellOptimum]) -> list[str]:
    flags = _grouped(list(OrderedDict.fromkeys(f for opt in optima.values() for f in opt.flags)))
    repeats = df["data_repeats"].astype(float)
    if (repeats > 1).any():
        flags.append(f"{int((repeats > 1).sum())} run(s) saw their training data more than once "
                     f"(up to {repeats.max():.2f} times): repeated data changes the experiment")
    return flags


def _grouped(flags: list[str]) -> list[str]:
    """Flags that say the same of several cells ("<cell>: <text>"), as one line naming the cells."""
    cells: OrderedDict[str, list[str]] = OrderedDict()
    for flag in flags:
        where, sep, text = flag.partition(": ")
        cells.setdefault(text if sep else flag, []).append(where if sep else "")
    return [f"{'; '.join(w for w in where if w)}: {text}" if any(where) else text for text, where in cells.items()]


def write_report(suite: GridSuite, out_dir: Path, provenance_extra: dict[str, str], changes: str = "",
                 as_json: bool = False) -> Path:
    """Write `<out_dir>/<grid>.md` with its plots, from the suite (its runs; no training), and with `as_json`
    `<out_dir>/<grid>.json` (mupcheck.outputs.json_report) beside it."""
    grid = suite.grid
    plot_dir = out_dir / grid.name
    try:
        return _write(suite, out_dir, plot_dir, provenance_extra, changes, as_json)
    except OSError as e:
        raise ReportError(f"cannot write the report of {grid.name} to {out_dir}: {e.strerror or e}; choose a "
                          "writable folder (mupcheck report --out DIR, pytest --mupcheck-reports DIR)") from None


def _write(suite: GridSuite, out_dir: Path, plot_dir: Path, provenance_extra: dict[str, str], changes: str,
           as_json: bool) -> Path:
    grid = suite.grid
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_loss_curves(suite.df, suite.optima, grid, plot_dir) + plot_optima(suite.optima, grid, plot_dir)
    for par in grid.coord_check.parametrization if grid.coord_check else ():
        path = plot_dir / f"coord_check_{par}.png"
        plot_coords(suite.coord(par).data, path, title=par)
        plots.append(path)
    rel = [p.relative_to(out_dir).as_posix() for p in plots]
    provenance = provenance_for(suite, provenance_extra)
    text = render_report(suite, provenance, rel, changes)
    path = out_dir / f"{grid.name}.md"
    path.write_text(text, encoding="utf-8")
    if as_json:
        data = suite_json(suite, provenance)
        (out_dir / f"{grid.name}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path
