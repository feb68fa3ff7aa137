"""'Wider is better': at one learning rate, a wider muP model must not be worse.

    v = wider_is_better(optima, "mup", tokens, widths, reference_width)
    v.outcome, v.message()           # "pass" | "fail" | "inconclusive"

Under muP a wider model trained with the same hyperparameters should not be worse; a loss that rises with
width at the reference width's best rate points at the muP implementation, not at the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mupcheck.analysis.curves import t_interval
from mupcheck.analysis.optima import CellOptimum
from mupcheck.fmt import format_loss, format_tokens
from mupcheck.spec import Cell

__all__ = ["WiderVerdict", "wider_is_better"]


WiderOutcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class WiderVerdict:
    """'Wider is better': at one learning rate, the loss must not rise from one width to the next by more than
    a tolerance. Each rise is paired over seeds (a seed fixes init and data order at every width), with its
    95% interval: it passes when every rise's interval stays within the tolerance, fails when one lies above
    it, and is inconclusive otherwise, with one seed, or without a located reference optimum."""

    parametrization: str
    tokens: int
    lr_log2: float
    widths: tuple[int, ...]
    losses: tuple[float, ...]  # seed-mean loss at lr_log2, per width
    tolerance: float
    rises: tuple[tuple[float, tuple[float, float] | None], ...] = ()  # per widening: mean rise, 95% interval
    why_unknown: str = ""  # set when there is no rate to read every width at
    at: tuple[tuple[str, int], ...] = ()  # the depth and batch size, where the grid varies them

    @property
    def worst_rise(self) -> float:
        """Largest mean relative rise of the loss from one width to the next (inf if a wider run diverged)."""
        return max((r for r, _ in self.rises), default=math.nan)

    @property
    def outcome(self) -> WiderOutcome:
        if self.why_unknown or not self.rises:
            return "inconclusive"
        if any(r == math.inf or (iv is not None and iv[0] > self.tolerance) for r, iv in self.rises):
            return "fail"
        if all(iv is not None and iv[1] <= self.tolerance for _, iv in self.rises):
            return "pass"
        return "inconclusive"

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @property
    def head(self) -> str:
        return " ".join([f"{self.parametrization} tokens={format_tokens(self.tokens)}",
                         *(f"{a}={v}" for a, v in self.at)])

    @property
    def test_id(self) -> str:
        return f"wider[{self.head}]"

    def message(self) -> str:
        head = self.head
        if self.why_unknown:
            return f"{head}: INCONCLUSIVE: {self.why_unknown}"
        status = {"pass": "wider is better", "fail": "WIDER IS WORSE", "inconclusive": "INCONCLUSIVE"}[self.outcome]
        worst = max(range(len(self.rises)), key=lambda k: self.rises[k][0])
        rise, iv = self.rises[worst]
        if rise == math.inf:
            change = "a wider run diverged"
        else:
            change = (f"largest rise of the loss from one width to the next {100 * rise:+.2f}% (width "
                      f"{self.widths[worst]} -> {self.widths[worst + 1]}"
                      + (f", 95% interval {100 * iv[0]:+.2f} .. {100 * iv[1]:+.2f}%)" if iv else "; one seed: no "
                         "interval)"))
        lines = [f"{head} at lr 2^{self.lr_log2:g}: {status}: {change} (tolerance {100 * self.tolerance:g}%)"]
        lines += [f"  width {w:>6}: loss {format_loss(x)}" for w, x in zip(self.widths, self.losses)]
        if self.outcome == "fail" and self.parametrization in ("mup", "custom"):
            lines.append("  hint: under muP a wider model trained with the same hyperparameters should not be worse; "
                         "run `mupcheck coord-check` on this model")
        return "\n".join(lines)


def wider_is_better(optima: dict[Cell, CellOptimum], parametrization: str, tokens: int,
                    widths: tuple[int, ...], reference_width: int, tolerance: float = 0.01,
                    at: tuple[tuple[str, int], ...] = (), held: tuple[tuple[str, int], ...] = ()) -> WiderVerdict:
    """Losses across widths at the reference width's best learning rate among those every width measured
    (refinement adds different rates to different cells), with each widening's rise paired over seeds; at
    one depth and batch size (`at`: named in the check, `held`: not)."""
    coords = {**dict(held), **dict(at)}

    def cell(w: int) -> Cell:
        return Cell(parametrization, w, tokens, coords.get("depth", 0), coords.get("batch_size", 0))

    ref = optima[cell(reference_width)]
    cells = [optima[cell(w)] for w in widths]
    shared = sorted(set.intersection(*(set(c.xs) for c in cells)))
    ref_curve = dict(zip(ref.xs, ref.losses))

    def unknown(why: str) -> WiderVerdict:
        return WiderVerdict(parametrization, tokens, math.nan, tuple(widths), tuple(math.nan for _ in widths),
                            tolerance, why_unknown=why, at=at)

    if not ref.found:
        return unknown(f"the reference width {reference_width}'s optimum is not located ({ref.describe()}); "
                       "the rate to compare widths at is unknown")
    if not shared or not any(math.isfinite(ref_curve[x]) for x in shared):
        return unknown("no learning rate was measured at every width")
    x = min(shared, key=lambda lr: ref_curve[lr])
    by_seed = [c.seed_losses_at(x)[0] for c in cells]
    rises: list[tuple[float, tuple[float, float] | None]] = []
    for a, b in zip(by_seed, by_seed[1:]):
        per_seed = [(b[s] / a[s] - 1) if math.isfinite(b[s]) else math.inf
                    for s in sorted(set(a) & set(b)) if math.isfinite(a[s])]
        if any(map(math.isinf, per_seed)):
            rises.append((math.inf, None))
        else:
            rises.append((float(np.mean(per_seed)) if per_seed else math.nan, t_interval(per_seed)))
    losses = tuple(dict(zip(c.xs, c.losses))[x] for c in cells)
    return WiderVerdict(parametrization, tokens, x, tuple(widths), losses, tolerance, tuple(rises), at=at)
