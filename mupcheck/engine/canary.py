"""The run-time canary of the batched engines: one member of each group is also trained on its own.

A batched engine can be wrong on one device and right on another (vmap over CUDA's attention kernels
trained NaN or wrong models while every CPU test passed). So every fused group, on every device,
checks itself: before it starts, its lowest-learning-rate member (the one farthest from the edge of
stability, where Adam is chaotic) is trained solo for CANARY_STEPS steps, twice. The solo repeat
measures how far two runs that should be identical drift apart on this device (0 on a CPU;
nondeterministic GPU kernels make it nonzero), and the tolerance is the larger of CANARY_FLOOR and
CANARY_FACTOR times that drift. After its first CANARY_STEPS steps the batched member's per-step losses
must stay within the tolerance of the solo ones, relative, at every step; otherwise the group stops
(`FusedCanaryFailed`) and its runs are trained one at a time, with a note in each record.

It catches gross errors (a NaN, 5.33 against 3.88 after 8 steps), not rounding: over 8 steps a correct
batched member agreed with its solo run to about 1e-3 under bf16 on an H100 (issue 11), and to 1e-12
in float64 on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mupcheck.engine.data import TokenData
from mupcheck.engine.solo import solo_losses
from mupcheck.spec import RunConfig

__all__ = ["CANARY_FACTOR", "CANARY_FLOOR", "CANARY_STEPS", "Canary", "FusedCanaryFailed"]

CANARY_STEPS = 8
CANARY_FLOOR = 0.01  # relative: 1% of the loss
CANARY_FACTOR = 5.0  # times the solo-vs-solo drift measured on this device


class FusedCanaryFailed(Exception):
    """A batched member's losses left those of the same run trained alone."""


@dataclass(frozen=True)
class Canary:
    """The solo reference of one member of a group, and the tolerance measured with it."""

    member: int  # index into the group's configs
    label: str
    solo: tuple[float, ...]  # per-step training losses of the member trained alone
    repeat_diff: float  # largest relative difference between two identical solo runs
    tolerance: float

    @classmethod
    def measure(cls, configs: list[RunConfig], data: TokenData, device: torch.device, dtype: torch.dtype) -> Canary:
        """Train the group's lowest-learning-rate member alone, twice, for CANARY_STEPS steps."""
        member = min(range(len(configs)), key=lambda i: (configs[i].lr_log2, configs[i].seed))
        cfg = configs[member]
        first = solo_losses(cfg, data, device, CANARY_STEPS, dtype)
        second = solo_losses(cfg, data, device, CANARY_STEPS, dtype)
        repeat = _max_rel_diff(first, second)
        tolerance = max(CANARY_FLOOR, CANARY_FACTOR * repeat) if math.isfinite(repeat) else CANARY_FLOOR
        return cls(member, cfg.label(), tuple(first), repeat, tolerance)

    @property
    def steps(self) -> int:
        return len(self.solo)

    def check(self, batched: list[float], engine: str) -> dict[str, Any]:
        """Compare the batched member's first losses with the solo ones; raise FusedCanaryFailed beyond
        the tolerance. Returns what the records keep."""
        diff = _max_rel_diff(self.solo, batched[:self.steps])
        if len(batched) < self.steps or not diff <= self.tolerance:  # `not <=`: NaN fails too
            shown = "NaN" if math.isnan(diff) else f"{diff:.3g}"
            raise FusedCanaryFailed(
                f"the batched engine {engine!r} differs from a solo run of {self.label} by {shown} (relative, "
                f"largest over its first {self.steps} steps; tolerance {self.tolerance:.3g}, from a solo repeat "
                f"that differed by {self.repeat_diff:.3g}): solo {_losses(self.solo)}, batched {_losses(batched)}")
        return {"member": self.label, "steps": self.steps, "max_rel_diff": diff, "tolerance": self.tolerance,
                "solo_repeat_rel_diff": self.repeat_diff}


def _max_rel_diff(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
    """Largest |a - b| / |a| over the common steps; NaN if any loss is not finite or a run stopped early."""
    if len(a) != len(b) or not a:
        return math.nan
    diffs = [abs(x - y) / abs(x) for x, y in zip(a, b)]
    return max(diffs) if all(math.isfinite(d) for d in diffs) else math.nan


def _losses(values: list[float] | tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values[:CANARY_STEPS]) + "]"
