"""Fused training: the runs of a learning-rate sweep trained together as one batched model.

    groups = fusion_groups(configs, max_members=32)      # mupcheck.engine.groups: they differ only in lr, seed, tokens
    results = train_fused(groups[0], data, device="cuda")  # one result per member, as train_run's
    train_fused(groups[0], data, "cuda", on_result=save)   # also save(i, result) as each member leaves

A proxy model is too small to keep a GPU busy: one run at a time pays kernel-launch overhead, not
arithmetic. Runs that share everything but learning rate, seed and token budget have the same
shapes, so their parameters are stacked along a leading member axis (`torch.func.stack_module_state`)
and one batched step trains every member: the built-in models' own member-axis layers
(`mupcheck.engine.batched`), or `vmap(functional_call)` over a user's model.

What stays per member, so that each result is the one `train_run` would have produced:
- its initialisation (each member's model is built from its own seed, exactly as a solo run),
- its data order (each member draws the batches of its own seed; the batch at a step does not
  depend on the budget, so a shorter run sees the first steps of a longer one),
- its learning rate, weight decay and schedule, *read from its own optimizer*: the solo engine's
  optimizer (mup's MuAdamW/MuSGD under muP, torch's under SP) is built for every member and stepped
  through its schedule by `set_step_lr`, and each parameter's rate is taken from the group that
  holds it; so muP's per-parameter scaling comes from mup itself, not from a copy of its rules,
- its checkpoints and its divergence test (`RunLog`).
With `share`, budgets of one rate and seed that can share a run (`mupcheck.engine.groups.share_chains`)
take one row, that of their longest budget: a shorter budget *rides* it, observing its losses and evaluated
on it at its own checkpoints, until its last step (a constant schedule's prefix) or until its own schedule
starts (a WSD decay), where the row is copied, optimizer state and all, and the copy follows that budget's
schedule (`mupcheck.engine.shared` does the same for one run at a time).
A member leaves the batch when its budget ends or it diverges (recorded at the step a solo run would
have stopped): its rows are dropped from every stacked tensor, so it costs nothing afterwards, and it
cannot poison the others, because members share no arithmetic. Its result is handed to `on_result`
then (once the group has passed its canary), not when the group ends: in a group whose budgets span
8x, the shortest runs finish at an eighth of the group's time, and an interrupted sweep keeps them.

With a `state_root`, the group's state (rows, riders, parameters, optimizer state, logs) is saved where a budget
leaves its row, and a group trained again after a kill resumes from it (`train_fused(..., state_root=...)`).

The update (`mupcheck.engine.fused_update`) is AdamW or SGD with momentum, written out with torch's
exact formulas over one (members, N) storage tensor per optimizer group, in which every parameter is a
view; equivalence with solo runs in float64 is tested. A model that cannot be batched (data-dependent
Python control flow, a parameter without gradient, ...) raises `FusedUnsupported` at its first step,
before anything is recorded, and the sweep trains its runs one at a time instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.exc import TorchDynamoException
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from mupcheck.engine.batched import native_forward
from mupcheck.engine.canary import Canary, FusedCanaryFailed
from mupcheck.engine.compiling import compiled, mark_dynamic, members_dynamic
from mupcheck.engine.data import TokenData, eval_batches, train_batch
from mupcheck.engine.device import autocast, device_name, resolve_device
from mupcheck.engine.fused_update import (
    FlatParams,
    FusedUnsupported,
    adamw_step,
    schedule_tables,
    sgd_step,
)
from mupcheck.engine.groups import branch_step, fuse_key, group_label, share_chains
from mupcheck.engine.models import build_model, check_logits, logits_of, takes_targets, width_dims
from mupcheck.engine.runlog import RunLog
from mupcheck.engine.saved_state import read_state, remove_state, write_state
from mupcheck.engine.solo import EVAL_BATCH, Progress
from mupcheck.errors import ModelError
from mupcheck.result import FusedInfo, RunResult, SharedInfo
from mupcheck.spec import RunConfig

__all__ = ["FusedCanaryFailed", "FusedOutOfMemory", "FusedUnsupported", "train_fused"]


class FusedOutOfMemory(Exception):
    """The batched model does not fit on the device; train fewer members at once."""


OnResult = Callable[[int, RunResult], None]  # (member index in the group, its result)







def train_fused(configs: Sequence[RunConfig], data: TokenData, device: str | torch.device = "cpu",
                progress: Progress | None = None, dtype: torch.dtype = torch.float32,
                compile: bool = False, on_result: OnResult | None = None, share: bool = False,
                state_root: Path | None = None) -> list[RunResult]:
    """Train `configs` (one fusion group) together; return one `train_run`-style result per member.
    With `share`, budgets of one rate and seed share a row where exact (the module's docstring); with a
    `state_root`, the group's state is saved in a folder of its own there where a budget leaves its shared row,
    and a group trained again after a kill starts from a saved state that holds every run it still needs.

    `compile` runs the batched forward/backward and the update through `torch.compile` (slow to
    start, faster per step on a GPU). `on_result(i, result)` receives member i's result as soon as it
    leaves the batch and the canary has passed, each member once; the returned list is the same results.
    If training then fails, the members already handed over are finished runs, and only the others need
    training again.
    """
    configs = list(configs)
    keys = {fuse_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError("train_fused: the runs differ in more than learning rate, seed and token budget")
    device = resolve_device(device)
    try:
        run = _FusedRun(configs, data, device, dtype, compile, on_result, share, state_root)
        try:
            return run.train(progress)
        finally:
            # The run refers to itself (through its vmapped and compiled methods), so reference counting
            # never frees it, and the collector may not run before the next group allocates beside it.
            run.__dict__.clear()
    except torch.cuda.OutOfMemoryError as e:
        raise FusedOutOfMemory(f"{len(configs)} members do not fit on {device}: {e}") from None


class _FusedRun:
    """One fusion group in training: stacked parameters, per-member schedules and logs.

    Members leave the batch as they finish (a shorter token budget) or diverge: their rows are
    dropped from every stacked tensor, so no compute is spent on them afterwards.
    """

    def __init__(self, configs: list[RunConfig], data: TokenData, device: torch.device, dtype: torch.dtype,
                 compile: bool = False, on_result: OnResult | None = None, share: bool = False,
                 state_root: Path | None = None):
        self.configs, self.data, self.device, self.dtype = configs, data, device, dtype
        self.state_root = state_root
        self.state_dir = state_root / _digest(sorted(map(_digest, configs))) if state_root is not None else None
        self.device_label = device_name(device)  # in every member's result
        self.on_result = on_result
        self.results: dict[int, RunResult] = {}  # member -> its result, made when it was handed over
        self.canary: dict[str, Any] | None = None
        self.cfg = configs[0]  # everything but lr, seed and tokens is shared
        self.steps = max(cfg.steps for cfg in configs)
        # Row owners: every member, or with `share` the longest budget of each shared run; the others ride it.
        self.riders: dict[int, list[int]] = {m: [] for m in range(len(configs))}
        self.leaves_at: dict[int, int] = {}  # rider -> the step where it leaves its row (its end, or its decay)
        self.trunk_of: dict[int, int] = {}
        for chain in (share_chains(configs) if share else []):
            owner = configs.index(chain[-1])
            for cfg in chain[:-1]:
                rider = configs.index(cfg)
                self.riders.pop(rider)
                self.riders[owner].append(rider)
                self.leaves_at[rider] = int(branch_step(cfg, chain[-1]) or 0)
                self.trunk_of[rider] = owner
        owners = sorted(self.riders)
        models = _member_models(configs, data.vocab_size, device, dtype)
        self.template = _functional_template(models[0])
        lr, wd, group_of, self.rule = schedule_tables(models, configs, self.steps, device, dtype)
        stacked, self.buffers = stack_module_state([models[m] for m in owners])  # name -> (rows, *shape)
        self.flat, self.group_of = FlatParams(stacked, group_of), group_of
        del stacked, models
        # Every member's rates, (steps, M, G); `lr` and `wd` are the active rows' columns of them.
        self.lr_all, self.wd_all = lr[:, :, self.flat.groups], wd[:, :, self.flat.groups]
        self.lr, self.wd = self.lr_all[:, owners], self.wd_all[:, owners]
        # Optimizer state per group storage, zero like torch's before the first step (SGD's momentum
        # buffer then becomes exactly the first gradient, as in torch).
        n_states = 2 if self.rule.kind == "adamw" else 1
        self.state = [[torch.zeros_like(b) for b in self.flat.storage] for _ in range(n_states)]
        t = np.arange(1, self.steps + 1)
        b1, b2 = self.rule.betas
        self.bias_correction = torch.as_tensor(np.stack([1 - b1 ** t, np.sqrt(1 - b2 ** t)], 1),
                                               dtype=dtype, device=device)  # (steps, 2)
        self.logs = [RunLog(cfg) for cfg in configs]
        self.start = 0  # the first step this attempt trains (later than 0 when it resumes a saved state)
        # Where a budget leaves its row (it ends, or its decay starts): the state saved before such a step.
        self.save_at = set(self.leaves_at.values()) if state_root is not None else set()
        self.active = owners  # row i of every stacked tensor is member active[i] (and its riders)
        self.done: set[int] = set()  # members whose training is over (results not made yet, or made)
        self.seeds = sorted({cfg.seed for cfg in configs})
        self._index_seeds()
        self.native = native_forward(self.template)
        self.engine_name = "native" if self.native is not None else "vmap"
        self.takes_targets = takes_targets(self.template)  # nanoGPT-style forward(idx, targets=None)
        self.batched = vmap(self._member_logits, in_dims=(0, 0, 0, 0))
        self.batched_shared_input = vmap(self._member_logits, in_dims=(0, 0, None, None))
        self.train_losses, self.adamw, self.sgd = self._losses, adamw_step, sgd_step
        self.compiled = compile
        # Parameter dims that scale with width, made dynamic in the first compile: then one graph serves
        # every width a process trains. A user model (vmap) keeps mup's width multiplier as a constant
        # of its readout, so each width is compiled anyway.
        self.width_dims = width_dims(self.cfg, data.vocab_size) if compile and self.native is not None else {}
        if compile:
            # One graph for the batched forward (its backward compiled with it) and one for the
            # update: the member axis and the width are dynamic from the first call (`mark_dynamic`),
            # so neither members leaving the batch nor the next width recompile them.
            self.train_losses = compiled(self._losses)
            self.adamw, self.sgd = compiled(adamw_step), compiled(sgd_step)

    @property
    def n(self) -> int:
        return len(self.active)

    def _index_seeds(self) -> None:
        seeds = [self.seeds.index(self.configs[m].seed) for m in self.active]
        self.seed_index = torch.tensor(seeds, device=self.device)

    def _member_logits(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                       x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kwargs = {"targets": y} if self.takes_targets else {}
        logits = logits_of(functional_call(self.template, (params, buffers), (x,), kwargs), self.cfg.model)
        check_logits(logits, x, self.cfg.model)
        return logits

    # --- one step ----------------------------------------------------------------------------

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, B, T) inputs and targets: each member gets the batch of its own seed."""
        cfg = self.cfg
        pairs = [train_batch(self.data, step, seed, cfg.batch_size, cfg.seq_len) for seed in self.seeds]
        x = torch.stack([p[0] for p in pairs]).to(self.device)[self.seed_index]
        y = torch.stack([p[1] for p in pairs]).to(self.device)[self.seed_index]
        return x, y

    def _logits(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
                y: torch.Tensor, shared_input: bool) -> torch.Tensor:
        """Every member's logits (n, B, T, V) for its own inputs (n, B, T), or for shared ones (B, T); the
        targets go to a user model whose forward takes them."""
        n = next(iter(params.values())).shape[0]
        if self.native is not None:
            return self.native(params, x.expand(n, *x.shape) if shared_input else x)
        fn = self.batched_shared_input if shared_input else self.batched
        if self.device.type != "cuda":
            return fn(params, buffers, x, y)
        # vmap over CUDA's fused attention kernels trains wrong models (pytorch/pytorch#133964); the
        # math kernel is right under vmap. A user model without attention is not slowed by this.
        with sdpa_kernel(SDPBackend.MATH):
            return fn(params, buffers, x, y)

    def _losses(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
                y: torch.Tensor, shared_input: bool = False) -> torch.Tensor:
        """Mean cross-entropy of every active member, shape (n,)."""
        n = next(iter(params.values())).shape[0]
        with autocast(self.device):
            logits = self._logits(params, buffers, x, y, shared_input)  # (n, B, T, V)
        B, T = x.shape[-2:]
        if logits.ndim != 4 or logits.shape[:3] != (n, B, T):
            raise ModelError(f"model output has shape {tuple(logits.shape[1:])} per member; expected "
                             f"(B, T, V) = ({B}, {T}, vocab) for token ids of shape {(B, T)}")
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        targets = y if not shared_input else y.expand(n, *y.shape)
        per_token = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), reduction="none")
        return per_token.view(n, -1).mean(dim=1)

    def _step(self, step: int) -> None:
        x, y = self._batch(step)
        first = step == self.start
        if self.compiled and first:  # the graphs compiled now serve every later batch size and width
            members_dynamic(*self.flat.params.values(), *self.buffers.values(), x, y)
            for name, dims in self.width_dims.items():
                mark_dynamic(self.flat.params[name], [1 + d for d in dims])  # after the member axis
        try:
            losses = self.train_losses(self.flat.params, self.buffers, x, y)
            values = losses.tolist()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:
            if first:  # nothing recorded yet: the sweep can still train these runs one at a time
                raise FusedUnsupported(f"{type(e).__name__}: {e}") from e
            raise
        keep = [i for i, m in enumerate(self.active) if self._observe(m, step, values[i])]
        if not keep:
            self._leave(self.active)
            self.active = []
            return
        # Diverged members are left out of the sum (their gradient rows are zero, or NaN, and dropped).
        total = losses.sum() if len(keep) == self.n else losses[keep].sum()
        try:
            grads = torch.autograd.grad(total, self.flat.trainable, allow_unused=True)
        except Exception as e:
            if first:
                raise FusedUnsupported(f"backward: {type(e).__name__}: {e}") from e
            raise
        unused = [n for n, g in zip(self.flat.trainable_names, grads) if g is None]
        if unused:
            # torch's optimizers skip such a parameter, step counter and all; flat storage cannot.
            raise FusedUnsupported(f"parameter {unused[0]!r} received no gradient")
        with torch.no_grad():
            flat = self.flat.flat_grads(grads)
            if len(keep) < self.n:
                index = torch.tensor(keep, dtype=torch.long, device=self.device)
                flat = [g.index_select(0, index) for g in flat]
                self._keep(keep)
            self._update(step, flat)

    def _update(self, step: int, grads: list[torch.Tensor]) -> None:
        """One optimizer step for every active member over the group storage tensors."""
        lr_t, wd_t = self.lr[step], self.wd[step]  # (n, G)
        if self.compiled and step == self.start:
            members_dynamic(*self.flat.storage, *grads, *(s for states in self.state for s in states), lr_t, wd_t)
            for g, names in enumerate(self.flat.names):
                if any(self.width_dims.get(name) for name in names):  # the group's storage (M, N) grows with width
                    for t in (self.flat.storage[g], grads[g], *(states[g] for states in self.state)):
                        mark_dynamic(t, [1])
        if self.rule.kind == "adamw":
            exp_avgs, exp_avg_sqs = self.state
            self.adamw(self.flat.storage, grads, exp_avgs, exp_avg_sqs, lr_t, wd_t, self.bias_correction[step],
                       self.rule.betas, tuple(self.rule.eps[g] for g in self.flat.groups))
        else:
            (momentum,) = self.state
            self.sgd(self.flat.storage, grads, momentum, lr_t, wd_t, self.rule.momentum)

    def _keep(self, keep: list[int]) -> None:
        """Drop every member not in `keep` (rows of the stacked tensors) from the batch."""
        self._leave([m for i, m in enumerate(self.active) if i not in keep])
        if not keep:
            self.active = []
            return
        self._rows(keep, [self.active[i] for i in keep])

    def _rows(self, rows: list[int], owners: list[int]) -> None:
        """Make the stacked tensors the given rows of the current ones (a row twice: a copy), owned by `owners`."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.flat = self.flat.select(index)
        self.buffers = {name: b.index_select(0, index) for name, b in self.buffers.items()}
        self.state = [[s.index_select(0, index) for s in states] for states in self.state]
        self.active = owners
        columns = torch.tensor(owners, dtype=torch.long, device=self.device)
        self.lr, self.wd = self.lr_all.index_select(1, columns), self.wd_all.index_select(1, columns)
        self._index_seeds()

    def _observe(self, owner: int, step: int, value: float) -> bool:
        """A row's loss, observed by its owner and every budget riding it; False if they diverge (together: they
        observe the same losses)."""
        return all([self.logs[m].observe(step, value) for m in [owner, *self.riders.get(owner, ())]])

    def _leave(self, owners: list[int]) -> None:
        """These rows' members, and their riders, are done training (their budget ended, or they diverged)."""
        for m in owners:
            self.done.add(m)
            self.done.update(self.riders.get(m, ()))
            self.riders[m] = []

    def _branch(self, step: int) -> None:
        """Copy the row of each rider whose own schedule starts at `step` (a WSD decay) for that rider."""
        leaving = [(i, r) for i, m in enumerate(self.active) for r in self.riders.get(m, ())
                   if self.leaves_at[r] == step and self.leaves_at[r] < self.configs[r].steps]
        if not leaving:
            return
        for _, r in leaving:
            self.riders[self.trunk_of[r]].remove(r)
            self.riders[r] = []
        self._rows(list(range(self.n)) + [i for i, _ in leaving], self.active + [r for _, r in leaving])

    # --- evaluation and the loop -------------------------------------------------------------

    def _evaluate(self, batches: list, rows: list[int]) -> list[float]:
        """Validation loss of the active members at `rows` (rows of the stacked tensors)."""
        params, buffers = self.flat.params, self.buffers
        if len(rows) < self.n:
            index = torch.tensor(rows, dtype=torch.long, device=self.device)
            params = {name: t.detach().index_select(0, index) for name, t in params.items()}
            buffers = {name: b.index_select(0, index) for name, b in buffers.items()}
        self.template.eval()
        totals = [0.0] * len(rows)
        count = 0
        with torch.no_grad():
            for x, y in batches:
                x, y = x.to(self.device), y.to(self.device)
                losses = self._losses(params, buffers, x, y, shared_input=True).tolist()
                for i, value in enumerate(losses):
                    totals[i] += value * y.numel()
                count += y.numel()
        self.template.train()
        return [t / count for t in totals]

    def train(self, progress: Progress | None) -> list[RunResult]:
        cfg = self.cfg
        evals = eval_batches(self.data, cfg.eval_tokens, cfg.seq_len, EVAL_BATCH)
        self.group_time = 0.0
        self.first_step_s: float | None = None
        t0 = time.perf_counter()
        canary = Canary.measure(self.configs, self.data, self.device, self.dtype)
        canary_time = time.perf_counter() - t0
        with warnings.catch_warnings():
            if self.device.type == "cpu":
                # CPU attention has no batching rule: vmap loops over members there (correct, slower:
                # CPU is for equivalence, not speed) and would say so every step. On a GPU it is shown.
                warnings.filterwarnings("ignore", message=".*batching rule.*")
            self.start = self._resume()
            if self.start >= canary.steps:  # the resumed logs hold the steps the canary compares
                self.canary = {**canary.check(self.logs[canary.member].losses[:canary.steps], self.engine_name),
                               "solo_seconds": canary_time}
            for step in range(self.start, self.steps):
                t_step = time.perf_counter()
                if step in self.save_at and step > self.start:
                    self._save(step)
                self._branch(step)
                self._train_step(step)
                if step == self.start:
                    self.first_step_s = time.perf_counter() - t_step
                if self.canary is None and (step + 1 == canary.steps or not self.active):
                    # Also when every member stopped early: a batched NaN at step 1 must not pass unseen.
                    self.canary = {**canary.check(self.logs[canary.member].losses, self.engine_name),
                                   "solo_seconds": canary_time}
                if not self.active:
                    break
                rows = [i for i, m in enumerate(self.active)
                        if any(self.logs[r].is_checkpoint(step) for r in self._row_members(m))]
                if rows:
                    due = [r for i in rows for r in self._row_members(self.active[i])
                           if self.logs[r].is_checkpoint(step)]
                    self._timed("eval_time", due, self._checkpoint, step, rows, evals)
                for m in self.active:  # budgets that end here while riding a longer one (a constant schedule)
                    ended = [r for r in self.riders.get(m, ()) if step + 1 == self.configs[r].steps]
                    self.riders[m] = [r for r in self.riders.get(m, ()) if r not in ended]
                    self.done.update(ended)
                finished = [i for i, m in enumerate(self.active) if step + 1 == self.configs[m].steps]
                if finished:
                    self._keep([i for i in range(self.n) if i not in finished])
                    if not self.active:
                        break
                self._hand_over()
                if progress is not None:
                    progress(step + 1, self.steps)
        if self.state_dir is not None:
            remove_state(self.state_dir, parents=2)  # and the folders of every group's state, once none is left
        return self._results()

    # --- the group's state, saved where a budget leaves its row ------------------------------------

    def _save(self, step: int) -> None:
        """The group's state before `step`, by config (a later attempt holds fewer members, in another order):
        rows and what rides them, parameters, buffers, optimizer state, and the logs of every member not done."""
        assert self.state_dir is not None
        write_state(self.state_dir, step, {
            "owners": [self.configs[m] for m in self.active],
            "riders": {self.configs[m]: [self.configs[r] for r in self.riders.get(m, ())] for m in self.active},
            "params": {n: t.detach() for n, t in self.flat.params.items()}, "buffers": self.buffers,
            "state": self.state,
            "logs": {self.configs[r]: {k: v for k, v in vars(self.logs[r]).items() if k != "cfg"}
                     for m in self.active for r in self._row_members(m)}})
        covered = sorted(_digest(self.configs[r]) for m in self.active for r in self._row_members(m))
        (self.state_dir / "covers.json").write_text(json.dumps(covered))

    def _resume(self) -> int:
        """The step to start from: that of the saved state when every member of this group was in it (riding,
        or owning a row); else 0, from scratch."""
        if self.state_root is None:
            return 0
        mine = {_digest(cfg) for cfg in self.configs}
        for covers in sorted(self.state_root.glob("*/covers.json")):
            with contextlib.suppress(OSError, ValueError):
                if mine <= set(json.loads(covers.read_text())) and any(covers.parent.glob("step-*.pt")):
                    self.state_dir = covers.parent  # it goes on saving where it resumed from
                    break
        assert self.state_dir is not None
        found = read_state(self.state_dir, self.device, "the batched group")
        if found is None:
            return 0
        path, state = found
        index = {cfg: m for m, cfg in enumerate(self.configs)}
        owners, riding = state.get("owners", []), state.get("riders", {})
        rows = [i for i, cfg in enumerate(owners) if cfg in index]
        riders = {index[owners[i]]: [index[c] for c in riding.get(owners[i], ()) if c in index] for i in rows}
        covered = set(riders) | {r for rs in riders.values() for r in rs}
        orphans = [c for i, cfg in enumerate(owners) if i not in rows for c in riding.get(cfg, ()) if c in index]
        if covered != set(range(len(self.configs))) or orphans:
            return 0
        keep = torch.tensor(rows, dtype=torch.long, device=self.device)
        stacked = {n: t.index_select(0, keep).requires_grad_(t.requires_grad or n in self.flat.trainable_names)
                   for n, t in state["params"].items()}
        self.flat = FlatParams(stacked, self.group_of)
        self.buffers = {n: b.index_select(0, keep) for n, b in state["buffers"].items()}
        self.state = [[t.index_select(0, keep) for t in states] for states in state["state"]]
        self.active = [index[state["owners"][i]] for i in rows]
        self.riders = riders
        columns = torch.tensor(self.active, dtype=torch.long, device=self.device)
        self.lr, self.wd = self.lr_all.index_select(1, columns), self.wd_all.index_select(1, columns)
        self._index_seeds()
        for cfg, values in state["logs"].items():
            if cfg in index:
                for k, v in values.items():
                    setattr(self.logs[index[cfg]], k, v)
        step = int(state["step"])
        print(f"mupcheck: {group_label(self.configs)}: resuming the batched group at step {step} ({path})",
              file=sys.stderr)
        return step

    def _row_members(self, owner: int) -> list[int]:
        return [owner, *self.riders.get(owner, ())]

    def _train_step(self, step: int) -> None:
        try:
            self._timed("train_time", [r for m in self.active for r in self._row_members(m)], self._step, step)
        except TorchDynamoException as e:
            # A compile can also fail after the first step: dynamo recompiles for a batch of one member,
            # or for each new batch size of a user model. The members handed over are finished runs;
            # the sweep trains the others again without torch.compile instead of losing them.
            raise FusedUnsupported(f"torch.compile failed at step {step + 1}: {type(e).__name__}: {e}") from e

    def _checkpoint(self, step: int, rows: list[int], evals: list) -> None:
        # Only the members whose own checkpoint this is are evaluated: in a group with four token
        # budgets, evaluating every active member at every member's checkpoint would nearly double
        # the evaluations (224 instead of 128 in the gpu_reference grid's groups).
        for i, value in zip(rows, self._evaluate(evals, rows)):
            for m in self._row_members(self.active[i]):
                if self.logs[m].is_checkpoint(step):
                    self.logs[m].checkpoint(step, value)

    def _timed(self, field: str, members: list[int], fn: Any, *args: Any) -> None:
        """Run fn; charge its time to `members` (taken before fn runs), in equal shares."""
        members = list(members)
        t0 = time.perf_counter()
        fn(*args)
        elapsed = time.perf_counter() - t0
        self.group_time += elapsed
        for m in members:
            setattr(self.logs[m], field, getattr(self.logs[m], field) + elapsed / len(members))

    def _hand_over(self) -> None:
        """Hand the result of each member that has left the batch to `on_result`, once the canary has
        passed: before that, a member's losses may come from a wrong batched step."""
        if self.on_result is None or self.canary is None:
            return
        for m in sorted(self.done - set(self.results)):
            self._result(m)

    def _result(self, m: int) -> RunResult:
        """Member m's result, made once, with the group's time and speed so far; handed to `on_result`."""
        if m not in self.results:
            trained_tokens = sum(len(log.losses) * log.cfg.tokens_per_step for log in self.logs)
            info = FusedInfo(members=len(self.logs), compiled=self.compiled, group_wall_time_s=self.group_time,
                             group_tokens_per_s=trained_tokens / self.group_time if self.group_time > 0 else None,
                             batched=self.engine_name, canary=self.canary, first_step_s=self.first_step_s)
            result = dataclasses.replace(self.logs[m].result(self.data, self.device_label), engine="fused", fused=info,
                                         shared=self._shared_info(m))
            self.results[m] = result
            if self.on_result is not None:
                self.on_result(m, result)
        return self.results[m]

    def _shared_info(self, m: int) -> SharedInfo | None:
        trunk = self.trunk_of.get(m)
        if trunk is None:
            chain = [r for r, t in self.trunk_of.items() if t == m]
            return SharedInfo("trunk", self.configs[m].tokens, self.configs[m].steps, len(chain) + 1) if chain else None
        budgets = 1 + sum(t == trunk for t in self.trunk_of.values())
        kind = "prefix" if self.leaves_at[m] == self.configs[m].steps else "branch"
        return SharedInfo(kind, self.configs[trunk].tokens, self.leaves_at[m], budgets)

    def _results(self) -> list[RunResult]:
        return [self._result(m) for m in range(len(self.logs))]


def _digest(value: object) -> str:
    """A short stable name of a run config (its repr: a frozen dataclass's fields), or of a list of them."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


# --- building ------------------------------------------------------------------------------------

def _member_models(configs: list[RunConfig], vocab_size: int, device: torch.device,
                   dtype: torch.dtype) -> list[nn.Module]:
    """Each member's model, built from its own seed exactly as a solo run; members that share a seed
    share one model object (stacking copies it)."""
    by_seed: dict[int, nn.Module] = {}
    for cfg in configs:
        if cfg.seed not in by_seed:
            by_seed[cfg.seed] = build_model(cfg, vocab_size).to(device=device, dtype=dtype)
    return [by_seed[cfg.seed] for cfg in configs]


def _functional_template(model: nn.Module) -> nn.Module:
    """The module `functional_call` runs with the stacked tensors.

    mup's readout divides by `weight.infshape.width_mult()`; under functional_call its weight is a
    plain batched tensor without `infshape`, so the multiplier is read now and fixed on the module.
    """
    for module in model.modules():
        width_mult = getattr(module, "width_mult", None)
        if callable(width_mult) and hasattr(getattr(module, "weight", None), "infshape"):
            multiplier = width_mult()
            setattr(module, "width_mult", lambda multiplier=multiplier: multiplier)  # noqa: B010
    return model
