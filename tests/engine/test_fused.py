"""Fused training: every member of a batched group trains exactly as its solo run would.

Compared in float64 on CPU, step by step: each step's training loss (captured from `RunLog`), the
divergence step, and every checkpoint. Speed is measured by benchmarks/fused_speed.py, not here.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref

import pytest
import torch
from helpers import two_budget_grid, write_grid
from torch._dynamo.exc import InternalTorchDynamoError
from torch._dynamo.utils import counters

from mupcheck.engine import batched, fused, solo
from mupcheck.engine.canary import CANARY_FLOOR, CANARY_STEPS
from mupcheck.engine.data import load_data
from mupcheck.engine.device import pin_device, select_gpu
from mupcheck.engine.fused import (
    FusedCanaryFailed,
    FusedOutOfMemory,
    FusedUnsupported,
    train_fused,
)
from mupcheck.engine.groups import fusion_groups
from mupcheck.engine.solo import train_run
from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid, run_configs
from mupcheck.store import Store
from mupcheck.sweep import local, trainer
from mupcheck.sweep.local import fuse_size, run_grid

STEPS = 20
TOL = 1e-9  # float64: solo and fused differ only in the order of a few reductions


@pytest.fixture
def base(tmp_path):
    # Cosine schedule with a 20% warmup, 20 steps of batch 4 x seq 32.
    cfg = run_configs(load_grid(write_grid(tmp_path, extra="warmup = 0.2\n")))[0]
    return dataclasses.replace(cfg, tokens=STEPS * cfg.tokens_per_step, width=32)



def _compare(group, data, step_losses, compile=False, engine=None):
    fused_results = train_fused(group, data, dtype=torch.float64, compile=compile)
    fused_losses = dict(step_losses)
    step_losses.clear()
    solo_results = [train_run(cfg, data, dtype=torch.float64) for cfg in group]
    assert set(fused_losses) == set(step_losses)  # same steps observed for every member
    for key, value in step_losses.items():
        assert fused_losses[key] == pytest.approx(value, rel=TOL), key
    for cfg, f, s in zip(group, fused_results, solo_results):
        for field in ("status", "diverged_step", "steps_trained"):
            assert getattr(f, field) == getattr(s, field), (cfg.label(), field)
        assert f.initial_loss == pytest.approx(s.initial_loss, rel=TOL)
        assert len(f.checkpoints) == len(s.checkpoints)
        for a, b in zip(f.checkpoints, s.checkpoints):
            assert a.step == b.step
            assert a.val_loss == pytest.approx(b.val_loss, rel=TOL)
            assert a.train_loss == pytest.approx(b.train_loss, rel=TOL)
        assert f.engine == "fused" and f.fused.members == len(group)
        assert f.fused.compiled == compile and f.fused.first_step_s > 0
        assert f.fused.batched == engine or (engine is None and f.fused.batched == (
            "native" if cfg.model in ("gpt", "mlp") else "vmap"))
        assert f.fused.canary["max_rel_diff"] <= TOL and f.fused.canary["tolerance"] == CANARY_FLOOR
    return fused_results


# Learning rates chosen (measured) so that each group has members that train well and one that
# diverges (SGD: one mid-run as well). Not at the edge of stability: there Adam is chaotic, and
# two *solo* runs of SP at lr 2^-1 that differ only in thread count differ by 4e-3 after 20 steps.
@pytest.mark.parametrize("parametrization,optimizer,lrs", [
    ("mup", "adamw", [-8, -5, -3, 3]),
    ("sp", "adamw", [-8, -5, -3, 3]),
    ("mup", "sgd", [-4, -2, 0, 8]),
    ("sp", "sgd", [-4, -2, 0, 8]),
])
def test_fused_members_match_solo_runs(base, step_losses, parametrization, optimizer, lrs):
    group = [dataclasses.replace(base, parametrization=parametrization, optimizer=optimizer, lr_log2=lr, seed=seed)
             for lr in lrs for seed in (0, 1)]
    results = _compare(group, load_data("synthetic"), step_losses)
    statuses = [r.status for r in results]
    assert "ok" in statuses and "diverged" in statuses


def test_a_member_diverging_mid_run_leaves_the_others_untouched(base, step_losses):
    group = [dataclasses.replace(base, optimizer="sgd", lr_log2=lr) for lr in (-4, 0)]
    results = _compare(group, load_data("synthetic"), step_losses)
    assert results[0].status == "ok"
    assert results[1].status == "diverged" and 1 < results[1].diverged_step < STEPS - 1


@pytest.mark.parametrize("extra", [
    dict(weight_decay_mode="timescale", tau_frac=0.5),  # weight decay differs per member
    dict(weight_decay_mode="independent", weight_decay=0.05),
    dict(weight_decay=0.1, schedule="wsd", warmup=0.0),
    dict(model="mlp", schedule="linear"),
    # CompleteP's depth rule: scaled residual branches, and the hidden blocks' own rate and epsilon
    dict(depth=4, base_depth=2, depth_alpha=0.5),
    dict(model="mlp", depth=4, base_depth=2, depth_alpha=1.0, mlp_residual=True),
    # the swept keys (issue 27): the readout's multiplier under both arms, init scale, Adam's beta2 and eps
    dict(output_mult=4.0),
    dict(parametrization="sp", output_mult=0.25, model="mlp"),
    dict(init_std_mult=0.5, adam_beta2=0.999, adam_eps=1e-6),
])
def test_fused_matches_solo_with_weight_decay_schedules_and_mlp(base, step_losses, extra):
    cfg = dataclasses.replace(base, **extra)
    group = [dataclasses.replace(cfg, lr_log2=lr) for lr in (-9, -6, -4)]
    _compare(group, load_data("synthetic"), step_losses)


@pytest.mark.skipif(torch.__version__ < "2.13", reason="inductor's CPU backward of causal attention fails in "
                    "float64 (pytorch/pytorch#185539): seen in torch 2.11, passes in 2.13")
def test_compiled_fused_members_match_solo_runs(base, step_losses):
    # torch.compile (inductor's C++ backend on CPU) takes ~20 s here: one group covers it, with a
    # member diverging and one leaving at the end of its budget: the batch shrinks from 4 to 2
    # members without a recompile (a batch of 1 would get its own graph: dynamo specializes size 1).
    group = [dataclasses.replace(base, lr_log2=lr) for lr in (-8, -6, -5, 3)]
    group[1] = dataclasses.replace(group[1], tokens=group[1].tokens // 2)
    torch._dynamo.reset()
    counters.clear()
    results = _compare(group, load_data("synthetic"), step_losses, compile=True)
    assert [r.status for r in results] == ["ok", "ok", "ok", "diverged"]
    assert [r.steps_trained for r in results] == [STEPS, STEPS // 2, STEPS, results[3].diverged_step]
    assert counters["stats"]["unique_graphs"] == 2  # the forward/backward and the update, once each


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_later_widths_reuse_the_compiled_graphs(base, monkeypatch, parametrization):
    """A process compiles each function once across widths: the width dims are dynamic from the first
    compile, and muP's width multiplier is read off the activations' shape, not guarded as a constant.
    Before, the second width recompiled with dynamic sizes; and with duck sizing, parameter views whose
    storage offsets happened to be equal at one width (8192 here) recompiled the forward at every width.
    Dynamo's guards are the same with its eager backend, which skips inductor's ~20 s per graph."""
    real = torch.compile
    monkeypatch.setattr(fused.torch, "compile", lambda fn: real(fn, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    data = load_data("synthetic")
    for width in (16, 32, 64):
        group = [dataclasses.replace(base, width=width, lr_log2=lr, tokens=2 * base.tokens_per_step,
                                     parametrization=parametrization) for lr in (-8, -7, -6)]
        assert all(r.status == "ok" for r in train_fused(group, data, compile=True))
    assert counters["stats"]["unique_graphs"] == 2  # the forward/backward and the update, once each


def test_fusion_groups_share_everything_but_lr_seed_and_tokens(tiny_grid):
    grid = dataclasses.replace(load_grid(tiny_grid), seeds=(0, 1), tokens=(1024, 2048))
    configs = run_configs(grid)  # 2 par x 2 widths x 2 tokens x 2 lr x 2 seeds
    groups = fusion_groups(configs, max_members=32)
    assert len(groups) == 4 and all(len(g) == 8 for g in groups)
    for g in groups:
        assert len({(c.parametrization, c.width) for c in g}) == 1
    assert sorted(map(len, fusion_groups(configs, max_members=3))) == [2, 2, 2, 2] + [3] * 8
    assert fusion_groups(configs, max_members=1) == [[c] for c in configs]
    with pytest.raises(ValueError, match="more than learning rate, seed and token budget"):
        train_fused([configs[0], configs[-1]], load_data("synthetic"))


def test_members_with_different_token_budgets_match_solo_runs(base, step_losses, monkeypatch):
    # Members leave the batch as they finish (10, 15, 20 steps) or diverge (mid-run, SGD at 2^0).
    group = [dataclasses.replace(base, optimizer="sgd", lr_log2=lr, tokens=steps * base.tokens_per_step, seed=seed)
             for lr, steps, seed in [(-4, 10, 0), (-2, 15, 1), (-4, 20, 1), (0, 20, 0), (-2, 20, 0)]]
    evaluated = []
    real_evaluate = fused._FusedRun._evaluate
    monkeypatch.setattr(fused._FusedRun, "_evaluate",
                        lambda run, batches, rows: evaluated.append(len(rows)) or real_evaluate(run, batches, rows))
    results = _compare(group, load_data("synthetic"), step_losses)
    assert [r.steps_trained for r in results] == [10, 15, 20, results[3].diverged_step, 20]
    assert results[3].status == "diverged" and 1 < results[3].diverged_step < 19
    assert [len(r.checkpoints) for r in results if r.status == "ok"] == [4, 4, 4, 4]
    # A member is evaluated only at its own checkpoints, not at every other member's.
    assert sum(evaluated) == sum(len(r.checkpoints) for r in results) < len(evaluated) * len(group)
    # Each member is charged its share of the steps it was in the batch; the shares add up.
    group_time = results[0].fused.group_wall_time_s
    assert sum(r.wall_time_s for r in results) == pytest.approx(group_time)
    assert results[0].wall_time_s < results[4].wall_time_s


def test_members_are_handed_over_as_they_leave_the_batch(base):
    """A member's result goes to `on_result` when it leaves, not at the group's end (an interrupted sweep
    keeps it), but never before the canary passed; each member once, the same result as returned."""
    group = [dataclasses.replace(base, lr_log2=lr, tokens=steps * base.tokens_per_step)
             for lr, steps in [(-5, 4), (-6, 10), (-8, 20)]]  # the canary trains the 2^-8 member 8 steps
    seen = [0]
    handed = []
    results = train_fused(group, load_data("synthetic"), progress=lambda step, steps: seen.append(step),
                          on_result=lambda i, result: handed.append((i, seen[-1], result)))
    assert sorted(i for i, _, _ in handed) == [0, 1, 2]
    assert all(result is results[i] for i, _, result in handed)
    # Steps done when each was handed over: the 4-step member waited for the canary (8 steps); the
    # 10-step member went at once; the last at the end of the group.
    assert {i: step for i, step, _ in handed} == {0: CANARY_STEPS - 1, 1: 9, 2: 19}
    assert all(r.fused.canary is not None for r in results)
    # Each result carries the group's time so far; the shares of the members add up to the group's.
    times = [r.fused.group_wall_time_s for r in results]
    assert times[0] < times[1] < times[2] == pytest.approx(sum(r.wall_time_s for r in results))


def test_fuse_size_defaults_to_cuda_only(tiny_grid):
    grid = load_grid(tiny_grid)
    assert fuse_size(grid, torch.device("cpu")) == 1
    assert fuse_size(grid, torch.device("cuda")) == local.AUTO_FUSE_CUDA
    assert fuse_size(grid, torch.device("cpu"), override=8) == 8
    assert fuse_size(dataclasses.replace(grid, fuse=4), torch.device("cuda")) == 4


def test_sweep_stores_fused_runs_under_the_solo_keys(tiny_grid, tmp_path):
    grid = load_grid(tiny_grid)
    store = Store(tmp_path / "store")
    summary = run_grid(grid, store, fuse=8, show_progress=False)
    assert summary.trained == 8
    plan = plan_grid(grid)
    records = [store.load(plan.key(cfg)) for cfg in plan.configs]
    assert all(r is not None and r.result.engine == "fused" for r in records)
    assert {r.result.fused.members for r in records} == {2}  # 2 lrs per (parametrization, width)
    again = run_grid(grid, store, fuse=1, show_progress=False)  # a solo sweep finds them all
    assert again.trained == 0 and again.reused == 8


# A model with data-dependent Python control flow (`.item()`) cannot run under vmap.
UNBATCHABLE = """
    from torch import nn
    from mup import MuReadout

    class Checked(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.embed = nn.Embedding(256, width)
            self.readout = MuReadout(width, 256, bias=False)

        def forward(self, idx):
            if idx.max().item() >= 256:
                raise ValueError("token id out of range")
            return self.readout(self.embed(idx))

    def build(width):
        return Checked(width)
"""


def test_unbatchable_user_model_falls_back_to_solo_runs(tmp_path, user_module, capsys):
    user_module("checked_model", UNBATCHABLE)
    grid = load_grid(write_grid(tmp_path, model="checked_model:build"))
    store = Store(tmp_path / "store")
    summary = run_grid(grid, store, fuse=8, show_progress=False)
    assert summary.trained == 4  # the muP arm: 2 widths x 2 rates
    assert "cannot be trained as a batched model" in capsys.readouterr().err
    plan = plan_grid(grid)
    assert {store.load(plan.key(c)).result.engine for c in plan.configs} == {"solo"}


def test_a_group_that_does_not_fit_is_split(tiny_grid, tmp_path, monkeypatch, capsys):
    real = fused.train_fused
    sizes = []

    def small_device(configs, *args, **kwargs):
        sizes.append(len(configs))
        if len(configs) > 2:
            raise FusedOutOfMemory(f"{len(configs)} members do not fit")
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_fused", small_device)
    grid = dataclasses.replace(load_grid(tiny_grid), lr_log2=(-9.0, -8.0, -7.0, -6.0, -5.0), parametrization=("mup",),
                               widths=(16,))
    summary = run_grid(grid, Store(tmp_path / "store"), fuse=8, show_progress=False)
    assert summary.trained == 5
    assert sizes == [5, 2, 3, 2]  # 5 -> 2 + 3 -> 2 + (1 alone + 2)
    assert "splitting into groups of 2 and 3" in capsys.readouterr().err


def test_a_group_out_of_memory_is_freed_before_its_halves_train(tiny_grid, tmp_path, monkeypatch):
    """The halves need the memory the failed group held: nothing may keep it alive (the exception's
    traceback holds the failed attempt's frames, and through them every stacked tensor)."""
    runs, alive_at_halves = [], []
    real_init, real_step = fused._FusedRun.__init__, fused._FusedRun._step

    def init(self, configs, *args, **kwargs):
        gc.collect()
        alive_at_halves.extend(r() is not None for r in runs)
        runs.append(weakref.ref(self))
        real_init(self, configs, *args, **kwargs)

    def step(self, step):
        if self.n > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB")
        real_step(self, step)

    monkeypatch.setattr(fused._FusedRun, "__init__", init)
    monkeypatch.setattr(fused._FusedRun, "_step", step)
    grid = dataclasses.replace(load_grid(tiny_grid), lr_log2=(-9.0, -8.0, -7.0, -6.0), parametrization=("mup",),
                               widths=(16,))
    assert run_grid(grid, Store(tmp_path / "store"), fuse=8, show_progress=False).trained == 4
    assert len(runs) == 3 and alive_at_halves == [False, False, False]  # 4 -> 2 + 2


def test_a_groups_tensors_are_freed_when_it_ends(tiny_grid, tmp_path, monkeypatch):
    """Before the next group allocates, and without waiting for the garbage collector."""
    storage, alive_at_next = [], []
    real_init = fused._FusedRun.__init__

    def init(self, *args, **kwargs):
        alive_at_next.extend(t() is not None for t in storage)
        real_init(self, *args, **kwargs)
        storage.extend(weakref.ref(t) for t in (*self.flat.storage, *self.state[0]))

    monkeypatch.setattr(fused._FusedRun, "__init__", init)
    gc.disable()
    try:
        run_grid(load_grid(tiny_grid), Store(tmp_path / "store"), fuse=8, show_progress=False)  # 4 groups of 2
    finally:
        gc.enable()
    assert alive_at_next and not any(alive_at_next)


def test_workers_are_pinned_one_per_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [pin_device(torch.device("cuda"), w) for w in range(5)] == [
        torch.device("cuda", i) for i in (0, 1, 2, 3, 0)]
    assert pin_device(torch.device("cuda:2"), 1) == torch.device("cuda:2")  # explicit choice is kept
    assert pin_device(torch.device("cpu"), 3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pin_device(torch.device("cuda"), 3) == torch.device("cuda")


def test_only_a_pinned_gpu_is_selected(monkeypatch):
    selected = []
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    for device in ("cpu", "cuda", "cuda:1"):
        select_gpu(torch.device(device))
    assert selected == [torch.device("cuda:1")]  # torch.cuda.set_device("cuda") would raise


def test_vmap_path_matches_solo_runs(base, step_losses, monkeypatch):
    """User models train through vmap(functional_call); the built-in GPT through it must match too."""
    monkeypatch.setattr(fused, "native_forward", lambda template: None)
    group = [dataclasses.replace(base, lr_log2=lr) for lr in (-8, -5, -6)]
    group[2] = dataclasses.replace(group[2], tokens=group[2].tokens // 2)  # checkpoints of its own
    _compare(group, load_data("synthetic"), step_losses, engine="vmap")


def test_unsupported_is_raised_before_anything_is_recorded(base, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("no batching rule for this op")

    monkeypatch.setattr(fused, "native_forward", lambda template: None)  # a user model: vmap
    monkeypatch.setattr(fused._FusedRun, "_member_logits", broken)
    with pytest.raises(FusedUnsupported, match="no batching rule"):
        train_fused([base, dataclasses.replace(base, lr_log2=-6)], load_data("synthetic"))


def test_cli_fuse_option(tiny_grid, tmp_path, capsys):
    from mupcheck.outputs.cli import main

    assert main(["run", str(tiny_grid), "--fuse", "0", "--store", str(tmp_path / "s")]) == 2
    assert "--fuse must be >= 1" in capsys.readouterr().err
    assert main(["run", str(tiny_grid), "--fuse", "2", "--store", str(tmp_path / "s"), "--no-progress"]) == 0
    assert "8 trained" in capsys.readouterr().out
    records = list((tmp_path / "s" / "runs").glob("*.json"))
    assert len(records) == 8 and all('"engine": "fused"' in r.read_text() for r in records)


def test_grid_fuse_and_compile_keys_are_validated(tmp_path):
    from mupcheck.errors import GridError

    grid = load_grid(write_grid(tmp_path, extra="fuse = 8\ncompile = true\n"))
    assert (grid.fuse, grid.compile) == (8, True)
    with pytest.raises(GridError, match="fuse"):
        load_grid(write_grid(tmp_path, name="bad.toml", extra="fuse = -1\n"))
    with pytest.raises(GridError, match="compile"):
        load_grid(write_grid(tmp_path, name="bad2.toml", extra='compile = "yes"\n'))


def test_mixed_precision_path_as_on_cuda(base, monkeypatch):
    """On CUDA both engines run the forward under bf16 autocast; CPU autocast exercises the same
    dtype plumbing (bf16 logits scored in float32, float32 parameters and optimizer state)."""
    def bf16(device):
        return torch.autocast("cpu", dtype=torch.bfloat16)

    monkeypatch.setattr(solo, "autocast", bf16)
    monkeypatch.setattr(fused, "autocast", bf16)
    group = [dataclasses.replace(base, lr_log2=lr) for lr in (-8, -5)]
    data = load_data("synthetic")
    for cfg, f in zip(group, train_fused(group, data)):
        s = train_run(cfg, data)
        assert f.status == s.status == "ok"
        assert f.loss == pytest.approx(s.loss, rel=1e-3)  # bf16 rounding (4e-5 measured), not another run


def test_compile_failure_falls_back_to_eager_fused(tiny_grid, tmp_path, monkeypatch, capsys):
    real = fused.train_fused
    calls = []

    def compile_breaks(configs, *args, compile=False, **kwargs):
        calls.append(compile)
        if compile:
            raise FusedUnsupported("dynamo: unsupported op")
        return real(configs, *args, compile=compile, **kwargs)

    monkeypatch.setattr(trainer, "train_fused", compile_breaks)
    grid = load_grid(tiny_grid)
    store = Store(tmp_path / "store")
    assert run_grid(grid, store, fuse=8, compile=True, show_progress=False).trained == 8
    assert calls[:2] == [True, False] and not any(calls[1:])  # compile given up once, for the whole sweep
    assert "torch.compile of the batched model failed" in capsys.readouterr().err
    plan = plan_grid(grid)
    assert {store.load(plan.key(c)).result.engine for c in plan.configs} == {"fused"}


def test_a_compile_failing_mid_group_retrains_the_group_without_compile(tiny_grid, tmp_path, monkeypatch, capsys):
    """Dynamo can recompile after the first step (a batch of one member, a user model's new batch size);
    if that compile fails, the group is trained again eagerly, and every run is still stored."""
    monkeypatch.setattr(fused.torch, "compile", _failing_compile(at_call=3))
    grid = load_grid(tiny_grid)
    store = Store(tmp_path / "store")
    assert run_grid(grid, store, fuse=8, compile=True, show_progress=False).trained == 8
    err = capsys.readouterr().err
    assert "torch.compile of the batched model failed (torch.compile failed at step 3: InternalTorchDynamoError" in err
    plan = plan_grid(grid)
    records = [store.load(plan.key(c)).result for c in plan.configs]
    assert {r.engine for r in records} == {"fused"} and not any(r.fused.compiled for r in records)


def _failing_compile(at_call):
    """A torch.compile whose compiled functions each fail at their `at_call`-th call (a recompile)."""
    def compile(fn):
        calls = 0

        def compiled(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == at_call:
                raise InternalTorchDynamoError("recompile for a batch of 1 failed")
            return fn(*args, **kwargs)
        return compiled
    return compile


def test_a_compile_failing_late_keeps_the_runs_that_had_finished(tmp_path, monkeypatch, capsys):
    """Runs that left the batch before the failure are stored; only the others are trained again."""
    monkeypatch.setattr(fused.torch, "compile", _failing_compile(at_call=20))
    grid = load_grid(two_budget_grid(tmp_path, "[-8, -6]"))  # a group per width: 16 and 32 steps, 2 rates
    store = Store(tmp_path / "store")
    assert run_grid(grid, store, fuse=8, compile=True, show_progress=False).trained == 8
    assert "2 of the group's 4 runs had finished and are kept" in capsys.readouterr().err
    plan = plan_grid(grid)
    records = [store.load(plan.key(c)).result for c in plan.configs]
    kept = [r for r in records if r.fused.compiled]
    assert len(kept) == 2 and {r.steps for r in kept} == {16}  # the first group's short runs, compiled


def test_an_interrupted_group_keeps_the_runs_that_had_finished(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a batched group: its runs that had left the batch are stored, and the
    next sweep trains only the others."""
    real = trainer.GroupRunner._progress

    def interrupt_at_step_20(self, step, steps):
        if step == 20:
            raise KeyboardInterrupt
        real(self, step, steps)

    monkeypatch.setattr(trainer.GroupRunner, "_progress", interrupt_at_step_20)
    grid = load_grid(two_budget_grid(tmp_path, "[-8, -6]"))
    store = Store(tmp_path / "store")
    first = run_grid(grid, store, fuse=8, show_progress=False)
    assert first.interrupted and first.trained == 2
    assert {r.result.steps for r in store.records()} == {16}
    monkeypatch.setattr(trainer.GroupRunner, "_progress", real)
    second = run_grid(grid, store, fuse=8, show_progress=False)
    assert (second.trained, second.reused) == (6, 2)


FROZEN = """
    from torch import nn
    from mup import MuReadout

    class Frozen(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.embed = nn.Embedding(256, width)
            self.embed.weight.requires_grad_(False)  # a frozen table: no gradient, never updated
            self.hidden = nn.Linear(width, width, bias=False)
            self.readout = MuReadout(width, 256, bias=False)

        def forward(self, idx):
            return self.readout(self.hidden(self.embed(idx)).relu())

    def build(width):
        return Frozen(width)
"""


def test_user_model_with_frozen_parameters(base, step_losses, user_module):
    user_module("frozen_model", FROZEN)
    cfg = dataclasses.replace(base, model="frozen_model:build")
    _compare([dataclasses.replace(cfg, lr_log2=lr) for lr in (-8, -5)], load_data("synthetic"), step_losses)


UNUSED = """
    from torch import nn
    from mup import MuReadout

    class Spare(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.embed = nn.Embedding(256, width)
            self.spare = nn.Linear(width, width, bias=False)  # never used in forward
            self.readout = MuReadout(width, 256, bias=False)

        def forward(self, idx):
            return self.readout(self.embed(idx))

    def build(width):
        return Spare(width)
"""


def test_a_parameter_without_gradient_is_left_to_solo_runs(base, user_module):
    # torch's optimizers skip such a parameter (no decay, no step count); the flat update cannot.
    user_module("spare_model", UNUSED)
    cfg = dataclasses.replace(base, model="spare_model:build")
    with pytest.raises(FusedUnsupported, match="'spare.weight' received no gradient"):
        train_fused([cfg, dataclasses.replace(cfg, lr_log2=-5)], load_data("synthetic"))


def _wrong_batched_gpt(monkeypatch, how):
    """Inject a wrong batched forward (as vmap over CUDA attention was): the canary must catch it."""
    real = batched._BatchedGPT.__call__

    def wrong(self, params, idx):
        return how(real(self, params, idx))

    monkeypatch.setattr(batched._BatchedGPT, "__call__", wrong)


@pytest.mark.parametrize("how", [lambda logits: 1.3 * logits, lambda logits: logits * torch.nan],
                         ids=["wrong-logits", "nan"])
def test_canary_stops_a_wrong_batched_engine(base, monkeypatch, how):
    _wrong_batched_gpt(monkeypatch, how)
    # A member that leaves before the canary's verdict is not handed over: its losses are wrong too.
    group = [dataclasses.replace(base, lr_log2=-6), dataclasses.replace(base, lr_log2=-8),
             dataclasses.replace(base, lr_log2=-7, tokens=4 * base.tokens_per_step)]
    handed = []
    with pytest.raises(FusedCanaryFailed, match=r"batched engine 'native' differs from a solo run of .*lr=2\^-8"):
        train_fused(group, load_data("synthetic"), on_result=lambda i, result: handed.append(i))
    assert handed == []


def test_canary_failure_trains_the_group_solo_and_says_so(tiny_grid, tmp_path, monkeypatch, capsys):
    _wrong_batched_gpt(monkeypatch, lambda logits: 1.3 * logits)
    grid = load_grid(tiny_grid)
    store = Store(tmp_path / "store")
    assert run_grid(grid, store, fuse=8, show_progress=False).trained == 8
    err = capsys.readouterr().err
    assert "WARNING: canary: the batched engine 'native' differs" in err and "one at a time" in err
    plan = plan_grid(grid)
    records = [store.load(plan.key(c)) for c in plan.configs]
    assert all(r.result.engine == "solo" and "failed its canary" in r.result.notes[0] for r in records)
    # The stored losses are the solo engine's own: the same as a plain solo sweep.
    solo_store = Store(tmp_path / "solo")
    run_grid(grid, solo_store, fuse=1, show_progress=False)
    assert [r.result.loss for r in records] == [solo_store.load(plan.key(c)).result.loss for c in plan.configs]


# --- shared runs (issue 44): budgets of one rate and seed on one row ---------------------------------------

def _shared_group(base, schedule, lrs, seeds=(0, 1), steps=(8, 12, 16, 20), **kw):
    return [dataclasses.replace(base, schedule=schedule, warmup_tokens=2 * base.tokens_per_step, lr_log2=lr, seed=seed,
                                tokens=n * base.tokens_per_step, **kw)
            for lr in lrs for seed in seeds for n in steps]


@pytest.mark.parametrize("schedule,kinds", [("constant", {"prefix", "trunk"}), ("wsd", {"branch", "trunk"})])
def test_shared_budgets_in_a_batched_group_match_solo_runs(base, step_losses, monkeypatch, schedule, kinds):
    """Budgets 8 to 20 steps of two rates and two seeds: 4 rows instead of 16, every budget equal to its solo run
    within the batched engine's float64 tolerance; a rate that diverges takes every budget of its row with it."""
    group = _shared_group(base, schedule, lrs=(-6, 3))
    rows = []
    real_step = fused._FusedRun._step
    monkeypatch.setattr(fused._FusedRun, "_step", lambda run, step: rows.append(run.n) or real_step(run, step))
    results = train_fused(group, load_data("synthetic"), dtype=torch.float64, share=True)
    fused_losses = dict(step_losses)
    step_losses.clear()
    solo_results = [train_run(cfg, load_data("synthetic"), dtype=torch.float64) for cfg in group]
    assert set(fused_losses) == set(step_losses)
    for key, value in step_losses.items():
        assert fused_losses[key] == pytest.approx(value, rel=TOL), key
    for f, s in zip(results, solo_results):
        assert (f.status, f.diverged_step, f.steps_trained) == (s.status, s.diverged_step, s.steps_trained)
        assert [c.step for c in f.checkpoints] == [c.step for c in s.checkpoints]
        for a, b in zip(f.checkpoints, s.checkpoints):
            assert a.val_loss == pytest.approx(b.val_loss, rel=TOL)
            assert a.train_loss == pytest.approx(b.train_loss, rel=TOL)
    assert {r.status for r in results[:8]} == {"ok"} and {r.status for r in results[8:]} == {"diverged"}
    assert len({r.diverged_step for r in results[8:12]}) == 1  # one row, one divergence
    assert {r.shared.kind for r in results} == kinds
    assert all(r.shared.trunk_tokens == group[3].tokens and r.shared.budgets == 4 for r in results)
    assert rows[0] == 4  # one row per rate and seed
    if schedule == "wsd":
        assert any(b > a for a, b in zip(rows, rows[1:]))  # a decay branch is a row of its own while it lasts


def test_without_sharing_every_budget_keeps_its_own_row(base, monkeypatch):
    group = _shared_group(base, "constant", lrs=(-6,), seeds=(0,))
    rows = []
    real_step = fused._FusedRun._step
    monkeypatch.setattr(fused._FusedRun, "_step", lambda run, step: rows.append(run.n) or real_step(run, step))
    results = train_fused(group, load_data("synthetic"))
    assert rows[0] == 4 and all(r.shared is None for r in results)


def test_a_shared_sweep_stores_the_same_numbers_as_a_sweep_without_sharing(tmp_path):
    """Through `mupcheck run`'s sweep, batched (fuse 8) and one at a time, WSD: the records match those of the
    grid with `share_runs = false`, and say how they were trained."""
    text = write_grid(tmp_path, parametrization='["mup"]').read_text()
    text = (text.replace("tokens = [2048]", "tokens = [2048, 4096, 8192]")
            .replace("seeds = [0]", "seeds = [0, 1]") + 'schedule = "wsd"\nwarmup_tokens = 256\n')
    stores = {}
    for name, extra in (("shared_fused", "fuse = 8\n"), ("shared_solo", "fuse = 1\n"),
                        ("alone", "fuse = 1\nshare_runs = false\n")):
        path = tmp_path / f"{name}.toml"
        path.write_text(text + extra)
        plan = plan_grid(load_grid(path))
        store = Store(tmp_path / name)
        run_grid(plan.grid, store, show_progress=False)
        stores[name] = {plan.key(c): store.load(plan.key(c)).result for c in plan.configs}
    alone = stores["alone"]
    assert all(r.shared is None for r in alone.values())
    for name in ("shared_fused", "shared_solo"):
        assert set(stores[name]) == set(alone)
        for key, r in stores[name].items():
            assert r.shared is not None
            if name == "shared_solo":
                assert r.checkpoints == alone[key].checkpoints  # bit for bit
            else:
                assert r.loss == pytest.approx(alone[key].loss, rel=1e-5)  # float32, batched reductions
    assert not (tmp_path / "shared_solo" / "shared-runs").exists()  # no state left once every budget is stored


class _Kill(Exception):
    pass


@pytest.mark.parametrize("schedule", ["constant", "wsd"])
def test_a_killed_batched_group_resumes_from_its_saved_state(base, tmp_path, schedule):
    """A group saved where a budget left its row (WSD: where its decay starts) and killed later resumes there:
    the runs it had handed over are not trained again, the others give what an uninterrupted group gives."""
    group = _shared_group(base, schedule, lrs=(-6, -5), seeds=(0,), steps=(10, 20, 40))
    data = load_data("synthetic")
    whole = train_fused(group, data, dtype=torch.float64, share=True)
    handed: dict[int, object] = {}

    def kill(done: int, total: int) -> None:
        if done == 30:
            raise _Kill

    with pytest.raises(_Kill):
        train_fused(group, data, dtype=torch.float64, share=True, progress=kill, state_root=tmp_path / "states",
                    on_result=lambda i, r: handed.update({i: r}))
    assert sorted(handed) == [0, 1, 3, 4]  # the 10- and 20-step budgets of both rates were handed over
    missing = [cfg for i, cfg in enumerate(group) if i not in handed]
    seen: list[int] = []
    resumed = train_fused(missing, data, dtype=torch.float64, share=True, state_root=tmp_path / "states",
                          progress=lambda done, total: seen.append(done))
    # From the state saved where the 20-step budgets left their rows: their end (constant), their decay (wsd).
    assert seen[0] == (21 if schedule == "constant" else 17)
    for r, w in zip(resumed, [whole[2], whole[5]]):
        assert r.status == w.status == "ok" and r.loss == pytest.approx(w.loss, rel=TOL)
        assert [c.step for c in r.checkpoints] == [c.step for c in w.checkpoints]
        for a, b in zip(r.checkpoints, w.checkpoints):
            assert a.val_loss == pytest.approx(b.val_loss, rel=TOL)
    assert not (tmp_path / "states").exists()
