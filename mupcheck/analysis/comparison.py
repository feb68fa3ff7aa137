"""What a grid compares: pairs of cells along one axis, every other axis held, and the rules a comparison may carry.

    for comp in plan_comparisons(grid): ...      # known from the grid file alone, before anything trains
    comp.cell(comp.ref), comp.cell(comp.other)   # the two cells
    drift_of(comp, beta)                         # how far a rule moves the transferred rate

Along width, each width is compared with the reference width (`[transfer] reference_width`, else the base
width if the grid has it, else the smallest) at the same token count; along tokens, each budget with the
shortest at the same width; along depth and batch size likewise, with the other axes held.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from mupcheck.fmt import format_tokens
from mupcheck.spec import AXES, Cell, Grid, TransferSettings

__all__ = ["RULE_FIT_BUDGETS", "Comparison", "size_comparisons", "size_ladder", "batch_fit_sizes", "comparisons_for",
           "drift_of", "is_expected_break", "plan_comparisons", "reference_value", "rule_comparisons",
           "axis_value", "split_rest"]

# The power rule's beta is fitted on this many shortest budgets by default: two budgets an octave apart
# gave betas from -0.001 to 0.681 where all cells gave 0.015 to 0.388 (issue 13).
RULE_FIT_BUDGETS = 3


def axis_value(axis: str, value: int) -> str:
    """A value along an axis as ids and messages show it (a token budget as 1M, the others as numbers)."""
    return format_tokens(value) if axis == "tokens" else str(value)


@dataclass(frozen=True)
class Comparison:
    """Reference cell vs other cell along one axis, every other axis held fixed: `fixed` is the value of
    `fixed_axis` (tokens along width, width along the others), `at` the values of the remaining axes the grid
    varies (named in the check's id), `held` those it does not (left out of the id)."""

    axis: str  # the axis that changes (AXES), or "size": width and depth together, along a size ladder
    parametrization: str
    fixed: int  # the value of fixed_axis
    ref: int  # reference value along `axis` (along size: the index of a shape in `shapes`)
    other: int
    at: tuple[tuple[str, int], ...] = ()
    held: tuple[tuple[str, int], ...] = ()
    shapes: tuple[tuple[int, int, float], ...] = ()  # along size: (width, depth, parameters), smallest first

    @property
    def fixed_axis(self) -> str:
        return "tokens" if self.axis in ("width", "size") else "width"

    def cell(self, value: int) -> Cell:
        coords = {**dict(self.held), **dict(self.at), self.fixed_axis: self.fixed}
        if self.axis == "size":
            coords["width"], coords["depth"] = self.shapes[value][0], self.shapes[value][1]
        else:
            coords[self.axis] = value
        return Cell(self.parametrization, coords["width"], coords["tokens"], coords.get("depth", 0),
                    coords.get("batch_size", 0))

    def value_text(self, value: int) -> str:
        """A value along the comparison's axis as ids show it: a budget as 1M, a shape as 1024x8."""
        if self.axis == "size":
            return f"{self.shapes[value][0]}x{self.shapes[value][1]}"
        return axis_value(self.axis, value)

    def _named(self) -> list[tuple[str, int]]:
        """The held axes an id names: the paired axis and the varied others, less a width or budget a results
        table did not state (0)."""
        return [(a, v) for a, v in ((self.fixed_axis, self.fixed), *self.at) if v or a not in ("width", "tokens")]

    def _where(self) -> str:
        return " ".join(f"{a}={axis_value(a, v)}" for a, v in self._named())

    @property
    def test_id(self) -> str:
        """Reads like the finding: width[mup tokens=1M 32->256], size[sp tokens=4B 960x7->1024x8]."""
        return (f"{self.axis}[{' '.join(filter(None, (self.parametrization, self._where())))} "
                f"{self.value_text(self.ref)}->{self.value_text(self.other)}]")

    @property
    def label(self) -> str:
        """'width 32 -> 256 at tokens 1M', without the parametrization."""
        where = ", ".join(f"{a} {axis_value(a, v)}" for a, v in self._named())
        return (f"{self.axis} {self.value_text(self.ref)} -> {self.value_text(self.other)}"
                + (f" at {where}" if where else ""))

    def title(self) -> str:
        return f"{self.label} ({self.parametrization})"


def reference_value(grid: Grid, axis: str) -> int:
    """The reference cell's value along `axis`: `[transfer] reference_width`, else the base width if the
    grid has it, else the smallest width; likewise for depth (reference_depth, base_depth); the shortest
    token budget; the smallest batch size."""
    t = grid.transfer
    if axis == "width":
        if t.reference_width is not None:
            return t.reference_width
        return grid.base_width if grid.base_width in grid.widths else grid.widths[0]
    if axis == "depth":
        if t.reference_depth is not None:
            return t.reference_depth
        depths = grid.values("depth")
        return grid.base_depth if grid.base_depth in depths else depths[0]
    return grid.values(axis)[0]


def comparisons_for(axis: str, parametrizations: tuple[str, ...], values: tuple[int, ...],
                    fixed_values: tuple[int, ...], ref: int,
                    slices: tuple[tuple[tuple[str, int], ...], ...] = ((),),
                    held: tuple[tuple[str, int], ...] = ()) -> list[Comparison]:
    """Every value against `ref` along `axis`, at each value of the fixed axis and each slice (values of the
    remaining varied axes)."""
    return [Comparison(axis, par, fixed, ref, v, at, held)
            for par in parametrizations for at in slices for fixed in fixed_values for v in values if v != ref]


def split_rest(rest: list[str], values: Callable[[str], tuple[int, ...]]
                ) -> tuple[tuple[tuple[tuple[str, int], ...], ...], tuple[tuple[str, int], ...]]:
    """The remaining axes of a comparison: every combination of those with several values (named in its id),
    and the single value of the others (held, not named)."""
    varied = [a for a in rest if len(values(a)) > 1]
    held = tuple((a, values(a)[0]) for a in rest if a not in varied)
    slices = tuple(tuple(zip(varied, combo)) for combo in itertools.product(*(values(a) for a in varied)))
    return slices, held


def plan_comparisons(grid: Grid) -> list[Comparison]:
    """Every comparison a grid asks for: along each axis it varies, for each parametrization."""
    out: list[Comparison] = []
    for axis in AXES:
        values = grid.values(axis)
        if len(values) < 2:
            continue
        fixed_axis = "tokens" if axis == "width" else "width"
        slices, held = split_rest([a for a in AXES if a not in (axis, fixed_axis)], grid.values)
        out += comparisons_for(axis, grid.parametrization, values, grid.values(fixed_axis),
                               reference_value(grid, axis), slices, held)
    # A ragged sweep (a results grid) lacks some cells: a comparison exists only where both cells do.
    out = [c for c in out if grid.has_cell(c.cell(c.ref)) and grid.has_cell(c.cell(c.other))]
    return out + size_comparisons(grid)


def size_ladder(grid: Grid) -> tuple[tuple[int, int, float], ...]:
    """The model shapes (width, depth, parameters) smallest first, where a results grid scales width and depth
    together (both vary, and not every width is measured at every depth); () otherwise."""
    shapes = sorted({(c.width, c.depth) for c in grid.cells})
    widths, depths = {w for w, _ in shapes}, {d for _, d in shapes}
    if len(widths) < 2 or len(depths) < 2 or len(shapes) == len(widths) * len(depths) or 0 in widths:
        return ()
    return tuple(sorted(((w, d, grid.params_of(w, d)) for w, d in shapes), key=lambda s: (s[2], s[0], s[1])))


def size_comparisons(grid: Grid) -> list[Comparison]:
    """Along a size ladder, at each budget and batch size: every shape against the smallest, and each against
    the next larger one, where both cells have runs."""
    shapes = size_ladder(grid)
    if not shapes:
        return []
    batches = grid.values("batch_size")
    out = []
    for par in grid.parametrization:
        for tokens in grid.tokens:
            for batch in batches:
                at: tuple[tuple[str, int], ...] = (("batch_size", batch),) if len(batches) > 1 else ()
                held: tuple[tuple[str, int], ...] = () if at else (("batch_size", batch),)
                present = [i for i, (w, d, _) in enumerate(shapes) if grid.has_cell(Cell(par, w, tokens, d, batch))]
                pairs = {(present[0], j) for j in present[1:]} | set(zip(present, present[1:]))
                out += [Comparison("size", par, tokens, i, j, at, held, shapes) for i, j in sorted(pairs)]
    return out


def is_expected_break(comp: Comparison, settings: TransferSettings) -> bool:
    """`expect_break` entries are an axis ("tokens") or a parametrization and an axis ("sp:width")."""
    return comp.axis in settings.expect_break or f"{comp.parametrization}:{comp.axis}" in settings.expect_break


def drift_of(comp: Comparison, beta: float) -> float:
    """How far (log2) a rule with exponent `beta` moves the transferred rate down: along tokens lr* falls as
    T^-beta; along batch size it grows as B^beta (beta 0.5: the square-root rule); nothing along the others."""
    if not beta:
        return 0.0
    if comp.axis == "tokens":
        return beta * math.log2(comp.other / comp.ref)
    if comp.axis == "batch_size":
        return -beta * math.log2(comp.other / comp.ref)
    return 0.0


def batch_fit_sizes(grid: Grid) -> tuple[int, ...]:
    """The batch sizes a fitted batch rule is fitted on: the two smallest."""
    return grid.values("batch_size")[:2] if grid.transfer.lr_batch_rule == "fit" else ()


def rule_comparisons(grid: Grid) -> list[Comparison]:
    """Comparisons a transfer rule is checked on: along tokens with the power rule, along batch size with a
    batch rule; those whose other cell was not used to fit it."""
    t = grid.transfer
    out = []
    if t.lr_rule == "power" and len(grid.tokens) >= 2:
        fit_tokens = (set() if t.lr_rule_beta is not None
                      else set(t.lr_rule_fit_tokens or grid.tokens[:RULE_FIT_BUDGETS]))
        out += [c for c in plan_comparisons(grid) if c.axis == "tokens" and c.other not in fit_tokens]
    if t.lr_batch_rule != "none":
        fit_sizes = set(batch_fit_sizes(grid))
        out += [c for c in plan_comparisons(grid) if c.axis == "batch_size" and c.other not in fit_sizes]
    return out
