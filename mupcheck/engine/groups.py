"""Which runs train together: as one batched model (they differ only in learning rate, seed and budget), and
as one shared run (they differ only in budget, and their schedules agree on most of the shorter one's steps).

    groups = fusion_groups(configs, max_members=32)      # lists of RunConfigs, each one batched model
    groups = fusion_groups(configs, 1, share=True)       # one at a time, but budgets that share a run together
    group_label(group)                                   # 'gpt mup width=128 tokens=1M..8M lr=2^-10..2^-4 ... x32'
    branch_step(short, long)                             # where `short` leaves `long`'s run (None: no sharing)

**Shared prefixes.** A run's batch at a step depends only on its seed and the step (`mupcheck.engine.data`),
so two runs that differ only in their budget compute the same steps for as long as their learning-rate
factors agree. Under a constant schedule after a warmup fixed in tokens, the run to T is exactly the first T
tokens of the run to 2T; under warmup-stable-decay, it is the longer run's stable phase up to T's decay start,
then T's own decay (Hägele et al., arXiv 2405.18392). One run per rate and seed is then trained to the longest
budget (the *trunk*); a shorter budget is read off it at its last step (a prefix) or branches off it where
its decay starts. Cosine and linear decay share nothing beyond the warmup: their factor depends on the
budget from the first step after it, which is the point of asking how the optimum moves with duration.

A pure function of the run configs, apart from the engine that trains the groups (`mupcheck.engine.fused`,
which imports torch's compiler: 1.2 s): the plan's cost estimate and the schedulers group runs without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mupcheck.engine.schedules import lr_multiplier
from mupcheck.fmt import format_tokens
from mupcheck.spec import RunConfig

__all__ = ["MIN_SHARED_FRACTION", "agreed_steps", "branch_step", "chain_key", "fuse_key", "fusion_groups",
           "group_label", "share_chains", "sharing_note", "trained_steps"]

# A budget shares a longer one's run when they agree on at least this fraction of its steps: less (a cosine
# schedule agrees on its warmup only) saves too little to be worth a branch.
MIN_SHARED_FRACTION = 0.5


def fuse_key(cfg: RunConfig) -> RunConfig:
    """What members of one fused group share: the config without learning rate, seed and token
    budget (a member's data order depends on its seed alone, so budgets share their first steps)."""
    return dataclasses.replace(cfg, lr_log2=0.0, seed=0, tokens=0)


def chain_key(cfg: RunConfig) -> RunConfig:
    """What the budgets of one shared run have in common: the config without its token budget."""
    return dataclasses.replace(cfg, tokens=0)


def _factor(cfg: RunConfig, step: int) -> float:
    return lr_multiplier(cfg.schedule, step, cfg.steps, cfg.warmup_frac, cfg.min_lr_frac, cfg.decay_frac)


def agreed_steps(short: RunConfig, long: RunConfig) -> int:
    """How many first steps `short` trains exactly as `long` does (0 unless they differ only in budget, with
    the same weight decay): the steps at which their learning-rate factors are equal, as floats."""
    if chain_key(short) != chain_key(long) or short.coupled_weight_decay != long.coupled_weight_decay:
        return 0
    for step in range(min(short.steps, long.steps)):
        if _factor(short, step) != _factor(long, step):
            return step
    return min(short.steps, long.steps)


def branch_step(short: RunConfig, long: RunConfig) -> int | None:
    """The step at which `short` leaves the run to `long`'s budget: its own last step when the whole of it is
    a prefix of that run (`short.steps`), the first step of its own schedule otherwise (a WSD decay); None when
    they agree on fewer than MIN_SHARED_FRACTION of `short`'s steps, so that `short` trains alone."""
    if short.steps <= 0 or short.steps > long.steps:
        return None
    agreed = agreed_steps(short, long)
    return agreed if agreed >= MIN_SHARED_FRACTION * short.steps else None


def share_chains(configs: Sequence[RunConfig]) -> list[list[RunConfig]]:
    """`configs` as shared runs, in first-seen order: runs that differ only in budget, with the longest (the
    trunk) last and every shorter budget that can branch off it before it, sorted by budget; a run that shares
    nothing is a chain of its own."""
    by_key: dict[RunConfig, list[RunConfig]] = {}
    for cfg in configs:
        by_key.setdefault(chain_key(cfg), []).append(cfg)
    chains: list[list[RunConfig]] = []
    for members in by_key.values():
        rest = sorted(members, key=lambda c: c.tokens)
        while rest:
            trunk = rest.pop()
            joined = [c for c in rest if branch_step(c, trunk) is not None]
            rest = [c for c in rest if branch_step(c, trunk) is None]
            chains.append(joined + [trunk])
    return chains


def trained_steps(chain: Sequence[RunConfig]) -> int:
    """The training steps a shared run takes for the budgets of `chain` (`share_chains`: longest last): the
    trunk's, and each decay branch's own (a prefix costs none)."""
    trunk = chain[-1]
    return trunk.steps + sum(c.steps - (branch_step(c, trunk) or 0) for c in chain[:-1])


def sharing_note(configs: Sequence[RunConfig]) -> str | None:
    """Why budgets of these runs that differ only in budget do not share a run, in one line (None: they share,
    or no two runs differ only in budget)."""
    by_key: dict[RunConfig, list[RunConfig]] = {}
    for cfg in configs:
        by_key.setdefault(chain_key(cfg), []).append(cfg)
    pairs = [sorted(m, key=lambda c: c.tokens) for m in by_key.values() if len({c.tokens for c in m}) > 1]
    if not pairs or any(branch_step(m[0], m[-1]) is not None for m in pairs):
        return None
    short, long = pairs[0][0], pairs[0][-1]
    if short.coupled_weight_decay != long.coupled_weight_decay:
        return "each budget has its own weight decay (weight_decay_mode = \"timescale\"): every budget trains alone"
    if short.schedule in ("cosine", "linear"):
        return (f"a {short.schedule} schedule depends on the budget from its first step after warmup: every budget "
                "trains alone (constant and wsd schedules share one run per rate and seed)")
    return ("the budgets' warmups differ in steps (`warmup` is a fraction of each run; `warmup_tokens` fixes it): "
            "every budget trains alone")


def fusion_groups(configs: Sequence[RunConfig], max_members: int, share: bool = False) -> list[list[RunConfig]]:
    """Runs grouped by `fuse_key`, in first-seen order, each group split into chunks of at most
    `max_members` (max_members <= 1: every run alone, or with `share`, every shared run alone). With
    `share`, a chunk never splits a shared run (it may then hold more than `max_members` budgets, which
    train as fewer rows)."""
    units = share_chains(configs) if share else [[cfg] for cfg in configs]
    if max_members <= 1:
        return units
    by_key: dict[RunConfig, list[list[RunConfig]]] = {}
    for unit in units:
        by_key.setdefault(fuse_key(unit[0]), []).append(unit)
    groups: list[list[RunConfig]] = []
    for chains in by_key.values():
        chunk: list[RunConfig] = []
        rows = 0
        for unit in chains:
            if rows and rows + 1 > max_members:
                groups.append(chunk)
                chunk, rows = [], 0
            chunk += unit
            rows += 1 if share else len(unit)
            if not share and rows >= max_members:
                groups.append(chunk)
                chunk, rows = [], 0
        if chunk:
            groups.append(chunk)
    return groups


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
