"""Fusion groups split so that every device of a sweep has work.

    groups = balance(fusion_groups(configs, 32), slots=8, cost=plan.cost)

A grid with fewer fusion groups than devices leaves devices idle: `grids/gpu_reference.toml` has one
group of 32 runs per width, 4 in all, so on 8 GPUs four would wait while the width-1024 group, about
three quarters of the grid's FLOPs, trains alone and sets the sweep's wall time. `balance` splits the
costliest group in two, again and again, until there are as many groups as devices or the costliest
group is a single run. Each half gets members of every token budget (members are dealt, costliest
first, to the lighter half), so the two cost about the same.

Groups are only split into devices that would otherwise idle: with at least as many groups as devices
they are kept whole, since one batched model of 32 members uses a GPU better than two of 16.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mupcheck.spec import RunConfig

__all__ = ["balance", "gpu_slots", "local_slots"]


def balance(groups: Sequence[Sequence[RunConfig]], slots: int,
            cost: Callable[[RunConfig], float]) -> list[list[RunConfig]]:
    """`groups` with the costliest split in halves until there are `slots` groups (or the costliest is
    one run); every run stays in exactly one group, and groups keep their runs' order."""
    out = [list(group) for group in groups]
    while out and len(out) < slots:
        i = max(range(len(out)), key=lambda j: sum(cost(c) for c in out[j]))
        if len(out[i]) < 2:
            break
        out[i:i + 1] = _halves(out[i], cost)
    return out


def _halves(group: list[RunConfig], cost: Callable[[RunConfig], float]) -> list[list[RunConfig]]:
    """Two groups of about equal cost and size: members dealt costliest first to the lighter half."""
    halves: list[list[int]] = [[], []]
    totals = [0.0, 0.0]
    for i in sorted(range(len(group)), key=lambda i: -cost(group[i])):
        # the lighter half, unless it already holds its share of members
        side = 0 if totals[0] <= totals[1] else 1
        if len(halves[side]) >= (len(group) + 1) // 2:
            side = 1 - side
        halves[side].append(i)
        totals[side] += cost(group[i])
    return [[group[i] for i in sorted(half)] for half in halves]


def local_slots(device: torch.device, workers: int) -> int:
    """How many groups the processes of a sweep on this machine train at once, each on a device of its
    own: one per worker, at most one per GPU on CUDA (workers beyond the GPUs share them), and one for
    a sweep pinned to a single GPU (`cuda:N`)."""
    if device.type != "cuda":
        return max(1, workers)
    if device.index is not None:
        return 1
    return max(1, min(workers, torch.cuda.device_count()))


def gpu_slots(spec: str | None, runs_per_gpu: int = 1, visible: str | None = None,
              count: int | None = None) -> tuple[str, ...]:
    """The CUDA_VISIBLE_DEVICES of each worker slot of a trainer's sweep (`--gpus`): "0,1" -> ("0", "1"); "all"
    -> every GPU this process sees (the ids in `visible`, the parent's CUDA_VISIBLE_DEVICES, else 0 .. count - 1,
    `count` defaulting to torch's device count); each GPU given `runs_per_gpu` slots. None or "": no slots (the
    runs inherit the environment). ValueError names a malformed list."""
    if not spec:
        return ()
    if spec.strip() == "all":
        if visible:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
        else:
            n = torch.cuda.device_count() if count is None else count
            ids = [str(i) for i in range(n)]
        if not ids:
            raise ValueError("--gpus all: this machine has no GPU that CUDA can see")
    else:
        ids = [v.strip() for v in spec.split(",")]
        if not all(ids) or len(set(ids)) != len(ids):
            raise ValueError(f"--gpus {spec!r}: write GPU ids separated by commas (0,1,3), each once, or 'all'")
    return tuple(i for i in ids for _ in range(max(1, runs_per_gpu)))
