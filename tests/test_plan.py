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
