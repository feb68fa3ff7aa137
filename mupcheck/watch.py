"""A coordinate check inside the team's own training loop: one line in the trainer, `watch(model)`.

    model = GPT(...); set_base_shapes(model, base)      # the team's own model, muP as they apply it
    optimizer = MuAdamW(model.parameters(), lr=lr)       # their optimizer, groups and schedule
    from mupcheck.watch import watch                      # torch only: nothing else of mupcheck
    watch(model)                                         # records the first steps' coordinate sizes
    for step, (x, y) in enumerate(batches): ...          # their loop, unchanged

At the model's first forward call in training mode, `watch` keeps that call's inputs as a fixed probe. After
each of the next `steps` training forward calls (once the optimizer has stepped in between), it runs the model
on the probe again, without gradients and in eval mode, and prints for every leaf module a metric line
`{"coord": {"layer", "type", "step", "size", "update", "numel", "last_dim"}}`: `size` the mean |coordinate| of
its output, `update` the mean |change| of it since step 0, and the output's shape for the check's rules. That
is mup's coordinate check (arXiv 2203.03466, Appendix D.1), but after the team's own optimizer, parameter
groups and schedule, which a check on the model alone cannot see: a schedule that overwrites every group's rate
(`group["lr"] = lr`) makes the hidden layers' updates grow with width. mupcheck reads the lines from the run's
output, and its report compares them across widths (mupcheck.checks.coord). Outside a mupcheck run, the lines
are printed all the same.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from torch import nn

__all__ = ["watch"]


def watch(model: nn.Module, steps: int = 4, stream: Any = None) -> nn.Module:
    """Record the coordinate sizes of `model`'s leaf modules over its first `steps` training steps (see the
    module docstring); returns the model. The hooks remove themselves when done."""
    return _Watcher(model, steps, stream or sys.stdout).model


class _Watcher:
    def __init__(self, model: nn.Module, steps: int, stream: Any):
        self.model, self.steps, self.stream = model, steps, stream
        self.probe: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self.first: dict[str, torch.Tensor] = {}
        self.calls = 0
        self.busy = False
        self.leaves = {name: m for name, m in model.named_modules() if name and not list(m.children())}
        self.handle = model.register_forward_pre_hook(self._before, with_kwargs=True)

    def _before(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.busy or not module.training:
            return
        if self.probe is None:
            self.probe = (_detached(args), _detached(kwargs))
            self._record(0)
        else:
            self.calls += 1
            self._record(self.calls)  # the optimizer stepped since the last call: step `calls`'s weights
        if self.calls >= self.steps:
            self.handle.remove()

    def _record(self, step: int) -> None:
        assert self.probe is not None
        outputs: dict[str, torch.Tensor] = {}
        hooks = [m.register_forward_hook(self._keep(name, outputs)) for name, m in self.leaves.items()]
        self.busy = True
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(*self.probe[0], **self.probe[1])
        finally:
            self.model.train()
            self.busy = False
            for h in hooks:
                h.remove()
        for name, out in outputs.items():
            if step == 0:
                self.first[name] = out
            base = self.first.get(name)
            update = (out - base).abs().mean().item() if base is not None and base.shape == out.shape else 0.0
            line = {"coord": {"layer": name, "type": type(self.leaves[name]).__name__, "step": step,
                              "size": out.abs().mean().item(), "update": update, "numel": out.numel(),
                              "last_dim": out.shape[-1] if out.ndim else 0}}
            print(json.dumps(line), file=self.stream, flush=True)

    @staticmethod
    def _keep(name: str, outputs: dict[str, torch.Tensor]) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                outputs[name] = output.detach().float().clone()
        return hook


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value
