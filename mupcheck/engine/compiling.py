"""torch.compile for the fused engine: graphs that take any number of members and any width.

    step = compiled(fn)                 # torch.compile(fn), without duck sizing
    members_dynamic(*tensors)           # dim 0, the member axis, is dynamic from the first call
    mark_dynamic(t, [1])                # and so are these dims of t (the width, after the member axis)

The fused engine (`mupcheck.engine.fused`) compiles its forward/backward and its optimizer steps once
per process; these helpers keep the graphs general enough that a group whose members leave, or the next
width's group, reuses them instead of recompiling.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.fx.experimental._config as fx_config


def compiled(fn: Callable) -> Callable:
    """`torch.compile(fn)`, whose graphs are compiled without duck sizing.

    Every parameter is a view into its group's storage tensor, so with sizes dynamic (the width, from
    the first compile) the views' storage offsets are symbols too. Duck sizing gives sizes
    that happen to be equal one symbol, and guards that they stay equal: offsets of unrelated parameters
    that coincide at one width (`fc_out.weight`'s offset and `pos_emb.weight`'s, at 8192) no longer do at
    the next, and the forward recompiled at every width. On a CPU (muP GPT, widths 16-128, 3 members, 12
    steps, inductor's caches off) the groups of widths 64 and 128 took 21 s each; a group that reuses the
    process's graph takes 0.2-0.9 s (widths 64-256).
    """
    compiled = torch.compile(fn)

    def call(*args: Any, **kwargs: Any) -> Any:
        with _no_duck_sizing():
            return compiled(*args, **kwargs)
    return call


def _no_duck_sizing() -> contextlib.AbstractContextManager:
    # The switch is in a private config module (the guard's own message names it); a torch without
    # it compiles with duck sizing, which is slower to start but as correct.
    if not hasattr(fx_config, "use_duck_shape"):
        return contextlib.nullcontext()
    return fx_config.patch(use_duck_shape=False)  # type: ignore[attr-defined]  # added at import by torch


def mark_dynamic(t: torch.Tensor, dims: list[int]) -> None:
    """Compile `t`'s `dims` as dynamic sizes (where torch.compile can; else it specializes them)."""
    for d in dims:
        torch._dynamo.maybe_mark_dynamic(t, d)


def members_dynamic(*tensors: torch.Tensor) -> None:
    """Tell torch.compile that dim 0 of these tensors, the member axis, changes size. Needed at the first
    call only: the graphs then compiled take any later batch size of two or more members.

    Without it dynamo compiles a graph for the first group size, then recompiles with a dynamic axis
    when the first member leaves: on a CPU (inductor's C++ backend, width 32, caches off) a group of 8
    whose batch shrank three times compiled 4 graphs instead of 2 and took 33 s instead of 22. A group
    of one member still gets its own graph (dynamo specializes sizes 0 and 1), and so does each batch
    size of a user model with an embedding: in torch 2.13, compiling `F.embedding` under `vmap` fixes
    the size vmap maps over.
    """
    for t in tensors:
        mark_dynamic(t, [0])
