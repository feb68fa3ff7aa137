"""Shared runs: every budget read off (constant) or branched off (WSD) one run equals, bit for bit on CPU in
float32, the same budget trained alone; divergence on the shared run is every later budget's; a chain cut
short resumes where its last budget left it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import write_grid

from mupcheck.engine.data import load_data
from mupcheck.engine.groups import branch_step, fusion_groups, share_chains, sharing_note
from mupcheck.engine.saved_state import STATE_VERSION, read_state, remove_state, write_state
from mupcheck.engine.shared import train_shared
from mupcheck.engine.solo import train_run
from mupcheck.result import RunResult
from mupcheck.spec import load_grid, run_configs

BUDGETS = (2048, 4096, 8192, 16384)  # 32 to 256 steps of 64 tokens


@pytest.fixture
def base(tmp_path):
    cfg = run_configs(load_grid(write_grid(tmp_path, parametrization='["mup"]')))[0]
    return dataclasses.replace(cfg, width=32, lr_log2=-6.0, warmup_tokens=512, batch_size=4, seq_len=16,
                               eval_tokens=128)


def _chain(base, schedule: str, **kw) -> list:
    return [dataclasses.replace(base, schedule=schedule, tokens=t, **kw) for t in BUDGETS]


def _numbers(result: RunResult) -> tuple:
    """Everything a run's record says about training (not its time, nor how it was trained)."""
    return (result.status, result.loss, result.train_loss, result.initial_loss, result.diverged_step, result.steps,
            result.steps_trained, result.checkpoints, result.data_repeats, result.weight_decay, result.tau_steps)


@pytest.mark.parametrize("schedule,decay_frac,kinds", [
    ("constant", 0.2, ["prefix", "prefix", "prefix", "trunk"]),
    ("wsd", 0.2, ["branch", "branch", "branch", "trunk"]),
    # a decay longer than a quarter: checkpoints fall inside the branches too
    ("wsd", 0.4, ["branch", "branch", "branch", "trunk"]),
])
def test_every_budget_equals_the_same_budget_trained_alone(base, schedule, decay_frac, kinds):
    chain = _chain(base, schedule, decay_frac=decay_frac)
    assert share_chains(chain) == [chain]
    data = load_data("synthetic")
    shared = train_shared(chain, data)
    alone = [train_run(cfg, data) for cfg in chain]
    for a, s, cfg in zip(alone, shared, chain):
        assert a.status == "ok"
        assert _numbers(s) == _numbers(a), cfg.tokens  # bit for bit: float equality
    assert [s.shared.kind for s in shared] == kinds
    assert all(s.shared.trunk_tokens == BUDGETS[-1] and s.shared.budgets == 4 for s in shared)
    if schedule == "wsd":
        assert [s.shared.leaves_at for s in shared[:-1]] == [branch_step(c, chain[-1]) for c in chain[:-1]]
        assert [s.shared.leaves_at for s in shared[:-1]] == [c.steps - round(decay_frac * c.steps) for c in chain[:-1]]


@pytest.mark.parametrize("schedule", ["constant", "wsd"])
def test_a_divergence_on_the_shared_run_is_every_later_budgets_divergence(base, schedule):
    chain = _chain(base, schedule, lr_log2=3.0, warmup_tokens=64)  # diverges within a few steps
    data = load_data("synthetic")
    shared = train_shared(chain, data)
    alone = [train_run(cfg, data) for cfg in chain]
    assert all(a.status == "diverged" for a in alone)
    assert [_numbers(s) for s in shared] == [_numbers(a) for a in alone]
    assert len({s.diverged_step for s in shared}) == 1  # the same step, the shared run's
    assert all(s.shared is not None for s in shared)  # and each says what it was read from


@pytest.mark.parametrize("schedule", ["constant", "wsd"])
def test_a_divergence_after_a_budget_left_spares_it_and_takes_the_later_ones(base, schedule):
    """A budget that left the shared run before it diverged keeps its own result; the later ones diverge with the
    shared run, at its step. A rate of 1 with a warmup of 24 steps diverges after the first budget's 32 steps."""
    chain = _chain(base, schedule, lr_log2=0.0, warmup_tokens=1536)
    data = load_data("synthetic")
    alone = [train_run(cfg, data) for cfg in chain]
    assert [a.status for a in alone] == ["ok", "diverged", "diverged", "diverged"]  # what the test needs
    shared = train_shared(chain, data)
    assert [_numbers(s) for s in shared] == [_numbers(a) for a in alone]


class _Kill(Exception):
    pass


def _kill_at(steps: int, step: int):
    """A progress callback that raises when a run of `steps` steps reaches `step` (a kill mid-run)."""
    def progress(done: int, total: int) -> None:
        if total == steps and done == step:
            raise _Kill
    return progress


def test_a_kill_during_a_decay_branch_redoes_only_that_branch(base, tmp_path):
    chain = _chain(base, "wsd")
    data = load_data("synthetic")
    stored: dict[int, RunResult] = {}
    third = chain[2]  # 128 steps, its decay from step 102
    with pytest.raises(_Kill):
        train_shared(chain, data, on_result=lambda i, r: stored.update({chain[i].tokens: r}),
                     progress=_kill_at(third.steps, third.steps - 5), state_dir=tmp_path / "state")
    assert sorted(stored) == list(BUDGETS[:2])  # the two shorter budgets were finished before the kill
    missing = [c for c in chain if c.tokens not in stored]
    seen: list[tuple[int, int]] = []
    resumed = train_shared(missing, data, progress=lambda d, t: seen.append((d, t)), state_dir=tmp_path / "state")
    start = branch_step(third, chain[-1])
    assert seen[0] == (start + 1, third.steps)  # the branch again, from where it left the shared run
    alone = [train_run(cfg, data) for cfg in missing]
    assert [_numbers(r) for r in resumed] == [_numbers(a) for a in alone]
    assert not (tmp_path / "state").exists()  # the state is removed once the chain is done


def test_a_kill_on_the_shared_run_resumes_after_the_last_budget_that_left_it(base, tmp_path):
    chain = _chain(base, "constant")
    data = load_data("synthetic")
    stored: dict[int, RunResult] = {}
    with pytest.raises(_Kill):
        train_shared(chain, data, on_result=lambda i, r: stored.update({chain[i].tokens: r}),
                     progress=_kill_at(chain[-1].steps, 200), state_dir=tmp_path / "state")
    assert sorted(stored) == list(BUDGETS[:3])
    seen: list[tuple[int, int]] = []
    resumed = train_shared(chain[3:], data, progress=lambda d, t: seen.append((d, t)), state_dir=tmp_path / "state")
    assert seen[0] == (chain[2].steps + 1, chain[3].steps)
    assert _numbers(resumed[0]) == _numbers(train_run(chain[3], data))


def test_a_corrupt_saved_state_costs_time_never_a_result(base, tmp_path, capsys):
    chain = _chain(base, "wsd")
    state = tmp_path / "state"
    state.mkdir()
    (state / "step-000000100.pt").write_bytes(b"not a torch file")
    data = load_data("synthetic")
    results = train_shared(chain, data, state_dir=state)
    assert "cannot resume from this saved state" in capsys.readouterr().err
    assert _numbers(results[-1]) == _numbers(train_run(chain[-1], data))


# --- which budgets share -------------------------------------------------------------------------------

def test_cosine_and_linear_share_nothing_and_say_why(base):
    for schedule in ("cosine", "linear"):
        chain = _chain(base, schedule)
        assert share_chains(chain) == [[c] for c in reversed(chain)]
        assert f"a {schedule} schedule depends on the budget" in sharing_note(chain)


def test_a_warmup_in_fractions_of_each_run_shares_nothing(base):
    chain = _chain(base, "wsd", warmup_tokens=0, warmup=0.1)
    assert all(len(c) == 1 for c in share_chains(chain))
    assert "warmup_tokens" in sharing_note(chain)


def test_a_weight_decay_per_budget_shares_nothing(base):
    chain = _chain(base, "constant", weight_decay_mode="timescale", tau_frac=0.5)
    assert all(len(c) == 1 for c in share_chains(chain))
    assert "timescale" in sharing_note(chain)


def test_runs_of_other_rates_or_seeds_never_share(base):
    chain = _chain(base, "constant")
    other = [dataclasses.replace(c, lr_log2=-5.0) for c in chain] + [dataclasses.replace(chain[0], seed=1)]
    chains = share_chains(chain + other)
    assert sorted(len(c) for c in chains) == [1, 4, 4]
    assert all(len({(c.lr_log2, c.seed) for c in ch}) == 1 for ch in chains)
    assert sharing_note(chain + other) is None


def test_batched_groups_keep_a_shared_run_whole(base):
    chains = [[dataclasses.replace(c, lr_log2=lr) for c in _chain(base, "wsd")] for lr in (-8.0, -7.0, -6.0)]
    configs = [c for ch in chains for c in ch]
    groups = fusion_groups(configs, 2, share=True)
    assert [len(g) for g in groups] == [8, 4]  # two shared runs per batched model, never one cut in two
    assert fusion_groups(configs, 2) == [configs[i:i + 2] for i in range(0, 12, 2)]  # as before without sharing


def test_a_shared_budget_counts_only_its_own_device_time():
    from helpers import fake_result

    from mupcheck.collect import device_time
    from mupcheck.result import FusedInfo, SharedInfo

    trunk = fake_result(wall_time_s=40.0, steps=400, shared=SharedInfo("trunk", 409600, 400, 3))
    prefix = fake_result(wall_time_s=10.0, steps=100, shared=SharedInfo("prefix", 409600, 100, 3))
    branch = fake_result(wall_time_s=20.0, steps=200, shared=SharedInfo("branch", 409600, 160, 3))
    assert [device_time(r) for r in (trunk, prefix, branch)] == [40.0, 0.0, pytest.approx(4.0)]
    fused = fake_result(wall_time_s=3.0, engine="fused", fused=FusedInfo(8, False, 24.0, None),
                        shared=SharedInfo("prefix", 409600, 100, 3))
    assert device_time(fused) == 3.0  # a batched run's time is its share of its group's already
    assert device_time(fake_result(wall_time_s=5.0)) == 5.0


def test_a_saved_state_replaces_the_one_before_and_goes_with_its_run(tmp_path):
    folder = tmp_path / "shared-runs" / "abc"
    write_state(folder, 10, {"x": torch.ones(2)})
    write_state(folder, 20, {"x": torch.zeros(2)})
    assert [p.name for p in folder.iterdir()] == ["step-000000020.pt"]
    path, state = read_state(folder, "cpu", "the run")
    assert path.name == "step-000000020.pt" and state["step"] == 20 and state["x"].sum() == 0
    (tmp_path / "shared-runs" / "other").mkdir()  # another run's state is still there
    remove_state(folder)
    assert not folder.exists() and (tmp_path / "shared-runs").exists()
    remove_state(tmp_path / "shared-runs" / "other")
    assert not (tmp_path / "shared-runs").exists()


def test_a_state_of_another_version_or_unreadable_is_not_resumed(tmp_path, capsys):
    folder = tmp_path / "abc"
    write_state(folder, 5, {})
    state = torch.load(folder / "step-000000005.pt", weights_only=False)
    torch.save({**state, "version": STATE_VERSION + 1}, folder / "step-000000005.pt")
    assert read_state(folder, "cpu", "the run") is None
    (folder / "step-000000005.pt").write_bytes(b"not a state")
    assert read_state(folder, "cpu", "the run") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step-000000005.pt" in err[0] and "training the run from its start" in err[0]
