"""Learning-rate schedules, each spanning the run's own token budget.

    lr_multiplier("cosine", step=10, steps=100, warmup=0.05, min_lr_frac=0.1, decay_frac=0.2)

Returns the factor applied to every parameter group's base learning rate (muP's per-group
scaling is in the base rates already). Warmup is linear over `warmup * steps` steps; then:
- constant: 1
- cosine:   from 1 down to `min_lr_frac` by a half cosine
- linear:   from 1 down to `min_lr_frac` in a straight line
- wsd:      warmup-stable-decay: 1 until the last `decay_frac` of the run, then linear to `min_lr_frac`
"""

from __future__ import annotations

import math

__all__ = ["lr_multiplier"]


def lr_multiplier(schedule: str, step: int, steps: int, warmup: float, min_lr_frac: float,
                  decay_frac: float) -> float:
    """Learning-rate factor at `step` (0-based) of a run of `steps` steps."""
    warmup_steps = round(warmup * steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        decay_start = steps - round(decay_frac * steps)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start + 1) / max(1, steps - decay_start)
        return 1.0 - (1.0 - min_lr_frac) * progress
    progress = (step - warmup_steps) / max(1, steps - 1 - warmup_steps)  # 0 at the end of warmup, 1 at the end
    if schedule == "cosine":
        return min_lr_frac + (1.0 - min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_frac) * progress
    raise ValueError(f"unknown schedule {schedule!r}")
