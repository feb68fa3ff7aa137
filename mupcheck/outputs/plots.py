"""Plots of reports and coordinate checks, drawn from the tables the analysis and the checks compute.

The table is the only seam between computing and plotting (as in mup's `get_coord_data` /
`plot_coord_data`): every function here takes frames or optima and writes PNG files.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mupcheck.analysis.comparison import size_ladder  # noqa: E402
from mupcheck.analysis.optima import CellOptimum  # noqa: E402
from mupcheck.fmt import format_tokens  # noqa: E402
from mupcheck.spec import AXES, Cell, Grid, swept_quantity  # noqa: E402

__all__ = ["plot_coords", "plot_loss_curves", "plot_optima"]

Optima = dict[Cell, CellOptimum]


def _fmt(axis: str, value: int) -> str:
    return format_tokens(value) if axis == "tokens" else str(value)


def _slices(grid: Grid, merge_depth: bool = False) -> list[tuple[int, int, str]]:
    """(depth, batch size, name) of each combination (Grid.slices); the name ('_depth=4') is empty where the
    grid varies neither, so that a plain grid's file names stay as they were. `merge_depth`: one slice per batch
    size (a size ladder draws its shapes, depths included, as curves of one figure)."""
    slices = [(d, b, "".join(f"_{a.replace('_size', '')}={v}" for a, v in named if not (merge_depth and a == "depth")))
              for d, b, named in grid.slices()]
    if not merge_depth:
        return slices
    return list({name: (d, b, name) for d, b, name in slices}.values())


def _legend_place(entries: int) -> str:
    """Where a legend goes: matplotlib's best place for a few entries; a fixed corner for many, whose best place
    costs matplotlib a search over every point drawn (16 s of a 20,000-run report's 34)."""
    return "best" if entries <= 8 else "upper left"


def _tuned_label(tuned: str) -> str:
    """The x of a cell's curve: log2 of the learning rate, or of the swept key (of 1 - beta2 for adam_beta2)."""
    return "log2(learning rate)" if tuned == "lr" else f"log2({swept_quantity(tuned)})"


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss_curves(df: pd.DataFrame, optima: Optima, grid: Grid, out_dir: Path) -> list[Path]:
    """Loss vs log2(lr), one curve per width (per model shape along a size ladder), one figure per token budget
    (and depth and batch size where the grid varies them), parametrizations side by side."""
    paths = []
    pars = list(grid.parametrization)
    ladder = size_ladder(grid)
    for (depth, batch, slice_name), tokens in itertools.product(_slices(grid, merge_depth=bool(ladder)), grid.tokens):
        fig, axes = plt.subplots(1, len(pars), figsize=(5.5 * len(pars), 4.2), sharey=True, squeeze=False)
        finite_losses, diverged = [], []
        shapes = [(w, d) for w, d, _ in ladder] if ladder else [(w, depth) for w in grid.widths]
        drawn = 0
        for ax, par in zip(axes[0], pars):
            colors = plt.cm.viridis([i / max(1, len(shapes) - 1) for i in range(len(shapes))])
            for color, (width, d) in zip(colors, shapes):
                if Cell(par, width, tokens, d, batch) not in optima:
                    continue  # a ragged sweep has no runs there
                opt = optima[Cell(par, width, tokens, d, batch)]
                xs = [x for x, y in zip(opt.xs, opt.losses) if math.isfinite(y)]
                ys = [y for y in opt.losses if math.isfinite(y)]
                finite_losses += ys + ([opt.loss] if opt.found else [])
                ax.plot(xs, ys, "o-", color=color, ms=3, label=f"{width}x{d}" if ladder else f"width {width}")
                drawn += 1
                if opt.found:
                    ax.plot([opt.optimum_log2], [opt.loss], "*", color=color, ms=13, mec="black", mew=0.6)
                diverged += [(ax, x, color) for x, y in zip(opt.xs, opt.losses) if math.isinf(y)]
            ax.set_title(f"{par}   tokens={format_tokens(tokens)}{slice_name.replace('_', '  ')}")
            ax.set_xlabel(_tuned_label(grid.tuned))
            ax.grid(alpha=0.3)
        if not drawn:
            plt.close(fig)
            continue  # a ragged sweep has no cell at this budget and slice
        if finite_losses:
            # One y-range for the shared axis; losses far above the best are cut off, and diverged
            # runs are drawn as crosses on the top edge.
            lo, hi = min(finite_losses), min(max(finite_losses), min(finite_losses) + 2.0)
            pad = 0.05 * (hi - lo) + 1e-3
            axes[0][0].set_ylim(lo - pad, hi + 2 * pad)
        for ax, x, color in diverged:
            ax.plot([x], [ax.get_ylim()[1]], "x", color=color, ms=7, clip_on=False)
        axes[0][0].set_ylabel("final validation loss")
        for ax in axes[0]:
            ax.legend(fontsize=7 if len(shapes) > 8 else 8, title="star: optimum, x: diverged", title_fontsize=7,
                      ncol=2 if len(shapes) > 8 else 1, loc=_legend_place(len(shapes)))
        paths.append(_save(fig, out_dir / f"loss_vs_lr_tokens={format_tokens(tokens)}{slice_name}.png"))
    return paths


def plot_optima(optima: Optima, grid: Grid, out_dir: Path) -> list[Path]:
    """Optimal log2(lr) against width and against tokens, parametrizations side by side: one line per value
    of the other axis, error bars from the 95% interval over seeds, censored optima as triangles on the edge
    they lie beyond; above them, dashed, the stability boundary (open squares; a boundary beyond the measured
    rates as an open triangle at its lower bound). The gap between the two lines is the margin."""
    paths = []
    ladder = size_ladder(grid)
    for axis in AXES:
        values = grid.values(axis)
        if len(values) < 2 or (ladder and axis in ("width", "depth")):
            continue  # along a size ladder, width and depth change together: the optimum against N, below
        pars = list(grid.parametrization)
        fig, axes = plt.subplots(1, len(pars), figsize=(5.5 * len(pars), 4.0), sharey=True, squeeze=False)
        # One line per combination of the other axes; named by the paired axis and those the grid varies.
        others = [a for a in AXES if a != axis]
        named = [a for a in others if a == ("tokens" if axis == "width" else "width") or len(grid.values(a)) > 1]
        series = [dict(zip(others, combo)) for combo in itertools.product(*(grid.values(a) for a in others))]
        colors = plt.cm.viridis([i / max(1, len(series) - 1) for i in range(len(series))])
        for ax, par in zip(axes[0], pars):
            for color, s in zip(colors, series):
                keys = [(v, Cell(par, **{**s, axis: v})) for v in values]
                present = [(v, optima[k]) for v, k in keys if k in optima]
                if not present:
                    continue  # a ragged sweep has no runs along this line
                values_here = [v for v, _ in present]
                cells = [c for _, c in present]
                found = [(v, c) for v, c in present if c.found]
                label = ", ".join(f"{a} {_fmt(a, s[a])}" for a in named)
                ax.plot([v for v, _ in found], [c.optimum_log2 for _, c in found], "o-", color=color, label=label)
                for v, c in found:
                    if c.interval:
                        low, high = c.optimum_log2 - c.interval[0], c.interval[1] - c.optimum_log2
                        ax.errorbar([v], [c.optimum_log2], yerr=[[low], [high]], fmt="none", color=color, capsize=3)
                for v, c in zip(values_here, cells):
                    if c.censored:
                        ax.plot([v], [c.fit.x0], "v" if c.censored == "low" else "^", color=color, ms=9, mfc="none")
                bounds = [(v, c) for v, c in zip(values_here, cells) if math.isfinite(c.boundary)]
                ax.plot([v for v, _ in bounds], [c.boundary for _, c in bounds], "--", color=color, lw=1)
                for v, c in bounds:
                    iv = c.boundary_interval
                    ax.plot([v], [c.boundary], "^" if c.boundary_censored else "s", color=color, ms=7, mfc="none")
                    if iv:
                        ax.errorbar([v], [c.boundary], yerr=[[c.boundary - iv[0]], [iv[1] - c.boundary]], fmt="none",
                                    color=color, capsize=2, lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(values), [_fmt(axis, v) for v in values])
            ax.minorticks_off()
            ax.set_title(f"{par}: optimum vs {axis}")
            ax.set_xlabel(axis)
            ax.grid(alpha=0.3)
            if len(series) <= 24:  # more lines than that: a legend would hide the plot, and name nothing usefully
                ax.legend(fontsize=8, title="bars: 95% over seeds; triangles: censored;\ndashed, squares: stability "
                          "boundary", title_fontsize=7, loc=_legend_place(len(series)))
        axes[0][0].set_ylabel(f"optimal {_tuned_label(grid.tuned)}; boundary (dashed)")
        paths.append(_save(fig, out_dir / f"optimum_vs_{axis}.png"))
    if ladder:
        paths.append(_plot_optima_vs_params(optima, grid, ladder, out_dir))
    return paths


def _plot_optima_vs_params(optima: Optima, grid: Grid, ladder: tuple[tuple[int, int, float], ...],
                           out_dir: Path) -> Path:
    """Along a size ladder: the optimum against the parameter count, one line per budget and batch size."""
    pars = list(grid.parametrization)
    fig, axes = plt.subplots(1, len(pars), figsize=(5.5 * len(pars), 4.0), sharey=True, squeeze=False)
    series = list(itertools.product(grid.tokens, grid.values("batch_size")))
    colors = plt.cm.viridis([i / max(1, len(series) - 1) for i in range(len(series))])
    for ax, par in zip(axes[0], pars):
        for color, (tokens, batch) in zip(colors, series):
            cells = [(n, optima.get(Cell(par, w, tokens, d, batch))) for w, d, n in ladder]
            found = [(n, c) for n, c in cells if c is not None and c.found]
            if not found:
                continue
            label = f"tokens {format_tokens(tokens)}" + (f", batch {batch}" if len(grid.values("batch_size")) > 1
                                                         else "")
            ax.plot([n for n, _ in found], [c.optimum_log2 for _, c in found], "o-", color=color, ms=4, label=label)
            for n, c in found:
                if c.interval:
                    low, high = c.optimum_log2 - c.interval[0], c.interval[1] - c.optimum_log2
                    ax.errorbar([n], [c.optimum_log2], yerr=[[low], [high]], fmt="none", color=color, capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{par}: optimum vs parameters (width and depth together)")
        ax.set_xlabel("parameters N" + ("" if grid.params_stated else " (12 x depth x width^2)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1, loc=_legend_place(len(series)))
    axes[0][0].set_ylabel(f"optimal {_tuned_label(grid.tuned)}")
    return _save(fig, out_dir / "optimum_vs_params.png")


def plot_coords(df: pd.DataFrame, path: Any, title: str = "") -> None:
    """Log-log plot of |output| and |update| against width at the last step, one line per module, named in a
    legend beside the panels (the modules that grow most first)."""
    last = df[df["step"] == df["step"].max()]
    mean = last.groupby(["module", "width"])[["out", "delta"]].mean().reset_index()
    modules = list(dict.fromkeys(mean["module"]))
    colors = plt.cm.tab20([i % 20 / 19 for i in range(len(modules))])
    styles = ["-", "--", ":"]  # beyond 20 modules, colours repeat with another line style
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for ax, quantity in zip(axes, ("out", "delta")):
        for i, module in enumerate(modules):
            g = mean[mean["module"] == module]
            ax.plot(g["width"], g[quantity], marker="o", ls=styles[(i // 20) % 3], color=colors[i], ms=3, lw=1,
                    label=module)
        widths = sorted(mean["width"].unique())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
        ax.set_xlabel("width")
        ax.set_ylabel("mean |output|" if quantity == "out" else "mean |output - output at step 0|")
        ax.set_title(f"{title} {'activations' if quantity == 'out' else 'updates'} at step {int(df['step'].max())}")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 + len(modules) // 24,
                   title="module", title_fontsize=7)
    _save(fig, Path(path))
