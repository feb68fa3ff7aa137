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
