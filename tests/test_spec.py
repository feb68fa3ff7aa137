"""Grid files: valid ones parse, broken ones are refused with a message naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_GRID, write_grid

from mupcheck.errors import GridError
from mupcheck.fmt import format_tokens, parse_count
from mupcheck.spec import load_grid, run_configs


def test_valid_grid_parses_and_expands(tiny_grid):
    grid = load_grid(tiny_grid)
    assert grid.widths == (16, 32) and grid.lr_log2 == (-8.0, -6.0)
    configs = run_configs(grid)
    assert len(configs) == 2 * 2 * 1 * 2 * 1  # parametrization x widths x tokens x lr x seeds
    cfg = configs[0]
    assert cfg.steps == 2048 // (4 * 32) and cfg.lr == 2.0**-8
    assert {c.parametrization for c in configs} == {"mup", "sp"}


def test_defaults_fill_in(tmp_path):
    path = tmp_path / "min.toml"
    path.write_text('name = "m"\nmodel = "mlp"\nwidths = [32, 64]\ntokens = [65536]\nlr_log2 = [-8, -7]\n')
    grid = load_grid(path)
    assert grid.base_width == 32 and grid.parametrization == ("mup", "sp") and grid.data == "python-stdlib"
    assert grid.transfer.tolerance_log2 is None and grid.transfer.max_regret == 0.005 and grid.refine is None


def _replace(key: str, value: str) -> str:
    """The tiny grid with `key` set to `value` (added if the tiny grid lacks it)."""
    lines = [line for line in TINY_GRID.format(model="gpt", extra="").splitlines() if not line.startswith(f"{key} =")]
    return "\n".join([*lines, f"{key} = {value}"]) + "\n"


def _swap(key: str, line: str, extra: str = "", model: str = "gpt") -> str:
    """The tiny grid without `key`, with `line` (and `extra` tables) instead."""
    lines = [x for x in TINY_GRID.format(model=model, extra="").splitlines() if not x.startswith(f"{key} =")]
    return "\n".join([*lines, line]) + "\n" + extra


BROKEN = [
    # the axes beyond width and tokens (issue 27)
    ("empty depths", _swap("depth", "depths = []"), "depths", "non-empty list"),
    ("a depth of 0", _swap("depth", "depths = [0, 2]"), "depths", ">= 1"),
    ("depth and depths", TINY_GRID.format(model="gpt", extra="depths = [1, 2]\n"), "depths", "not both"),
    ("empty batch sizes", _swap("batch_size", "batch_sizes = []"), "batch_sizes", "non-empty list"),
    ("unknown batch rule", _swap("batch_size", "batch_sizes = [2, 4]", '[transfer]\nlr_batch_rule = "cubic"\n'),
     "transfer.lr_batch_rule", "must be one of 'none', 'sqrt', 'linear', 'fit'"),
    ("batch rule without a batch axis", TINY_GRID.format(model="gpt", extra='[transfer]\nlr_batch_rule = "sqrt"\n'),
     "transfer.lr_batch_rule", "needs a batch-size axis"),
    ("fitted batch rule on two sizes",
     _swap("batch_size", "batch_sizes = [2, 4]", '[transfer]\nlr_batch_rule = "fit"\n'), "transfer.lr_batch_rule",
     "at least 3 batch_sizes"),
    ("too few steps at the largest batch", _swap("batch_size", "batch_sizes = [4, 8, 16]"), "tokens",
     "at least 10 steps"),
    ("depth rule out of range", TINY_GRID.format(model="gpt", extra="depth_alpha = 2\n"), "depth_alpha", "<= 1.0"),
    ("depth rule on an MLP without residual branches", TINY_GRID.format(model="mlp", extra="depth_alpha = 1\n"),
     "depth_alpha", "mlp_residual = true"),
    ("base_depth without a depth rule", TINY_GRID.format(model="gpt", extra="base_depth = 2\n"), "base_depth",
     "only matters with a depth rule"),
    ("reference depth not swept", _swap("depth", "depths = [1, 2]", "[transfer]\nreference_depth = 4\n"),
     "transfer.reference_depth", "not one of the grid's depths"),

    # (what is broken, file text, key named, words in the message)
    ("unknown key", TINY_GRID.format(model="gpt", extra="lr = 0.1\n"), "lr", "unknown key"),
    ("wrong type", _replace("depth", '"two"'), "depth", "must be an integer"),
    ("bool for int", _replace("batch_size", "true"), "batch_size", "must be an integer"),
    ("empty list", _replace("widths", "[]"), "widths", "non-empty list"),
    ("unsorted list", _replace("widths", "[32, 16]"), "widths", "strictly increasing"),
    ("repeated lr", _replace("lr_log2", "[-8, -8]"), "lr_log2", "strictly increasing"),
    ("unknown choice", _replace("optimizer", '"adam"'), "optimizer", "neither 'adamw' nor 'sgd'"),
    ("unknown parametrization", _replace("parametrization", '["mup", "ntk"]'), "parametrization", "'mup', 'sp'"),
    ("head_dim mismatch", _replace("head_dim", "12"), "head_dim", "not divisible by head_dim=12"),
    ("too few steps", _replace("tokens", "[256]"), "tokens", "at least 10 steps"),
    ("bad model", _replace("model", '"transformer"'), "model", "neither a built-in model"),
    ("missing factory module", _replace("model", '"no_such_pkg.models:build"'), "model", "cannot import"),
    ("bad device", _replace("device", '"gpu"'), "device", "auto, cpu, cuda"),
    ("warmup too big", TINY_GRID.format(model="gpt", extra="warmup = 1.5\n"), "warmup", "< 1.0"),
    ("transfer key", TINY_GRID.format(model="gpt", extra="[transfer]\ntolerance = 1\n"), "transfer.tolerance",
     "unknown key"),
    ("expect_break axis", TINY_GRID.format(model="gpt", extra="[transfer]\nexpect_break = [\"heads\"]\n"),
     "transfer.expect_break", "'width', 'tokens'"),
    ("expect_break on an axis the grid does not vary",
     TINY_GRID.format(model="gpt", extra="[transfer]\nexpect_break = [\"depth\"]\n"), "transfer.expect_break",
     "one depth value"),
    ("power rule without budgets to test", TINY_GRID.format(model="gpt", extra='[transfer]\nlr_rule = "power"\n'),
     "transfer.lr_rule_fit_tokens", "at least one budget left out"),
    ("reference width not in grid", TINY_GRID.format(model="gpt", extra="[transfer]\nreference_width = 64\n"),
     "transfer.reference_width", "not one of the grid's widths"),
    ("warmup twice", TINY_GRID.format(model="gpt", extra="warmup = 0.1\nwarmup_tokens = 256\n"), "warmup_tokens",
     "not both"),
    ("warmup_tokens too long", TINY_GRID.format(model="gpt", extra="warmup_tokens = 4096\n"), "warmup_tokens",
     "not below the smallest token budget"),
    ("timescale without tau", TINY_GRID.format(model="gpt", extra='weight_decay_mode = "timescale"\n'), "tau_frac",
     "needs tau_frac > 0"),
    ("tau without timescale", TINY_GRID.format(model="gpt", extra="tau_frac = 0.2\n"), "tau_frac",
     "only applies"),
    ("coord_check too narrow", TINY_GRID.format(model="gpt", extra="[coord_check]\nsteps = 2\n"),
     "coord_check.widths", "must span at least 8x"),
    ("coord_check key", TINY_GRID.format(model="gpt", extra="[coord_check]\nwidth = [16]\n"), "coord_check.width",
     "unknown key"),
    ("coord_check type", TINY_GRID.format(model="gpt", extra="[coord_check]\nwidths = [16, 128]\nsteps = 0\n"),
     "coord_check.steps", "must be >= 1"),
]


@pytest.mark.parametrize("what,text,key,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_grid_is_refused_naming_file_and_key(tmp_path, what, text, key, words):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(GridError) as info:
        load_grid(path)
    message = str(info.value)
    assert str(path) in message and f"`{key}`" in message and words in message, message


def test_missing_required_key(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('name = "g"\nmodel = "gpt"\nwidths = [16]\ntokens = [4096]\n')
    with pytest.raises(GridError, match=r"`lr_log2`: required key is missing"):
        load_grid(path)


def test_invalid_toml_and_missing_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(GridError, match="not valid TOML"):
        load_grid(path)
    with pytest.raises(GridError, match="no such grid file"):
        load_grid(tmp_path / "absent.toml")


def test_cli_reports_grid_error_without_traceback(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(_replace("widths", "[32, 16]"))
    proc = subprocess.run([sys.executable, "-m", "mupcheck", "run", str(path), "--store", str(tmp_path / "s")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}: `widths`: must be strictly increasing" in proc.stderr


def test_shipped_grids_are_valid():
    grids = sorted(Path(__file__).parent.parent.joinpath("grids").glob("*.toml"))
    assert grids, "no grid files shipped"
    for path in grids:
        assert run_configs(load_grid(path))


def test_format_tokens():
    assert format_tokens(2**20) == "1M" and format_tokens(65536) == "64K" and format_tokens(3 * 2**20) == "3M"
    assert format_tokens(12345) == "12345"
    # Decimal budgets, as scaling studies write them (issue 35): never 3906250K for 4e9.
    assert format_tokens(4 * 10**9) == "4B" and format_tokens(11_400_000_000) == "11.4B"
    assert format_tokens(10**11) == "100B" and format_tokens(2**30) == "1G"
    # K and M are binary (parse_count reads them so): a decimal million is not '1M', nor 8192000 '8000K' (issue 42)
    assert format_tokens(10**6) == "1e6" and format_tokens(8_192_000) == "8.192e6" and format_tokens(1500) == "1500"
    assert format_tokens(3_000_000) == "3e6"
    for n in (2**20, 10**6, 8_192_000, 4 * 10**9, 11_400_000_000, 131072, 1500, 12345, 5 * 10**5):
        assert parse_count(format_tokens(n)) == n, n


def test_extends_overrides_key_by_key_and_table_by_table(tmp_path):
    base = write_grid(tmp_path, extra="[transfer]\ntolerance_log2 = 0.7\nmax_regret = 0.02\n")
    child = tmp_path / "child.toml"
    child.write_text('extends = "tiny.toml"\nname = "child"\ndepth = 3\n[transfer]\nmax_regret = 0.05\n')
    grid, parent = load_grid(child), load_grid(base)
    assert (grid.name, grid.depth, grid.widths) == ("child", 3, parent.widths)
    assert (grid.transfer.tolerance_log2, grid.transfer.max_regret) == (0.7, 0.05)
    loop = tmp_path / "loop.toml"
    loop.write_text('extends = "loop.toml"\nname = "x"\n')
    with pytest.raises(GridError, match="a cycle"):
        load_grid(loop)
    orphan = tmp_path / "orphan.toml"
    orphan.write_text('extends = "nowhere.toml"\n')
    with pytest.raises(GridError, match="orphan.toml: `extends`: no grid file nowhere.toml"):
        load_grid(orphan)


def test_each_arm_may_sweep_its_own_rates_and_use_its_own_optimizer(tmp_path):
    """Issue 26: u-muP's optimum lies 7-8 octaves above its SP twin's; one lr_log2 list left both censored."""
    path = write_grid(tmp_path, extra="")
    path.write_text(path.read_text().replace("lr_log2 = [-8, -6]", "lr_log2 = {mup = [-3, -1], sp = [-10, -8]}")
                    + 'optimizer = {mup = "adamw", sp = "sgd"}\n')
    grid = load_grid(path)
    assert grid.lr_log2 == (-10.0, -8.0, -3.0, -1.0)  # the union, for reports and plots
    configs = run_configs(grid)
    assert {c.lr_log2 for c in configs if c.parametrization == "mup"} == {-3.0, -1.0}
    assert {(c.parametrization, c.optimizer) for c in configs} == {("mup", "adamw"), ("sp", "sgd")}
    assert len(configs) == 8
    path.write_text(path.read_text().replace("lr_log2 = {mup = [-3, -1], sp = [-10, -8]}", "lr_log2 = {mup = [-3]}"))
    with pytest.raises(GridError, match=r"`lr_log2`: a table gives one value per arm"):
        load_grid(path)
    path.write_text(path.read_text().replace("lr_log2 = {mup = [-3]}", "lr_log2 = {mup = [-3, 99], sp = [-8]}"))
    with pytest.raises(GridError, match=r"`lr_log2.mup`: must hold log2 learning rates between"):
        load_grid(path)


def test_depths_and_batch_sizes_expand_into_runs_and_resolve_their_scalars(tmp_path):
    path = tmp_path / "axes.toml"
    path.write_text(_swap("depth", "depths = [1, 2, 4]\ndepth_alpha = 1.0").replace("batch_size = 4",
                                                                                     "batch_sizes = [2, 4]"))
    grid = load_grid(path)
    assert grid.values("depth") == (1, 2, 4) and grid.depth == 1 and grid.base_depth == 1
    assert grid.values("batch_size") == (2, 4) and grid.batch_size == 2
    assert grid.varied_axes == ("width", "depth", "batch_size")
    configs = run_configs(grid)
    assert len(configs) == 2 * 3 * 2 * 2 * 1 * 2  # parametrization x depths x batches x widths x tokens x lr
    assert {(c.depth, c.batch_size) for c in configs} == {(d, b) for d in (1, 2, 4) for b in (2, 4)}
    deep = next(c for c in configs if c.depth == 4)
    assert deep.depth_multiplier == 4.0 and "depth=4" in deep.label()
    assert next(c for c in configs if c.batch_size == 4).steps == 2048 // (4 * 32)


USER_MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width, depth):
        super().__init__()
        self.depth = depth
        self.emb = nn.Embedding(64, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, 64)

    def forward(self, idx):
        x = self.emb(idx)
        for layer in self.layers:
            x = x + layer(x)
        return self.out(x)


def build(width, depth=3):
    return Net(width, depth)


def build_flat(width):
    return Net(width, 2)
'''


def test_a_users_factory_gets_each_depth_and_keeps_its_own_default(tmp_path, monkeypatch):
    from mupcheck.engine.models import model_factory

    (tmp_path / "deep_user_model.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    default = write_grid(tmp_path, "default.toml", model="deep_user_model:build")
    text = default.read_text().replace("depth = 1\n", "")
    default.write_text(text)
    assert load_grid(default).depth == 3  # the factory's own default: mupcheck does not override it unasked
    swept = tmp_path / "swept.toml"
    swept.write_text(text + "depths = [1, 2]\n")
    configs = run_configs(load_grid(swept))
    assert {model_factory(c, 64)(16).depth for c in configs} == {1, 2}
    flat = tmp_path / "flat.toml"
    flat.write_text(text.replace("deep_user_model:build", "deep_user_model:build_flat") + "depths = [1, 2]\n")
    with pytest.raises(GridError) as info:
        load_grid(flat)
    assert "`depths`" in str(info.value) and "takes no `depth`" in str(info.value)
    rule = tmp_path / "rule.toml"
    rule.write_text(text + "depth_alpha = 1\n")
    with pytest.raises(GridError, match="applies to the built-in models"):
        load_grid(rule)


SWEPT = 'sweep = "output_mult"\nsweep_log2 = [-1, 0, 1]\n'


def test_a_swept_key_expands_every_run_and_keeps_old_keys(tmp_path):
    """Each run of the grid at every value of the swept key; the value lives in the key's own field, so a run
    at x = 0 (output_mult 1) is the run without a sweep, under the same store key."""
    from mupcheck.plan import RunContext

    plain = run_configs(load_grid(write_grid(tmp_path, "plain.toml")))
    swept = run_configs(load_grid(write_grid(tmp_path, "swept.toml", extra=SWEPT)))
    assert len(swept) == 3 * len(plain)
    assert sorted({(c.sweep_log2, c.output_mult) for c in swept}) == [(-1.0, 0.5), (0.0, 1.0), (1.0, 2.0)]
    context = RunContext("data", "model", "engine", "cpu", "0")
    at_one = [c for c in swept if c.sweep_log2 == 0.0]
    assert [context.key(c) for c in at_one] == [context.key(c) for c in plain]
    assert context.key(swept[0]) != context.key(plain[0])
    from mupcheck.spec import arm_config  # what the lint and the coordinate check build: the grid's own setting

    grid = load_grid(tmp_path / "swept.toml")
    assert arm_config(grid, "mup").output_mult == 1.0 and not arm_config(grid, "sp").sweep
    beta2 = run_configs(load_grid(write_grid(tmp_path, "beta2.toml", extra='sweep = "adam_beta2"\n'
                                                                          'sweep_log2 = [-10, -5]\n')))
    assert sorted({c.adam_beta2 for c in beta2}) == [1 - 2**-5, 1 - 2**-10]


@pytest.mark.parametrize("extra,key,message", [
    ('sweep = "dropout"\nsweep_log2 = [0, 1]\n', "sweep", "must be one of 'output_mult', 'init_std_mult'"),
    ('sweep = "output_mult"\nsweep_log2 = []\n', "sweep_log2", "must be a non-empty list"),
    ('sweep = "output_mult"\n', "sweep_log2", "required key is missing"),
    ("sweep_log2 = [0, 1]\n", "sweep_log2", "name it, sweep = one of"),
    ('sweep = "output_mult"\nsweep_log2 = [1, 0]\n', "sweep_log2", "strictly increasing"),
    ('sweep = "output_mult"\nsweep_log2 = [0, 1e9]\n', "sweep_log2", "log2 values of the swept key between"),
    (SWEPT + "output_mult = 2.0\n", "output_mult", "is swept"),
    ('sweep = "adam_beta2"\nsweep_log2 = [-2, 0]\n', "sweep_log2", "x must be < 0"),
    ('sweep = "adam_eps"\nsweep_log2 = [-20, -10]\noptimizer = "sgd"\n', "sweep", "AdamW's setting"),
    ('sweep = "weight_decay"\nsweep_log2 = [-4, -2]\nweight_decay_mode = "timescale"\ntau_frac = 0.2\n', "sweep",
     "chosen per run"),
    (SWEPT + '[transfer]\nlr_rule = "power"\nlr_rule_beta = 0.5\n', "transfer.lr_rule", "predicts the learning rate"),
    (SWEPT + "[refine]\nstep_log2 = 0.5\n", "refine", "together"),
    ("output_mult = 0\n", "output_mult", "must be > 0.0"),
    ("adam_beta2 = 1.0\n", "adam_beta2", "must be < 1.0"),
])
def test_bad_sweeps_name_the_key(tmp_path, extra, key, message):
    text = write_grid(tmp_path, extra=extra).read_text()
    if "[refine]" in extra:  # a joint sweep: several learning rates and several values of the key
        text = text.replace("lr_log2 = [-8, -6]", "lr_log2 = [-8, -7, -6]")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GridError) as info:
        load_grid(path)
    assert f"`{key}`" in str(info.value) and message in str(info.value), str(info.value)


def test_a_sweep_key_the_users_model_does_not_take_is_refused(tmp_path, monkeypatch):
    from mupcheck.engine.models import model_factory

    mult = ("\n\ndef build_mult(width, output_mult=1.0):\n"
            "    net = Net(width, 2)\n    net.mult = output_mult\n    return net\n")
    (tmp_path / "mult_user_model.py").write_text(USER_MODEL + mult)
    monkeypatch.syspath_prepend(str(tmp_path))
    refused = write_grid(tmp_path, "refused.toml", model="mult_user_model:build_flat", extra=SWEPT)
    with pytest.raises(GridError) as info:
        load_grid(refused)
    assert "`sweep`" in str(info.value) and "takes no `output_mult`" in str(info.value)
    scalar = write_grid(tmp_path, "scalar.toml", model="mult_user_model:build_flat", extra="init_std_mult = 2.0\n")
    with pytest.raises(GridError, match="takes no `init_std_mult`"):
        load_grid(scalar)
    taken = run_configs(load_grid(write_grid(tmp_path, "taken.toml", model="mult_user_model:build_mult",
                                             extra=SWEPT)))
    assert sorted({model_factory(c, 64)(16).mult for c in taken}) == [0.5, 1.0, 2.0]


def test_a_results_grid_refuses_a_sweep(tmp_path):
    (tmp_path / "runs.csv").write_text("width,tokens,lr_log2,seed,loss\n32,1000,-5,0,2.0\n")
    path = tmp_path / "r.toml"
    path.write_text('name = "r"\nresults = "runs.csv"\n' + SWEPT)
    with pytest.raises(GridError, match="`sweep`: a results grid judges the learning rate"):
        load_grid(path)


def test_a_noise_prior_is_a_table_of_positive_numbers(tmp_path):
    grid = load_grid(write_grid(tmp_path, extra="[noise]\noptimum_sd_log2 = 0.25\nloss_sd = 0.003\n"))
    assert (grid.noise.optimum_sd_log2, grid.noise.loss_sd) == (0.25, 0.003)
    assert load_grid(write_grid(tmp_path, name="plain.toml")).noise.optimum_sd_log2 is None
    with pytest.raises(GridError, match=r"`noise.optimum_sd_log2`: must be > 0.0, got -0.2"):
        load_grid(write_grid(tmp_path, name="bad.toml", extra="[noise]\noptimum_sd_log2 = -0.2\n"))
    with pytest.raises(GridError, match=r"`noise.loss`: unknown key"):
        load_grid(write_grid(tmp_path, name="typo.toml", extra="[noise]\nloss = 0.1\n"))


def test_rates_written_where_their_log2_belongs_are_refused(tmp_path):
    """lr_log2 = [0.001, 0.003, 0.01] trained 18 runs near lr 1 that all diverged, and pytest exited 0."""
    path = write_grid(tmp_path, name="raw.toml")
    path.write_text(path.read_text().replace("lr_log2 = [-8, -6]", "lr_log2 = [0.001, 0.003, 0.01]"))
    with pytest.raises(GridError, match=r"`lr_log2`: every value lies above -1.*did you mean \[-9.97, -8.38, -6.64\]"):
        load_grid(path)
    path.write_text(path.read_text().replace("lr_log2 = [0.001, 0.003, 0.01]", "lr_log2 = [-1, 0, 1]"))
    assert load_grid(path).lr_log2 == (-1.0, 0.0, 1.0)  # high rates on purpose: one value at or below -1
