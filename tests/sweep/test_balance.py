"""Fusion groups split so that every device of a sweep has work (`mupcheck.sweep.balance`)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from helpers import fake_result, two_budget_grid, wait_until

from mupcheck.engine.groups import fuse_key, fusion_groups
from mupcheck.plan import flops_per_token, plan_grid
from mupcheck.spec import load_grid, run_configs
from mupcheck.store import Store
from mupcheck.sweep.balance import balance, local_slots
from mupcheck.sweep.local import run_grid

REFERENCE = Path(__file__).resolve().parents[2] / "grids" / "gpu_reference.toml"


def _cost(cfg) -> float:
    return flops_per_token(cfg, 256) * cfg.tokens


def _total(group) -> float:
    return sum(_cost(c) for c in group)


def test_the_reference_grid_on_eight_gpus_is_split_where_the_cost_is():
    groups = fusion_groups(run_configs(load_grid(REFERENCE)), 32)  # one group of 32 per width
    assert len(groups) == 4
    balanced = balance(groups, 8, _cost)
    assert len(balanced) == 8
    assert Counter(c for g in balanced for c in g) == Counter(c for g in groups for c in g)  # each run once
    assert all(len({fuse_key(c) for c in g}) == 1 for g in balanced)  # each still one batched model
    # The width-1024 group (three quarters of the FLOPs) is quartered, 512 halved, 128 and 256 whole.
    assert Counter(g[0].width for g in balanced) == {1024: 4, 512: 2, 256: 1, 128: 1}
    for g in balanced:  # every piece has runs of every budget, so the pieces cost the same
        assert len({c.tokens for c in g}) == 4
    assert max(map(_total, balanced)) == pytest.approx(max(map(_total, groups)) / 4)


def test_groups_are_kept_whole_when_there_are_enough_of_them():
    groups = fusion_groups(run_configs(load_grid(REFERENCE)), 32)
    assert balance(groups, 4, _cost) == groups
    assert balance(groups, 1, _cost) == groups
    single = [[groups[0][0]]]
    assert balance(single, 8, _cost) == single  # one run cannot be split
    assert balance([], 8, _cost) == []  # nothing left to train (a peer holds the rest)


def test_local_slots_one_per_worker_at_most_one_per_gpu(monkeypatch):
    assert local_slots(torch.device("cpu"), 3) == 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert local_slots(torch.device("cuda"), 8) == 4
    assert local_slots(torch.device("cuda"), 2) == 2
    assert local_slots(torch.device("cuda:1"), 8) == 1  # pinned to one GPU


def _one_group_grid(tmp_path):
    """muP, 1 width, 2 budgets, 4 rates: 8 runs that form one batched group."""
    path = two_budget_grid(tmp_path, "[-9, -8, -7, -6]")
    path.write_text(path.read_text().replace("widths = [16, 32]", "widths = [16]"))
    return load_grid(path)


def test_two_workers_share_a_grid_of_one_group(tmp_path):
    """Eight runs that form one batched group: with two workers, each trains half of it."""
    grid = _one_group_grid(tmp_path)
    store = Store(tmp_path / "store")
    assert run_grid(grid, store, workers=2, fuse=8, show_progress=False).trained == 8
    plan = plan_grid(grid)
    results = [store.load(plan.key(c)).result for c in plan.configs]
    assert {r.engine for r in results} == {"fused"} and {r.fused.members for r in results} == {4}


def test_runs_a_peer_is_training_are_left_out_of_this_processs_groups(tmp_path):
    """A peer (an xdist worker) trains half of a one-group grid and has stored its short runs; this process,
    starting late, splits only the other half between the two devices, then waits for the peer's long runs.
    Balancing all six unfinished runs would mix the peer's held runs into its groups, leaving pieces of one
    run to train alone."""
    grid = _one_group_grid(tmp_path)
    plan, store = plan_grid(grid), Store(tmp_path / "store")
    peers_half = [c for c in plan.configs if c.lr_log2 in (-9, -7)]  # the half `balance` gives a worker
    ours = [plan.key(c) for c in plan.configs if c not in peers_half]
    for cfg in peers_half:
        if cfg.tokens == 2048:
            store.save_result(plan.key(cfg), plan.key_material(cfg), fake_result())
    held = [plan.key(c) for c in peers_half if c.tokens == 4096]

    def peer() -> None:  # holds its two long runs until this process has stored its own four
        with ExitStack() as claims:
            assert all(claims.enter_context(store.claim(k, block=True)) for k in held)
            started.set()
            while not all(store.load(k) for k in ours):
                time.sleep(0.05)
            for cfg in peers_half:
                if cfg.tokens == 4096:
                    store.save_result(plan.key(cfg), plan.key_material(cfg), fake_result())

    started = threading.Event()
    thread = threading.Thread(target=peer)
    thread.start()
    assert wait_until(started.is_set, alive=thread.is_alive)  # the peer holds its claims (or failed)
    summary = run_grid(grid, store, fuse=8, peers=2, show_progress=False)
    thread.join()
    assert (summary.trained, summary.reused) == (4, 4)
    results = [store.load(k).result for k in ours]
    assert {r.engine for r in results} == {"fused"} and {r.fused.members for r in results} == {2}
