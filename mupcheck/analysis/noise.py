"""How noisy a sweep is where a cell cannot say so itself: one seed per cell, or seeds that a comparison cannot pair.

    noise = noise_model(optima, "mup", grid.noise)     # NoiseModel(optimum=..., loss=..., law=...)
    noise.loss_of(cell)                                # one run's relative loss noise in that cell's group
    noise.optimum_of(cell)                             # one seed's optimum noise in that cell, floored (log2)
    noise.optimum_of(cell).half_width(scale)           # a 95% half-width at that SD and its degrees of freedom

With five seeds per cell a verdict reads its noise off the seeds (paired: a seed fixes init and data order in
both cells). Most sweeps teams bring have one seed, because a seed at scale costs a run; some have seeds in a
few cells only, or seeds that two cells do not share. For those a verdict needs a stated noise model of two
quantities, each estimated where it lives (issue 41), not from how well a law fits across cells:

- **the loss**: how far one run's final loss lies from its seed's smooth curve (relative). Each curve's runs in
  its basin (within BASIN of its lowest loss) are compared with a quadratic through their neighbours (windows
  of LOCAL_POINTS consecutive rates; the centre's residual, scaled by its leverage), and the spread is robust:
  1.4826 x the median absolute residual, which a few windows that a wall or a kink bends cannot inflate. The
  residuals pool over a group of similar cells (one parametrization, budget and batch size: longer or larger-
  batch runs are less noisy), or over the parametrization where a group has too few. A median-based spread of
  n residuals is worth about 0.37 n degrees of freedom (its asymptotic efficiency).
- **the optimum**: how far one seed's optimum lies from its cell's. From, in order: the seeds where some cells
  have several (pooled within-cell variance, `pooled seeds`: measured in this sweep); a prior the grid states
  (`[noise] optimum_sd_log2`, with `[noise] df` degrees of freedom); or the loss noise propagated through the
  cell's own fit (`propagated`): a parametric bootstrap that perturbs the cell's runs by the loss noise
  BOOTSTRAP times and locates the optimum again each time (as published scaling studies read the noise of a
  fitted optimum). Whatever the source, a cell's SD is at least what its rates can resolve: a located optimum
  is quantised by the spacing of the rates around it, SD QUANTISATION x that spacing (a uniform error over one
  spacing has SD 1/sqrt(12) = 0.29 of it), so a coarse sweep whose optima snap to the same rates is never
  read as noiseless.

The residuals of a smooth law across cells (log2 lr* linear in the log2 of every varying axis) are a
cross-check, not a source: they mix seed noise with the law's misfit. The model says when they lie below what
one seed could resolve (optima snapped to the rates), and when they exceed the propagated noise (the law bends,
or seeds move optima more than the runs' own noise shows). Each estimate carries its degrees of freedom, so
that an interval from it uses Student's t, and its source, which the report and the JSON name beside every
verdict that used it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mupcheck.analysis.curves import BASIN, fit_minimum, t_quantile
from mupcheck.analysis.optima import CellOptimum
from mupcheck.spec import Cell, NoiseSettings

__all__ = ["BOOTSTRAP", "LOCAL_POINTS", "MIN_GROUP_RESIDUALS", "MIN_LAW_DF", "QUANTISATION", "Noise", "NoiseModel",
           "noise_model"]

# A law's residuals are computed as a cross-check only with at least this many degrees of freedom.
MIN_LAW_DF = 2
# Consecutive rates of one curve that a local quadratic is fitted through (the centre's residual is kept).
LOCAL_POINTS = 4
# A group of similar cells supplies its own loss noise with at least this many residuals; else the
# parametrization's pooled residuals do.
MIN_GROUP_RESIDUALS = 8
# The floor on one seed's optimum SD, as a fraction of the spacing of the rates around it.
QUANTISATION = 0.29
# Bootstrap replicas per cell: the SD they give has a relative error of about 1/sqrt(2 BOOTSTRAP), small beside
# that of the loss noise it propagates.
BOOTSTRAP = 40
_MAD = 1.4826  # the normal's SD per median absolute deviation
_MAD_EFFICIENCY = 0.37  # degrees of freedom per residual of a median-based spread


@dataclass(frozen=True)
class Noise:
    """One noise estimate: a standard deviation, its degrees of freedom (inf for a known quantity) and where it
    came from."""

    sd: float
    df: float
    source: str  # "pooled seeds", "prior", "propagated", "curve residuals", "resolution" or "law residuals"
    detail: str  # how it was read, in a phrase

    def quantile(self) -> float:
        """The 97.5% quantile that a 95% interval from this estimate uses."""
        return 1.96 if math.isinf(self.df) else t_quantile(max(1, int(self.df)))

    def half_width(self, scale: float = 1.0) -> float:
        """The 95% half-width of a quantity whose SD is `scale` times this one."""
        return self.quantile() * self.sd * scale

    def describe(self, unit: str) -> str:
        value = f"{self.sd:.2f} log2" if unit == "log2" else f"{100 * self.sd:.2f}%"
        dof = "" if math.isinf(self.df) else f", {self.df:g} degrees of freedom"
        return f"SD {value} ({self.source}: {self.detail}{dof})"


@dataclass(frozen=True)
class NoiseModel:
    """The noise of one parametrization's sweep: of a seed's optimum, and of a run's loss within its curve.
    `optimum` and `loss` summarise the sweep (what the report's noise section says); `optimum_of` and `loss_of`
    give a cell's own, which verdicts use."""

    parametrization: str
    optimum: Noise | None
    loss: Noise | None
    law: Noise | None = None  # the cross-check: the cells' optima about a smooth law
    notes: tuple[str, ...] = ()  # what the cross-check says of the model, in sentences
    group_loss: Mapping[tuple[int, int], Noise] = field(default_factory=dict, compare=False, repr=False)
    _cells: dict[Cell, Noise | None] = field(default_factory=dict, compare=False, repr=False)

    def loss_of(self, cell: CellOptimum) -> Noise | None:
        """One run's relative loss noise in `cell`: its group's where the group has enough residuals."""
        return self.group_loss.get(_group(cell.key), self.loss)

    def optimum_of(self, cell: CellOptimum) -> Noise | None:
        """One seed's optimum noise in `cell` (log2): the sweep's measured or stated SD, else the cell's own loss
        noise propagated through its fit; at least what the cell's rates resolve (see the module docstring);
        None without a source."""
        base = self.optimum if self.optimum is not None and self.optimum.source != "propagated" else None
        if base is None:
            base = self.propagated(cell)
        if base is None:
            return None
        floor = QUANTISATION * spacing(cell)
        # The rates' quantisation adds to the noise, independently: in quadrature, with Welch-Satterthwaite's
        # degrees of freedom (the floor is known exactly).
        sd = math.hypot(base.sd, floor)
        df = math.inf if math.isinf(base.df) or base.sd == 0 else sd**4 * base.df / base.sd**4
        return Noise(sd, df, base.source, f"{base.detail}; with the rates' resolution, {QUANTISATION:g} x their "
                                          f"{spacing(cell):g}-log2 spacing, in quadrature")

    def propagated(self, cell: CellOptimum) -> Noise | None:
        """The cell's loss noise propagated through its own fit (computed once per cell)."""
        if cell.key not in self._cells:
            loss = self.loss_of(cell)
            self._cells[cell.key] = None if loss is None else _propagated(cell, loss)
        return self._cells[cell.key]

    def sentence(self) -> str:
        parts = [f"one seed's optimum: {self.optimum.describe('log2')}" if self.optimum else
                 "one seed's optimum: unknown (no cell has two seeds, no [noise] optimum_sd_log2, and no loss "
                 "noise to propagate)",
                 f"one run's loss within its curve: {self.loss.describe('relative')}" if self.loss else
                 "one run's loss within its curve: unknown"]
        if self.law is not None:
            parts.append(f"cross-check, {self.law.detail}: SD {self.law.sd:.2f} log2")
        return f"{self.parametrization}: " + "; ".join(parts) + "".join(f". {n}" for n in self.notes)


def noise_model(optima: Mapping[Cell, CellOptimum], parametrization: str,
                prior: NoiseSettings = NoiseSettings()) -> NoiseModel:
    """The noise model of `parametrization`'s cells (see the module docstring for the order of sources)."""
    cells = [o for k, o in optima.items() if k.parametrization == parametrization]
    groups, pooled_loss = _loss_noise(cells)
    loss = pooled_loss
    if loss is None and prior.loss_sd is not None:
        loss = Noise(prior.loss_sd, prior.df, "prior", "[noise] loss_sd in the grid")
    optimum = _pooled_seeds(cells)
    if optimum is None and prior.optimum_sd_log2 is not None:
        optimum = Noise(prior.optimum_sd_log2, prior.df, "prior", "[noise] optimum_sd_log2 in the grid")
    law = _law_residuals(cells)
    cache: dict[Cell, Noise | None] = {}
    if optimum is None and loss is not None:
        optimum = _typical_propagated(NoiseModel(parametrization, None, loss, group_loss=groups, _cells=cache), cells)
    model = NoiseModel(parametrization, optimum, loss, law, group_loss=groups, _cells=cache)
    return NoiseModel(parametrization, optimum, loss, law, _cross_check(model, cells), groups, cache)


def spacing(cell: CellOptimum) -> float:
    """The spacing of the rates around a cell's optimum (log2): the wider of the gaps on either side of the
    nearest measured rate; the grid's median gap where there is no optimum."""
    xs = np.asarray(cell.xs, dtype=float)
    gaps = np.diff(xs)
    if not len(gaps):
        return 1.0
    x0 = cell.optimum_log2
    if not math.isfinite(x0):
        return float(np.median(gaps))
    i = int(np.argmin(np.abs(xs - x0)))
    return float(max(gaps[max(i - 1, 0)], gaps[min(i, len(gaps) - 1)]))


def _group(cell: Cell) -> tuple[int, int]:
    return cell.tokens, cell.batch_size


def _pooled_seeds(cells: list[CellOptimum]) -> Noise | None:
    """The within-cell variance of the seeds' optima, pooled over the cells with two or more found."""
    ss, df, n_cells = 0.0, 0, 0
    for o in cells:
        found = o.found_optima
        if o.found and len(found) >= 2:
            ss += float(np.sum((np.asarray(found) - np.mean(found)) ** 2))
            df += len(found) - 1
            n_cells += 1
    if df == 0:
        return None
    return Noise(math.sqrt(ss / df), df, "pooled seeds", f"the seeds' spread within {n_cells} cell(s)")


def _loss_noise(cells: list[CellOptimum]) -> tuple[dict[tuple[int, int], Noise], Noise | None]:
    """(each group's loss noise where it has MIN_GROUP_RESIDUALS residuals, the parametrization's pooled one)."""
    by_group: dict[tuple[int, int], list[float]] = {}
    for o in cells:
        by_group.setdefault(_group(o.key), []).extend(_curve_residuals(o))
    every = [r for rs in by_group.values() for r in rs]
    groups = {g: _robust_sd(rs, f"{len(rs)} residuals of the cells at tokens {g[0]}, batch size {g[1]}")
              for g, rs in by_group.items() if len(rs) >= MIN_GROUP_RESIDUALS}
    pooled = (_robust_sd(every, f"{len(every)} residuals of {len(cells)} cell(s)' curves about local quadratics")
              if len(every) >= 3 else None)
    return groups, pooled


def _robust_sd(residuals: list[float], detail: str) -> Noise:
    sd = _MAD * float(np.median(np.abs(residuals)))
    return Noise(sd, max(1.0, round(_MAD_EFFICIENCY * len(residuals))), "curve residuals", f"median-based, {detail}")


def _curve_residuals(o: CellOptimum) -> list[float]:
    """Each seed's runs in its basin, each against a quadratic through its LOCAL_POINTS neighbours: the centre's
    relative residual over sqrt(1 - leverage), which has the run's own noise as its SD where the curve is smooth
    on that scale."""
    out = []
    xs_all = np.asarray(o.xs, dtype=float)
    for (_, curve), (_, usable) in zip(o.seed_losses, o.seed_usable):
        losses = np.asarray(curve, dtype=float)
        present = ~np.isnan(losses)  # NaN: this seed has no run there (a ragged imported sweep)
        y = np.where(np.asarray(usable)[present], losses[present], np.inf)
        basin = _basin_points(xs_all[present], y)
        if basin is None:
            continue
        xs, ys = basin
        if ys.min() <= 0:
            continue  # not a loss a relative noise can be read from
        rel = ys / ys.min()
        width = min(LOCAL_POINTS, len(xs))
        if width < 4:
            continue
        for start in range(len(xs) - width + 1):
            xw, yw = xs[start:start + width], rel[start:start + width]
            centre = (width - 1) // 2
            design = np.vander(xw - xw[centre], 3)
            hat = design @ np.linalg.pinv(design)
            residual = yw[centre] - float(hat[centre] @ yw)
            out.append(residual / math.sqrt(max(1e-12, 1.0 - hat[centre, centre])))
    return out


def _basin_points(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The contiguous run of usable points within BASIN of the curve's lowest loss, around its argmin."""
    finite = np.isfinite(y)
    if not finite.any():
        return None
    i = int(np.argmin(np.where(finite, y, np.inf)))
    ok = finite & (y <= y[i] * (1 + BASIN))
    lo = hi = i
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(x) - 1 and ok[hi + 1]:
        hi += 1
    return x[lo:hi + 1], y[lo:hi + 1]


def _propagated(cell: CellOptimum, loss: Noise) -> Noise | None:
    """One seed's optimum SD from the loss noise: each found seed's runs perturbed by `loss` (relative, independent
    per run) BOOTSTRAP times, the optimum located again each time (pinned replicas at their edge), the replicas'
    variance averaged over the seeds. Seeded by the cell, so a report regenerates identically."""
    rng = np.random.default_rng(zlib.crc32(repr(tuple(cell.key)).encode()))
    variances = []
    for (_, curve), (_, usable), (_, fit) in zip(cell.seed_losses, cell.seed_usable, cell.seed_fits):
        if not fit.found:
            continue
        y = np.where(np.asarray(usable), np.asarray(curve, dtype=float), np.inf)
        y[np.isnan(np.asarray(curve, dtype=float))] = np.nan
        finite = np.isfinite(y)
        optima = []
        for _ in range(BOOTSTRAP):
            replica = y.copy()
            replica[finite] *= 1 + loss.sd * rng.standard_normal(int(finite.sum()))
            optima.append(fit_minimum(cell.xs, replica).x0)
        variances.append(float(np.var(optima, ddof=1)))
        if len(variances) == 3:  # enough for an average; each costs BOOTSTRAP fits
            break
    if not variances:
        return None
    return Noise(math.sqrt(float(np.mean(variances))), loss.df, "propagated",
                 f"the loss noise ({100 * loss.sd:.2f}%) through the cell's own fit, {BOOTSTRAP} bootstrap replicas")


def _typical_propagated(model: NoiseModel, cells: list[CellOptimum]) -> Noise | None:
    """The sweep's summary of the propagated noise, with each cell's resolution in quadrature: the median over
    located cells (each verdict uses its own cells')."""
    found = [(o, n) for o in cells if o.found for n in [model.propagated(o)] if n is not None]
    if not found:
        return None
    sds = [math.hypot(n.sd, QUANTISATION * spacing(o)) for o, n in found]
    return Noise(float(np.median(sds)), min(n.df for _, n in found), "propagated",
                 f"the loss noise through each cell's own fit ({BOOTSTRAP} bootstrap replicas) and the rates' "
                 f"resolution ({QUANTISATION:g} x their spacing) in quadrature; median over {len(found)} cells, each "
                 "verdict using its own cells'")


def _law_residuals(cells: list[CellOptimum]) -> Noise | None:
    """The residual SD of log2 lr* = c + sum over varying axes of slope * log2(axis value), over located cells."""
    located = [o for o in cells if o.found and math.isfinite(o.optimum_log2)]
    if not located:
        return None
    axes = [a for a in ("width", "tokens", "depth", "batch_size") if len({getattr(o, a) for o in located}) > 1]
    design = np.array([[1.0] + [math.log2(getattr(o, a)) for a in axes] for o in located])
    y = np.array([o.optimum_log2 for o in located])
    rank = int(np.linalg.matrix_rank(design))
    df = len(located) - rank
    if df < MIN_LAW_DF:
        return None
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    sd = math.sqrt(float(np.sum((y - design @ coef) ** 2)) / df)
    law = " + ".join(f"log2 {a}" for a in axes) or "a constant"
    return Noise(sd, df, "law residuals", f"{len(located)} cells' optima about a law linear in {law}")


def _cross_check(model: NoiseModel, cells: list[CellOptimum]) -> tuple[str, ...]:
    """What the law's residuals say of the model: below the rates' resolution (optima snapped to the same rates:
    not a measure of noise), or above the noise the model gives the cells (the law bends, or seeds move optima
    more than the runs' noise shows), each a sentence."""
    law = model.law
    one_seed = [o for o in cells if o.found and o.n_seeds == 1]
    if law is None or not one_seed:
        return ()
    floor = float(np.median([QUANTISATION * spacing(o) for o in one_seed]))
    notes = []
    if law.sd < floor:
        notes.append(f"The law's residual SD ({law.sd:.2f} log2) lies below what one seed's optimum can resolve on "
                     f"these rates ({floor:.2f} log2): the optima snapped to the same rates, so the residuals do "
                     "not measure the noise")
    sds = [n.sd for o in one_seed for n in [model.optimum_of(o)] if n is not None]
    if sds and law.sd > 2 * float(np.median(sds)):
        notes.append(f"The law's residual SD ({law.sd:.2f} log2) exceeds twice the noise the runs give one seed's "
                     f"optimum (median {float(np.median(sds)):.2f}): the law bends across these cells, or seeds move "
                     "optima more than the runs' own noise shows; add seeds in a few cells to tell which")
    return tuple(notes)
