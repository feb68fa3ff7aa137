import pytest

from mupcheck.plan import flops_per_token, plan_grid
from mupcheck.spec import load_grid, run_configs


def test_flops_per_token_counts_matmuls_and_attention(tiny_grid):
    cfg = run_configs(load_grid(tiny_grid))[0]  # width 16, depth 1, seq 32
    expected = 6 * (12 * 16**2 + 16 * 256) + 12 * 1 * 16 * 32
    assert flops_per_token(cfg, 256) == expected


def test_costs_weigh_every_run_by_its_flops_and_give_its_steps(tiny_grid):
    plan = plan_grid(load_grid(tiny_grid))
    costs = plan.costs()
    assert set(costs) == {plan.key(c) for c in plan.configs}
    for cfg in plan.configs:
        flops, steps = costs[plan.key(cfg)]
        assert flops == flops_per_token(cfg, plan.data.vocab_size) * cfg.tokens and steps == cfg.steps


def test_the_estimate_multiplies_runs_by_every_axis_and_counts_evaluations(tiny_grid):
    from mupcheck.plan import GPU_STEP_FLOOR_S, estimate_cost, run_flops

    grid = load_grid(tiny_grid)
    one = estimate_cost(plan_grid(grid))
    assert one.runs == len(run_configs(grid)) == 2 * 2 * 2  # arms x widths x rates (1 seed, 1 budget)
    assert dict(one.factors) == {"arms": 2, "widths": 2, "rates": 2, "seeds": 1}
    cfg = run_configs(grid)[0]
    assert run_flops(cfg, 256) > flops_per_token(cfg, 256) * cfg.tokens  # four evaluations on top
    assert one.gpu_solo_s >= sum(c.steps for c in run_configs(grid)) * GPU_STEP_FLOOR_S  # tiny: step-bound
    deeper = tiny_grid.parent / "deeper.toml"
    deeper.write_text(tiny_grid.read_text().replace("depth = 1\n", "depths = [1, 2, 4]\n"))
    three = estimate_cost(plan_grid(load_grid(deeper)))
    assert three.runs == 3 * one.runs and dict(three.factors)["depths"] == 3
    assert three.cpu_s > 3 * one.cpu_s * 0.99 and three.groups == 3 * one.groups  # depths never share a group
    assert any("depth" in line and "separate groups" in line for line in three.lines())


def test_the_plan_command_prints_the_cost_and_calibrates_on_the_store(tiny_grid, tmp_path, capsys):
    from mupcheck.outputs.cli import main

    assert main(["plan", str(tiny_grid)]) == 0
    out = capsys.readouterr().out
    assert "tiny: 8 runs = 2 arms x 2 widths x 2 rates x 1 seeds" in out and "GPU (one H100)" in out
    assert "from the project's CPU records" in out
    store = tmp_path / "store"
    assert main(["run", str(tiny_grid), "--store", str(store), "--no-progress"]) == 0
    assert main(["plan", str(tiny_grid), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 8 of this grid's runs in the store" in out and "already holds 8 of the 8 runs" in out


def test_plan_prints_per_arm_terms_when_the_arms_sweep_different_rates(capsys):
    """smoke.toml's arms sweep 5 and 6 rates: '2 arms x 2 widths x 6 rates x 5 seeds' was 120, not its 110."""
    from pathlib import Path

    from mupcheck.outputs.cli import main

    assert main(["plan", str(Path(__file__).parent.parent / "grids" / "smoke.toml")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "smoke: 110 runs = mup: 2 widths x 5 rates x 5 seeds + sp: 2 widths x 6 rates x 5 seeds"


def test_a_slice_of_budgets_is_planned_and_trained_with_the_grids_own_keys(tmp_path, capsys):
    """`--tokens` cuts a grid to some of its budgets (what answers first); the runs are the whole grid's, so a
    later run of the whole grid reuses them. A budget the grid does not have is one line naming the ones it has."""
    from helpers import two_budget_grid

    from mupcheck.outputs.cli import main

    grid = two_budget_grid(tmp_path, "[-8, -6]")
    store = tmp_path / "store"
    assert main(["plan", str(grid), "--tokens", "2K"]) == 0
    out = capsys.readouterr().out
    assert "tiny (only tokens 2K):" in out and "tiny: 4 runs = 1 arms x 2 widths x 2 rates x 1 seeds" in out
    assert "training tokens on this machine" in out
    assert main(["run", str(grid), "--store", str(store), "--tokens", "2048", "--no-progress"]) == 0
    assert "4 trained, 0 reused" in capsys.readouterr().out
    assert main(["run", str(grid), "--store", str(store), "--no-progress"]) == 0
    assert "4 trained, 4 reused" in capsys.readouterr().out
    assert main(["run", str(grid), "--store", str(store), "--tokens", "1M"]) == 2
    assert "--tokens 1M: not in the grid's tokens (2K, 4K)" in capsys.readouterr().err


def _duration_grid(directory, schedule: str, extra: str = ""):
    path = directory / f"duration_{schedule}.toml"
    path.write_text(f"""\
name = "duration_{schedule}"
model = "gpt"
parametrization = ["mup"]
widths = [16]
depth = 1
head_dim = 8
tokens = [2048, 4096, 8192, 16384]
batch_size = 4
seq_len = 32
lr_log2 = [-8, -6]
seeds = [0, 1]
data = "synthetic"
eval_tokens = 256
device = "cpu"
schedule = "{schedule}"
warmup_tokens = 256
{extra}""")
    return path


def test_plan_shows_what_shared_runs_save_and_why_a_schedule_cannot_share(tmp_path, capsys):
    from mupcheck.outputs.cli import main
    from mupcheck.plan import estimate_cost

    constant = estimate_cost(plan_grid(load_grid(_duration_grid(tmp_path, "constant"))))
    wsd = estimate_cost(plan_grid(load_grid(_duration_grid(tmp_path, "wsd"))))
    assert constant.sharing.runs == 16 and constant.sharing.chains == 4
    assert constant.sharing.tokens == 4 * 16384  # the longest budget, once per rate and seed
    assert wsd.sharing.tokens == 4 * (16384 + sum(round(0.2 * t / 128) * 128 for t in (2048, 4096, 8192)))
    assert constant.sharing.ratio == pytest.approx(16384 / 30720) and wsd.sharing.ratio > constant.sharing.ratio
    assert constant.cpu_s < 0.6 * constant.sharing.cpu_s_alone
    assert main(["plan", str(_duration_grid(tmp_path, "wsd"))]) == 0
    out = capsys.readouterr().out
    assert "shared runs: 16 runs train as 4" in out and "with every budget alone" in out
    assert main(["plan", str(_duration_grid(tmp_path, "cosine"))]) == 0
    assert "shared runs: none; a cosine schedule depends on the budget" in capsys.readouterr().out
    off = estimate_cost(plan_grid(load_grid(_duration_grid(tmp_path, "constant", "share_runs = false\n"))))
    assert off.sharing is None and off.sharing_note == "share_runs = false: every budget trains alone"
    assert off.cpu_s == pytest.approx(constant.sharing.cpu_s_alone)


def test_progress_weighs_a_shared_run_once(tmp_path):
    plan = plan_grid(load_grid(_duration_grid(tmp_path, "constant")))
    costs = plan.costs()
    longest = [c for c in plan.configs if c.tokens == 16384]
    assert sum(f for f, _ in costs.values()) == pytest.approx(sum(plan.cost(c) for c in longest))
