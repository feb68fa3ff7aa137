"""Which runs train together as one batched model: those that differ only in learning rate, seed and budget.

    groups = fusion_groups(configs, max_members=32)      # lists of RunConfigs, each one batched model
    group_label(group)                                   # 'gpt mup width=128 tokens=1M..8M lr=2^-10..2^-4 ... x32'

A pure function of the run configs, apart from the engine that trains the groups (`mupcheck.engine.fused`,
which imports torch's compiler: 1.2 s): the plan's cost estimate and the schedulers group runs without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mupcheck.fmt import format_tokens
from mupcheck.spec import RunConfig

__all__ = ["fuse_key", "fusion_groups", "group_label"]


def fuse_key(cfg: RunConfig) -> RunConfig:
    """What members of one fused group share: the config without learning rate, seed and token
    budget (a member's data order depends on its seed alone, so budgets share their first steps)."""
    return dataclasses.replace(cfg, lr_log2=0.0, seed=0, tokens=0)


def fusion_groups(configs: Sequence[RunConfig], max_members: int) -> list[list[RunConfig]]:
    """Runs grouped by `fuse_key`, in first-seen order, each group split into chunks of at most
    `max_members` (max_members <= 1: every run alone)."""
    if max_members <= 1:
        return [[cfg] for cfg in configs]
    by_key: dict[RunConfig, list[RunConfig]] = {}
    for cfg in configs:
        by_key.setdefault(fuse_key(cfg), []).append(cfg)
    return [members[i:i + max_members] for members in by_key.values()
            for i in range(0, len(members), max_members)]


def group_label(configs: Sequence[RunConfig]) -> str:
    """'gpt mup width=128 tokens=1M..8M lr=2^-10..2^-4 seed=0 x32 fused' for progress output."""
    if len(configs) == 1:
        return configs[0].label()

    def span(values: list, fmt) -> str:
        values = sorted(set(values))
        return fmt(values[0]) if len(values) == 1 else f"{fmt(values[0])}..{fmt(values[-1])}"

    first = configs[0]
    return (f"{first.model} {first.parametrization} width={first.width} "
            f"tokens={span([c.tokens for c in configs], format_tokens)} "
            f"lr={span([c.lr_log2 for c in configs], lambda v: f'2^{v:g}')} "
            f"seed={span([c.seed for c in configs], str)} x{len(configs)} fused")
