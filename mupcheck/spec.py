"""The experiment's specification: a grid file, validated, and the runs it expands into.

    grid = load_grid("grids/smoke.toml")      # GridError naming the file and key on any mistake
    for cfg in run_configs(grid): ...         # one RunConfig per (parametrization, width, tokens, lr, seed)

Every TOML key is declared once, as a field of `RunSettings` (what every run of the grid shares),
`Grid` (the axes of the sweep and how it runs) or the `[transfer]` / `[coord_check]` tables, with its
check in the field's metadata. `parse_grid` walks those fields, so a new hyperparameter is one line
here; `RunConfig` is `RunSettings` plus one value of each axis, and everything derived (learning rate,
step count, weight decay) is computed from it, never configured twice.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mupcheck.errors import GridError, ModelError
from mupcheck.fmt import format_tokens

__all__ = [
    "AXES",
    "BACKENDS",
    "BUILTIN_MODELS",
    "Cell",
    "LR_BATCH_RULES",
    "factory_takes",
    "CoordCheckConfig",
    "Grid",
    "LINT_CODES",
    "Parametrization",
    "RunConfig",
    "LintSettings",
    "RefineSettings",
    "ResultsSettings",
    "RunSettings",
    "StabilitySettings",
    "SWEEP_KEYS",
    "TransferSettings",
    "arm_config",
    "setting_default",
    "sweep_value",
    "swept_quantity",
    "coord_widths",
    "import_factory",
    "load_grid",
    "parse_grid",
    "run_configs",
]

# "custom": the model applies muP itself (hand-written muP); mupcheck neither sets base shapes nor wraps
# its optimizer, and judges it as the muP arm.
Parametrization = Literal["mup", "sp", "custom"]
BUILTIN_MODELS = ("mlp", "gpt")
PARAMETRIZATIONS: tuple[Parametrization, ...] = ("mup", "sp", "custom")
# The arms that promise a width-free optimum; the checks of muP (lint, coordinate check, wider is better)
# apply to them.
MUP_ARMS: tuple[Parametrization, ...] = ("mup", "custom")
BUILTIN_OPTIMIZERS = ("adamw", "sgd")
# Where runs train: "local" (processes on this machine) or "ray" (tasks on a Ray cluster).
BACKENDS = ("local", "ray")
# The muP lint's findings (mupcheck.checks.lint), which a grid's `[lint] ignore` may name.
LINT_CODES = ("no-infshape", "unit-multipliers", "plain-readout", "not-mup-optimizer", "base-width-mismatch")
# log2 learning rates a grid may list: 2^-64 is below float32's resolution of any weight, 2^16 far above any
# rate that trains; outside, the arithmetic overflows (2^1000 raised OverflowError in training).
LR_LOG2_RANGE = (-64.0, 16.0)
# Axes a grid can vary along; the transfer suite compares optima along each of them. A cell is one value of
# each (and a parametrization); `depths` and `batch_sizes` default to the scalar `depth` and `batch_size`.
AXES = ("width", "tokens", "depth", "batch_size")
# How the optimal rate is expected to move with the batch size: lr*(B) = lr*(B_ref) * (B / B_ref)^exponent.
# "sqrt" (Adam, Malladi et al., arXiv 2205.10287), "linear" (SGD, Goyal et al., arXiv 1706.02677), "fit":
# the exponent fitted on the two smallest batch sizes and checked on the others.
LR_BATCH_RULES = {"none": 0.0, "sqrt": 0.5, "linear": 1.0, "fit": math.nan}
# Hyperparameters a grid can sweep besides the learning rate (`sweep = "output_mult"`, `sweep_log2 = [...]`):
# those Tensor Programs V (arXiv 2203.03466, Table 1) lists as transferable under muP. A run at x takes the key
# at 2^x, except adam_beta2, swept through 1 - beta2 = 2^x (x = -10: beta2 = 0.999), its timescale.
SWEEP_KEYS = ("output_mult", "init_std_mult", "weight_decay", "adam_beta2", "adam_eps")
# The keys the model applies (a user's factory must take them as keywords); the others are the optimizer's.
MODEL_SWEEP_KEYS = ("output_mult", "init_std_mult")


def sweep_value(key: str, x: float) -> float:
    """The value of the swept key `key` at log2 coordinate x (SWEEP_KEYS says how each key is swept)."""
    return 1.0 - 2.0**x if key == "adam_beta2" else 2.0**x


def swept_quantity(key: str) -> str:
    """What 2^x is for a swept key, as messages and plots name it: the key, or "1 - adam_beta2"."""
    return "1 - adam_beta2" if key == "adam_beta2" else key


class Cell(NamedTuple):
    """One cell of a grid: a parametrization and one value of each axis (AXES). Depth and batch size are 0 in a
    frame that does not record them (a user's own frame given to `assert_transfer`)."""

    parametrization: str
    width: int
    tokens: int
    depth: int = 0
    batch_size: int = 0

    def where(self, shown: tuple[str, ...] = ("depth", "batch_size")) -> str:
        """'mup width=64 tokens=1M', with depth and batch size when recorded and `shown` (a grid that varies
        neither need not repeat them in every line)."""
        text = f"{self.parametrization} width={self.width} tokens={format_tokens(self.tokens)}"
        return text + (f" depth={self.depth}" if self.depth and "depth" in shown else "") + (
            f" batch={self.batch_size}" if self.batch_size and "batch_size" in shown else "")



# An expected break names an axis, or a parametrization and an axis ("sp:width": the SP control).
EXPECT_BREAK_CHOICES = AXES + tuple(f"{p}:{a}" for p in PARAMETRIZATIONS for a in AXES)
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _key(kind: str, default: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A TOML key: its kind (the `_Validator` method that checks it), default and rules (minimum, choices...)."""
    return field(default=default, metadata={"kind": kind, **rule})


def _table(kind: str, factory: Callable[[], Any] | None = None) -> Any:
    """A TOML table ([transfer], [coord_check])."""
    if factory is None:
        return field(default=None, metadata={"kind": kind})
    return field(default_factory=factory, metadata={"kind": kind})


# --- the tables ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TransferSettings:
    """How strict the transfer assertions are (the `[transfer]` table of a grid)."""

    # A comparison transfers when the 95% interval of the optimum's shift lies inside the band of shifts
    # that cost at most max_regret (relative loss) in the other cell, read off its fitted curvature;
    # tolerance_log2 fixes the band to +-tolerance instead.
    max_regret: float = _key("number", 0.005, minimum=0.0)
    tolerance_log2: float | None = _key("number", None, minimum=0.0)
    expect_break: tuple[str, ...] = _key("choice_list", (), choices=EXPECT_BREAK_CHOICES)
    # The width every other width is compared with; None: the base width if the grid has it, else the smallest.
    reference_width: int | None = _key("integer", None, minimum=1)
    # "Wider is better": at a fixed learning rate, muP's loss may rise with width by at most this fraction.
    wider_tolerance: float = _key("number", 0.01, minimum=0.0)
    # A transfer rule along tokens: "power" predicts lr*(T) = lr*(T_ref) * (T / T_ref)^-beta, with beta
    # given (lr_rule_beta) or fitted on the cells of lr_rule_fit_tokens (default: the two shortest
    # budgets); the suite then checks the rule on the other cells.
    lr_rule: Literal["none", "power"] = _key("choice", "none", choices=("none", "power"))
    lr_rule_beta: float | None = _key("number", None)
    lr_rule_fit_tokens: tuple[int, ...] = _key("int_list", (), minimum=1)
    # A transfer rule along batch size (LR_BATCH_RULES); with a rule other than "none", batch comparisons
    # also carry over lr*(B_ref) * (B / B_ref)^exponent as `rule_batch_size[...]` items.
    lr_batch_rule: Literal["none", "sqrt", "linear", "fit"] = _key("choice", "none", choices=tuple(LR_BATCH_RULES))
    # The depth every other depth is compared with; None: base_depth if the grid has it, else the smallest.
    reference_depth: int | None = _key("integer", None, minimum=1)


@dataclass(frozen=True)
class ResultsSettings:
    """`results = "runs.csv"`, or a `[results]` table: runs trained elsewhere, judged instead of trained
    (mupcheck.external)."""

    path: str = _key("string")  # a file or a glob, from the grid file's folder
    # Two rows of one run: an error, or "mean" (GPU reruns of one seed differ: averaging is a choice).
    duplicates: Literal["error", "mean"] = _key("choice", "error", choices=("error", "mean"))
    columns: tuple[tuple[str, str], ...] = _key("column_map", ())  # [results.columns]: our name = "their name"
    # Not keys: what the grid file itself set, which the results must match (settings picked, axes listed).
    picked: tuple[tuple[str, Any], ...] = ()
    listed: tuple[tuple[str, tuple[Any, ...]], ...] = ()


# What a [results.columns] table may map to: the run's coordinates and outcome, its curve, and any setting.
RESULT_COLUMNS = ("width", "tokens", "lr", "lr_log2", "seed", "loss", "parametrization", "status", "initial_loss",
                  "curve")
# The model of a results grid: nothing is built or trained.
IMPORTED_MODEL = "(results)"


@dataclass(frozen=True)
class StabilitySettings:
    """The `[stability]` table: where training stops being usable, and how far below it a transferred rate
    must stay (mupcheck.analysis.stability)."""

    # A seed's stability boundary is the lowest rate above its optimum whose final loss exceeds its best by
    # this fraction (or that diverged, or whose training was unstable). 10% is twenty times the default
    # regret band (0.5%): a run that far off is not a slightly worse choice, it is a failed run.
    boundary_rise: float = _key("number", 0.10, minimum=0.0, below=10.0)
    # The `stability[...]` items fail when the transferred rate lies less than this (log2) below the other
    # cell's boundary. Half an octave is about two seed-to-seed SDs of the boundary and of the optimum on
    # the committed CPU records (0.1-0.3 log2 each): a rate that close to the wall crosses it for some seed.
    min_margin_log2: float = _key("number", 0.5, minimum=0.0)


@dataclass(frozen=True)
class NoiseSettings:
    """The `[noise]` table: a prior for a sweep that cannot measure its own noise (one seed per cell, and too few
    cells for a law's residuals; mupcheck.analysis.noise). Seeds measured in the sweep take precedence."""

    # One seed's optimum around its cell's true optimum, log2 (SD). The committed CPU records: 0.1-0.45.
    optimum_sd_log2: float | None = _key("number", None, above=0.0)
    # One run's final loss around its seed's smooth curve, relative (SD). The committed CPU records: about 0.003.
    loss_sd: float | None = _key("number", None, above=0.0, below=1.0)


@dataclass(frozen=True)
class CoordCheckConfig:
    """The `[coord_check]` table: coordinate checks of the grid's model before any sweep."""

    widths: tuple[int, ...] = _key("int_list", (), minimum=1)  # () means the grid's widths
    steps: int = _key("integer", 4, minimum=1)
    # 3 seeds at lr 2^-9: correct muP (mup's, and written by hand) passes with margin and the SP twins still fail
    # (tests/checks/test_user_mup.py); one seed at 2^-6 flagged a correct hand-written GPT's settling sizes.
    seeds: int = _key("integer", 3, minimum=1)
    lr_log2: float = _key("number", -9.0, minimum=-64.0, maximum=16.0)
    parametrization: tuple[Parametrization, ...] = _key("choice_list", ("mup",), choices=PARAMETRIZATIONS)
    # Largest slope of log2(size) per doubling of width after step 0.
    max_growth: float = _key("number", 0.2, minimum=0.0)
    # Largest fall of log2(update size) per doubling. Looser than max_growth on purpose: at small
    # widths the init-driven part of readout and attention-logit updates shrinks as width^-1/2 under
    # correct muP (slopes near -0.45 measured at widths 16-128 on CPU); a real vanish is near -1.
    max_vanish: float = _key("number", 0.6, minimum=0.0)
    # Output-like quantities (readout logits, attention logits with fixed heads) shrink at init as
    # width^-1/2 under muP; a fan-in readout or 1/sqrt(d) attention keeps them flat (slope ~0).
    max_init_output_slope: float = _key("number", -0.25)
    min_range: float = _key("number", 8.0, minimum=1.0)  # the widths must span at least this factor


@dataclass(frozen=True)
class RefineSettings:
    """The `[refine]` table: after the coarse sweep, more learning rates around each cell's argmin."""

    step_log2: float = _key("number", 0.25, minimum=0.01)
    span_log2: float = _key("number", 1.0, minimum=0.01)  # the extra rates reach this far from the argmin


@dataclass(frozen=True)
class LintSettings:
    """The `[lint]` table: findings the grid silences, each with its reason (kept in the report)."""

    ignore: tuple[tuple[str, str], ...] = _key("reason_map", ())


# --- what every run of a grid shares, and one run ----------------------------------------------

@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Everything a run shares with the other runs of its grid. Field names are the TOML keys."""

    model: str = _key("model")
    base_width: int = _key("integer", 0, minimum=1)  # 0 until resolved: defaults to the smallest width
    depth: int = _key("integer", 2, minimum=1)
    # Residual branches scaled by (depth / base_depth)^-depth_alpha, with the learning rate and Adam epsilon of
    # the hidden (block) parameters adjusted to match: CompleteP's Table 1 (Dey et al., arXiv 2505.01618).
    # 0: no depth rule (muP alone); 0.5: depth-muP; 1: CompleteP. Built-in models only.
    depth_alpha: float = _key("number", 0.0, minimum=0.0, maximum=1.0)
    base_depth: int = _key("integer", 0, minimum=1)  # 0 until resolved: defaults to the smallest depth
    head_dim: int = _key("integer", 16, minimum=1)
    # 0: head_dim is fixed and heads grow with width; else heads are fixed and head_dim grows.
    n_heads: int = _key("integer", 0, minimum=0)
    batch_size: int = _key("integer", 16, minimum=1)
    seq_len: int = _key("integer", 128, minimum=1)
    # "adamw" (betas 0.9, 0.95), "sgd" (momentum 0.9): mup's under muP, torch's otherwise; or the model's own,
    # "pkg.mod:make_optimizer", called as make_optimizer(model, lr, weight_decay) -> torch optimizer.
    optimizer: str = _key("optimizer", "adamw")
    weight_decay: float = _key("number", 0.0, minimum=0.0)
    # How weight decay is applied: "coupled" (torch AdamW: each step shrinks weights by lr * wd),
    # "independent" (by wd, whatever the lr), or "timescale" (wd chosen per run so that the AdamW
    # timescale tau = 1 / (lr * wd) is `tau_frac` of the run's steps; Wang & Aitchison, arXiv 2405.13698).
    weight_decay_mode: Literal["coupled", "independent", "timescale"] = _key(
        "choice", "coupled", choices=("coupled", "independent", "timescale"))
    tau_frac: float = _key("number", 0.0, minimum=0.0)
    schedule: Literal["constant", "cosine", "linear", "wsd"] = _key(
        "choice", "cosine", choices=("constant", "cosine", "linear", "wsd"))
    warmup: float = _key("number", 0.05, minimum=0.0, below=1.0)
    warmup_tokens: int = _key("integer", 0, minimum=0)  # if set, warmup is this many tokens instead
    min_lr_frac: float = _key("number", 0.1, minimum=0.0, maximum=1.0)
    decay_frac: float = _key("number", 0.2, minimum=0.0, maximum=1.0)
    # "python-stdlib" by default: the same bytes on every machine with the same Python, whatever is installed
    # ("python" reads installed packages too, so installing one changes every key).
    data: str = _key("string", "python-stdlib")
    vocab_size: int = _key("integer", 0, minimum=2)  # 0: taken from the data source
    eval_tokens: int = _key("integer", 65536, minimum=1)
    readout_zero_init: bool = _key("boolean", False)
    query_zero_init: bool = _key("boolean", False)
    mlp_context: int = _key("integer", 8, minimum=1)
    # The MLP's hidden layers as residual branches (x + relu(layer(x))): what a depth rule scales.
    mlp_residual: bool = _key("boolean", False)
    # Settings a grid may also sweep (SWEEP_KEYS): the readout's output multiplier (mup's MuReadout
    # `output_mult`; SP's readout multiplies its input alike), a multiplier on every weight matrix's and
    # embedding's init std, and Adam's beta2 and epsilon (built-in optimizers).
    output_mult: float = _key("number", 1.0, above=0.0)
    init_std_mult: float = _key("number", 1.0, above=0.0)
    adam_beta2: float = _key("number", 0.95, minimum=0.0, below=1.0)
    adam_eps: float = _key("number", 1e-8, above=0.0)


@dataclass(frozen=True, kw_only=True)
class RunConfig(RunSettings):
    """One training run: the grid's shared settings and one value of each axis. Hashed (with data and
    code) into its store key."""

    parametrization: Parametrization
    width: int
    tokens: int
    lr_log2: float
    seed: int
    # The grid's swept key (SWEEP_KEYS; "" for none) and this run's coordinate on it; the key's own field
    # holds the value (`at_sweep` sets both), which is what the model and optimizer read.
    sweep: str = ""
    sweep_log2: float = 0.0

    @property
    def lr(self) -> float:
        return 2.0**self.lr_log2

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step

    @property
    def warmup_frac(self) -> float:
        """Warmup as a fraction of this run: from `warmup_tokens` when set, else `warmup`."""
        return self.warmup_tokens / self.tokens if self.warmup_tokens else self.warmup

    @property
    def coupled_weight_decay(self) -> float:
        """The AdamW/SGD weight_decay (multiplied by lr in each step) for coupled and timescale modes."""
        if self.weight_decay_mode == "timescale":
            return 1.0 / (self.lr * self.tau_frac * self.steps)
        return self.weight_decay if self.weight_decay_mode == "coupled" else 0.0

    @property
    def tau_steps(self) -> float:
        """The weight-decay timescale in steps at the peak learning rate (inf without weight decay)."""
        if self.weight_decay_mode == "independent":
            return 1.0 / self.weight_decay if self.weight_decay else math.inf
        wd = self.coupled_weight_decay
        return 1.0 / (self.lr * wd) if wd else math.inf

    def at_sweep(self, x: float) -> RunConfig:
        """This run with its swept key at coordinate x (the key's field set to `sweep_value(key, x)`)."""
        value: dict[str, Any] = {self.sweep: sweep_value(self.sweep, x)}
        return dataclasses.replace(self, sweep_log2=x, **value)

    def label(self) -> str:
        """Short human-readable name, for progress bars and messages."""
        swept = f" {self.sweep}=2^{self.sweep_log2:g}" if self.sweep else ""
        return (f"{self.model} {self.parametrization} width={self.width} depth={self.depth} "
                f"batch={self.batch_size} tokens={format_tokens(self.tokens)} lr=2^{self.lr_log2:g}{swept} "
                f"seed={self.seed}")

    @property
    def depth_multiplier(self) -> float:
        """depth / base_depth: what CompleteP's rules are powers of (1 without a depth rule)."""
        return self.depth / self.base_depth if self.depth_alpha and self.base_depth else 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class Grid(RunSettings):
    """A validated grid file: the runs' shared settings, the axes of the sweep, how it runs, and what
    the suite asserts. Field names are the TOML keys."""

    name: str = _key("string", pattern=r"^[\w.-]+$", allowed="letters, digits, '_', '-', '.'")
    widths: tuple[int, ...] = _key("int_list", minimum=1)
    tokens: tuple[int, ...] = _key("int_list", minimum=1)
    # Axes beside width and tokens; () means the scalar `depth` / `batch_size` alone.
    depths: tuple[int, ...] = _key("int_list", (), minimum=1)
    batch_sizes: tuple[int, ...] = _key("int_list", (), minimum=1)
    lr_log2: tuple[float, ...] = _key("float_list", minimum=LR_LOG2_RANGE[0], maximum=LR_LOG2_RANGE[1])
    # Another hyperparameter swept on a log2 grid (SWEEP_KEYS), alone (one lr_log2 value) or jointly with the
    # learning rate (several): its optimum per cell is judged like the learning rate's.
    sweep: str = _key("choice", "", choices=SWEEP_KEYS)
    sweep_log2: tuple[float, ...] = _key("float_list", (), minimum=LR_LOG2_RANGE[0], maximum=LR_LOG2_RANGE[1],
                                         what="log2 values of the swept key")
    parametrization: tuple[Parametrization, ...] = _key("choice_list", ("mup", "sp"), choices=PARAMETRIZATIONS)
    seeds: tuple[int, ...] = _key("int_list", (0,), minimum=0)
    device: str = _key("string", "auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
                       allowed="auto, cpu, cuda, cuda:N, mps")
    # Runs trained together as one batched model (they differ only in lr, seed, tokens); 0: automatic
    # (32 on CUDA, 1 elsewhere, where batching is slower than a loop); 1: one at a time.
    fuse: int = _key("integer", 0, minimum=0)
    # torch.compile the fused model and update: faster steps, but tens of seconds to compile each group.
    compile: bool = _key("boolean", False)
    backend: str = _key("choice", "local", choices=BACKENDS)  # where runs train (BACKENDS)
    transfer: TransferSettings = _table("transfer", TransferSettings)
    stability: StabilitySettings = _table("stability", StabilitySettings)
    coord_check: CoordCheckConfig | None = _table("coord_check")
    refine: RefineSettings | None = _table("refine")
    lint: LintSettings | None = _table("lint")
    noise: NoiseSettings = _table("noise", NoiseSettings)
    results: ResultsSettings | None = _table("results")
    sp_model: str | None = None  # the SP arm's own factory (model = {mup = ..., sp = ...}); not a key itself
    # Per-arm rates and optimizers (lr_log2 = {mup = [...], sp = [...]}, optimizer = {...}); not keys themselves:
    # `lr_log2` then holds the union of the arms' rates and `optimizer` the muP arm's.
    arm_lr_log2: tuple[tuple[str, tuple[float, ...]], ...] = ()
    arm_optimizer: tuple[tuple[str, str], ...] = ()
    path: str = ""  # the file it came from, for messages and provenance (not a TOML key)

    @property
    def grid_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def values(self, axis: str) -> tuple[int, ...]:
        """The values the grid takes along an axis of AXES."""
        return {"width": self.widths, "tokens": self.tokens, "depth": self.depths or (self.depth,),
                "batch_size": self.batch_sizes or (self.batch_size,)}[axis]

    def slices(self) -> list[tuple[int, int, tuple[tuple[str, int], ...]]]:
        """(depth, batch size, the pairs naming them) for each combination of the grid's depths and batch
        sizes; the pairs hold only the axes the grid varies (empty for a grid that varies neither)."""
        out = []
        for d in self.values("depth"):
            for b in self.values("batch_size"):
                named = tuple((a, v) for a, v in (("depth", d), ("batch_size", b)) if len(self.values(a)) > 1)
                out.append((d, b, named))
        return out

    @property
    def varied_axes(self) -> tuple[str, ...]:
        """The axes with more than one value, in AXES order."""
        return tuple(a for a in AXES if len(self.values(a)) > 1)

    def rates_of(self, arm: str) -> tuple[float, ...]:
        """The learning rates (log2) the arm sweeps: its own list, or the grid's."""
        return dict(self.arm_lr_log2).get(arm, self.lr_log2)

    def optimizer_of(self, arm: str) -> str:
        """The optimizer the arm trains with: its own, or the grid's."""
        return dict(self.arm_optimizer).get(arm, self.optimizer)

    @property
    def tuned(self) -> str:
        """What each cell's curve runs along and its optimum is found of: the swept key when the grid sweeps
        one, else "lr"."""
        return self.sweep or "lr"

    @property
    def joint(self) -> bool:
        """The grid sweeps another key and the learning rate together (several values of each)."""
        return bool(self.sweep) and any(len(self.rates_of(p)) > 1 for p in self.parametrization)

    @property
    def imported(self) -> bool:
        """The grid judges results trained elsewhere (`results = ...`) instead of training a model."""
        return self.results is not None

    @property
    def mup_arm(self) -> Parametrization | None:
        """The grid's muP arm: "mup" (mupcheck applies mup) or "custom" (the model does), if it has one."""
        return next((p for p in self.parametrization if p in MUP_ARMS), None)

    @property
    def settings(self) -> RunSettings:
        """What every run of this grid shares."""
        return RunSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)})


def setting_default(name: str) -> Any:
    """The default of a RunSettings field (what a grid that does not set the key gets)."""
    return RunSettings.__dataclass_fields__[name].default


def run_configs(grid: Grid) -> list[RunConfig]:
    """Expand a grid into its runs, ordered by parametrization, depth, batch size, width, tokens, lr, seed and
    the swept key's value."""
    shared = {f.name: getattr(grid, f.name) for f in dataclasses.fields(RunSettings)}
    out = []
    for par in grid.parametrization:
        arm = {**shared, "optimizer": grid.optimizer_of(par)}
        if par == "sp" and grid.sp_model:
            arm["model"] = grid.sp_model
        for d in grid.values("depth"):
            for b in grid.values("batch_size"):
                slice_ = {**arm, "depth": d, "batch_size": b}
                out += [RunConfig(parametrization=par, width=w, tokens=t, lr_log2=lr, seed=s, **slice_)
                        for w in grid.widths for t in grid.tokens for lr in grid.rates_of(par) for s in grid.seeds]
    if grid.sweep:  # every run above at every value of the swept key (the innermost loop)
        out = [dataclasses.replace(cfg, sweep=grid.sweep).at_sweep(x) for cfg in out for x in grid.sweep_log2]
    return out


def arm_config(grid: Grid, parametrization: str) -> RunConfig:
    """The arm's first run, with a swept key at the grid's own setting (its default: a grid that sweeps a key
    does not set it): the model the lint and the coordinate check look at."""
    configs = run_configs(grid)
    cfg = next((c for c in configs if c.parametrization == parametrization), configs[0])
    if not cfg.sweep:
        return cfg
    value: dict[str, Any] = {cfg.sweep: getattr(grid, cfg.sweep)}
    return dataclasses.replace(cfg, sweep="", sweep_log2=0.0, **value)


def coord_widths(grid: Grid) -> tuple[int, ...]:
    """The widths of the grid's coordinate check: its own, else the grid's."""
    return grid.coord_check.widths if grid.coord_check and grid.coord_check.widths else grid.widths


def import_factory(spec: str) -> Callable[..., Any]:
    """Import a user model factory written 'package.module:function'; ModelError says why it cannot be."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user module may raise anything at import
        raise ModelError(f"cannot import {module_name!r} (run from the directory that holds it, or install it): "
                         f"{type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"module {module_name!r} has no callable {attr!r}")
    return factory


# --- parsing -----------------------------------------------------------------------------------

def _toml_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if "kind" in f.metadata}


_REQUIRED = ("name", "model", "widths", "tokens", "lr_log2")


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file. Raises `GridError` naming the file and key on any mistake."""
    return parse_grid(_read_raw(Path(path), ()), str(path))


def _read_raw(p: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The file's table, with `extends = "other.toml"` resolved: its keys override the other file's,
    table by table, so that a variant of a grid states only what differs."""
    if not p.is_file():
        raise GridError(str(p), None, "no such grid file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GridError(str(p), None, f"not valid TOML: {e}") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise GridError(str(p), "extends", f"must be the path of another grid file, got {parent!r}")
    parent_path = (p.parent / parent).resolve()
    if parent_path in (*seen, p.resolve()):
        raise GridError(str(p), "extends", f"{parent} extends this file again (a cycle)")
    if not parent_path.is_file():
        raise GridError(str(p), "extends", f"no grid file {parent} (paths are taken from this file's folder)")
    base = _read_raw(parent_path, (*seen, p.resolve()))
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def parse_grid(raw: dict[str, Any], path: str = "<grid>") -> Grid:
    """Validate a parsed TOML table into a `Grid`."""
    allowed = _toml_fields(Grid)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise GridError(path, unknown[0], f"unknown key; allowed keys: {', '.join(sorted(allowed))}")
    if "results" in raw:
        return _parse_results_grid(raw, path)
    for required in _REQUIRED:
        if required not in raw:
            raise GridError(path, required, "required key is missing")
    raw, sp_model = _split_model_table(raw, path)
    raw, arm_rates = _split_arm_table(raw, path, "lr_log2")
    raw, arm_optimizers = _split_arm_table(raw, path, "optimizer")
    values = _Validator(path, raw).fields(Grid)
    values.setdefault("base_width", min(values["widths"]))
    if "depth" not in raw and "depths" not in raw:
        values["depth"] = _factory_depth(values["model"])
    _resolve_axis(values, raw, path, "depths", "depth")
    _resolve_axis(values, raw, path, "batch_sizes", "batch_size")
    values.setdefault("base_depth", min(values["depths"]))
    grid = Grid(path=path, sp_model=sp_model, arm_lr_log2=arm_rates, arm_optimizer=arm_optimizers, **values)
    _check_combinations(grid, raw)
    return grid


def _resolve_axis(values: dict[str, Any], raw: dict[str, Any], path: str, axis: str, scalar: str) -> None:
    """`depths = [...]` or the scalar `depth` (and so for batch sizes): one of them, never both. The scalar
    then holds the smallest value (what a coordinate check and the lint build)."""
    if axis in raw and scalar in raw:
        raise GridError(path, axis, f"set either `{scalar}` (one value) or `{axis}` (an axis to sweep), not both")
    if axis in values:
        values[scalar] = values[axis][0]
    else:
        values[axis] = (values.get(scalar, setting_default(scalar)),)


# The axes a results grid may list (else they are read off its results) and the settings its rows are picked by.
_RESULT_AXES = ("widths", "tokens", "lr_log2", "seeds", "parametrization")


def _parse_results_grid(raw: dict[str, Any], path: str) -> Grid:
    """A grid of results trained elsewhere: `name` and `results` are required; the axes it does not list are
    read off the results (mupcheck.external reads them, which imports pandas: only for such grids)."""
    from mupcheck import external  # here, not at the top: pandas costs 0.8 s at every pytest collection

    if "name" not in raw:
        raise GridError(path, "name", "required key is missing")
    if "model" in raw:
        raise GridError(path, "model", "a grid trains a model or reads `results` trained elsewhere, not both")
    for key in ("coord_check", "lint"):
        if key in raw:
            raise GridError(path, key, "needs a model to check; a results grid has none")
    for key in ("depths", "batch_sizes", "depth_alpha"):
        if key in raw:
            raise GridError(path, key, "a results grid judges one depth and one batch size (pick them with `depth` "
                                       "and `batch_size`); sweeping them is for grids that train")
    for key in ("sweep", "sweep_log2"):
        if key in raw:
            raise GridError(path, key, "a results grid judges the learning rate's optimum; sweeping another key is "
                                       "for grids that train")
    values = _Validator(path, raw).fields(Grid)
    settings: ResultsSettings = values.pop("results")
    picked = tuple(sorted((k, raw[k]) for k in (f.name for f in dataclasses.fields(RunSettings)) if k in raw))
    listed = tuple((k, values[k]) for k in _RESULT_AXES if k in values)
    settings = dataclasses.replace(settings, picked=picked, listed=listed)
    found = external.read_results(settings.path, Path(path).parent, path, dict(settings.columns),
                                  settings.duplicates, dict(picked), dict(listed))
    derived = external.derived_axes(found.frame)
    for axis in _RESULT_AXES:
        values.setdefault(axis, derived[axis])
    for scalar in ("depth", "batch_size"):  # a setting the results record once: what the report shows
        if scalar not in values and scalar in found.frame and found.frame[scalar].nunique() == 1:
            values[scalar] = int(found.frame[scalar].iloc[0])
    values.setdefault("base_width", min(values["widths"]))
    _resolve_axis(values, raw, path, "depths", "depth")
    _resolve_axis(values, raw, path, "batch_sizes", "batch_size")
    values.setdefault("base_depth", values["depths"][0])
    grid = Grid(path=path, model=IMPORTED_MODEL, results=settings, **values)
    _check_transfer(grid)
    return grid


def _split_arm_table(raw: dict[str, Any], path: str, key: str) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """`lr_log2 = {mup = [...], sp = [...]}` or `optimizer = {custom = "pkg:opt", sp = "adamw"}`: one value per
    arm, each checked as the plain key would be. The plain key then holds the union of the rates (what the
    report and the plots span) or the muP arm's optimizer. Issue 26: u-muP's optimum lies 7-8 octaves above
    its SP twin's, and its optimizer refuses the SP model, so one list and one optimizer cannot serve both."""
    table = raw.get(key)
    if not isinstance(table, dict):
        return raw, ()
    pars = raw.get("parametrization", ["mup", "sp"])
    if not isinstance(pars, list) or set(table) != set(pars):
        raise GridError(path, key, f"a table gives one value per arm of `parametrization` ({pars}), got arms "
                                   f"{sorted(table)}")
    checked = {arm: _Validator(path, {f"{key}.{arm}": value}).fields_of(f"{key}.{arm}", key) for arm, value in
               table.items()}
    if key == "lr_log2":
        union = sorted({x for values in checked.values() for x in values})
        return {**raw, key: union}, tuple((arm, tuple(checked[arm])) for arm in pars)
    main_arm = next((arm for arm in pars if arm in MUP_ARMS), pars[0])
    return {**raw, key: table[main_arm]}, tuple((arm, checked[arm]) for arm in pars)


def _split_model_table(raw: dict[str, Any], path: str) -> tuple[dict[str, Any], str | None]:
    """`model = {mup = "pkg:build", sp = "pkg:build_sp"}` (or custom instead of mup): the muP arm's factory
    as `model`, and the SP arm's own factory."""
    table = raw["model"]
    if not isinstance(table, dict):
        return raw, None
    if set(table) not in ({"mup", "sp"}, {"custom", "sp"}):
        raise GridError(path, "model", "a table gives one factory per arm: {mup = \"pkg:build\", sp = "
                                       f"\"pkg:build_sp\"}} (or custom instead of mup), got keys {sorted(table)}")
    for arm, spec in table.items():
        if not isinstance(spec, str) or not _FACTORY_RE.match(spec):
            raise GridError(path, f"model.{arm}", f"must be a factory written 'package.module:function', got {spec!r}")
    main = table.get("mup") or table["custom"]
    return {**raw, "model": main}, table["sp"]


class _Validator:
    """Type and range checks for the keys of one table; each failure names the key and what is allowed."""

    def __init__(self, path: str, raw: dict[str, Any], prefix: str = ""):
        self.path, self.raw, self.prefix = path, raw, prefix

    def fields(self, cls: type) -> dict[str, Any]:
        """The keys of `cls` present in this table, each checked as its field's metadata says."""
        out = {}
        for name, f in _toml_fields(cls).items():
            if name not in self.raw:
                continue
            rule = {k: v for k, v in f.metadata.items() if k != "kind"}
            value = getattr(self, f.metadata["kind"])(name, **rule)
            if value is not None:
                out[name] = value
        return out

    def fields_of(self, key: str, field_name: str) -> Any:
        """The value under `key` checked as the Grid field `field_name` is (for per-arm tables)."""
        f = _toml_fields(Grid)[field_name]
        rule = {k: v for k, v in f.metadata.items() if k != "kind"}
        return getattr(self, f.metadata["kind"])(key, **rule)

    def fail(self, key: str, message: str) -> GridError:
        return GridError(self.path, self.prefix + key, message)

    def string(self, key: str, pattern: str | None = None, allowed: str = "") -> str:
        val = self.raw[key]
        if not isinstance(val, str) or not val:
            raise self.fail(key, f"must be a non-empty string, got {val!r}")
        if pattern and not re.match(pattern, val):
            raise self.fail(key, f"{val!r} is not allowed; use {allowed}")
        return val

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        val = self.raw[key]
        if val not in choices:
            raise self.fail(key, f"must be one of {', '.join(map(repr, choices))}, got {val!r}")
        return val

    def boolean(self, key: str) -> bool:
        val = self.raw[key]
        if not isinstance(val, bool):
            raise self.fail(key, f"must be true or false, got {val!r}")
        return val

    def integer(self, key: str, minimum: int | None = None) -> int:
        val = self.raw[key]
        if not _is_int(val):
            raise self.fail(key, f"must be an integer, got {val!r}")
        if minimum is not None and val < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {val}")
        return val

    def number(self, key: str, minimum: float | None = None, maximum: float | None = None,
               below: float | None = None, above: float | None = None) -> float:
        val = self.raw[key]
        if not _is_number(val) or not math.isfinite(val):
            raise self.fail(key, f"must be a finite number, got {val!r}")
        if above is not None and val <= above:
            raise self.fail(key, f"must be > {above}, got {val}")
        if minimum is not None and val < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {val}")
        if maximum is not None and val > maximum:
            raise self.fail(key, f"must be <= {maximum}, got {val}")
        if below is not None and val >= below:
            raise self.fail(key, f"must be < {below}, got {val}")
        return float(val)

    def _list(self, key: str, kind: str) -> list:
        val = self.raw[key]
        if not isinstance(val, list) or not val:
            raise self.fail(key, f"must be a non-empty list of {kind}, got {val!r}")
        return val

    def _sorted(self, key: str, vals: list) -> None:
        if any(b <= a for a, b in zip(vals, vals[1:])):
            raise self.fail(key, f"must be strictly increasing (sorted, no repeats), got {vals}")

    def int_list(self, key: str, minimum: int) -> tuple[int, ...]:
        vals = self._list(key, "integers")
        bad = [x for x in vals if not _is_int(x) or x < minimum]
        if bad:
            raise self.fail(key, f"must hold integers >= {minimum}, got {bad[0]!r}")
        self._sorted(key, vals)
        return tuple(vals)

    def float_list(self, key: str, minimum: float = -math.inf, maximum: float = math.inf,
                   what: str = "log2 learning rates") -> tuple[float, ...]:
        vals = self._list(key, "numbers")
        bad = [x for x in vals if not _is_number(x) or not math.isfinite(x)]
        if bad:
            raise self.fail(key, f"must hold finite numbers ({what}), got {bad[0]!r}")
        far = [x for x in vals if not minimum <= x <= maximum]
        if far:
            raise self.fail(key, f"must hold {what} between {minimum:g} and {maximum:g} (2^{minimum:g} .. "
                                 f"2^{maximum:g}), got {far[0]!r}")
        self._sorted(key, vals)
        return tuple(float(x) for x in vals)

    def choice_list(self, key: str, choices: tuple[str, ...]) -> tuple[str, ...]:
        vals = self._list(key, "strings")
        bad = [x for x in vals if x not in choices]
        if bad:
            raise self.fail(key, f"allowed values are {', '.join(map(repr, choices))}, got {bad[0]!r}")
        if len(set(vals)) != len(vals):
            raise self.fail(key, f"has repeated values: {vals}")
        return tuple(vals)

    def model(self, key: str) -> str:
        val = self.string(key)
        if val not in BUILTIN_MODELS and not _FACTORY_RE.match(val):
            raise self.fail(key, f"{val!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                                 "nor a factory written 'package.module:function'")
        return val

    def optimizer(self, key: str) -> str:
        val = self.string(key)
        if val not in BUILTIN_OPTIMIZERS and not _FACTORY_RE.match(val):
            raise self.fail(key, f"{val!r} is neither {' nor '.join(map(repr, BUILTIN_OPTIMIZERS))} nor the model's "
                                 "own optimizer written 'package.module:make_optimizer'")
        return val

    def _subtable(self, name: str, cls: type) -> _Validator:
        val = self.raw[name]
        if not isinstance(val, dict):
            raise self.fail(name, f"must be a table ([{name}])")
        allowed = _toml_fields(cls)
        unknown = sorted(set(val) - set(allowed))
        if unknown:
            raise self.fail(f"{name}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return _Validator(self.path, val, prefix=f"{self.prefix}{name}.")

    def transfer(self, key: str) -> TransferSettings:
        return TransferSettings(**self._subtable(key, TransferSettings).fields(TransferSettings))

    def stability(self, key: str) -> StabilitySettings:
        return StabilitySettings(**self._subtable(key, StabilitySettings).fields(StabilitySettings))

    def coord_check(self, key: str) -> CoordCheckConfig:
        return CoordCheckConfig(**self._subtable(key, CoordCheckConfig).fields(CoordCheckConfig))

    def lint(self, key: str) -> LintSettings:
        return LintSettings(**self._subtable(key, LintSettings).fields(LintSettings))

    def reason_map(self, key: str) -> tuple[tuple[str, str], ...]:
        val = self.raw[key]
        if not isinstance(val, dict):
            raise self.fail(key, 'must be a table of finding = "reason", e.g. {"plain-readout" = "our head divides '
                                 'by width in forward"}')
        for code, reason in val.items():
            if code not in LINT_CODES:
                raise self.fail(f"{key}.{code}", f"unknown finding; one of {', '.join(LINT_CODES)}")
            if not isinstance(reason, str) or not reason.strip():
                raise self.fail(f"{key}.{code}", "needs the reason it is silenced, as a non-empty string")
        return tuple(sorted(val.items()))

    def results(self, key: str) -> ResultsSettings:
        val = self.raw[key]
        if isinstance(val, str):
            return ResultsSettings(path=self.string(key))
        if not isinstance(val, dict):
            raise self.fail(key, 'must be the path of a results file (results = "runs.csv") or a [results] table '
                                 "with `path`")
        table = self._subtable(key, ResultsSettings)
        if "path" not in val:
            raise self.fail(f"{key}.path", "required key is missing: the results file (or a glob), from the grid "
                                           "file's folder")
        return ResultsSettings(**table.fields(ResultsSettings))

    def column_map(self, key: str) -> tuple[tuple[str, str], ...]:
        val = self.raw[key]
        if not isinstance(val, dict):
            raise self.fail(key, 'must be a table of our name = "their column", e.g. lr = "config.lr"')
        allowed = set(RESULT_COLUMNS) | {f.name for f in dataclasses.fields(RunSettings)}
        for ours, theirs in val.items():
            if ours not in allowed:
                raise self.fail(f"{key}.{ours}", f"not a column mupcheck reads; one of {', '.join(RESULT_COLUMNS)}, "
                                                 "or a grid setting (schedule, depth, ...)")
            if not isinstance(theirs, str) or not theirs:
                raise self.fail(f"{key}.{ours}", f"must be the name of a column in the results, got {theirs!r}")
        return tuple(sorted(val.items()))

    def refine(self, key: str) -> RefineSettings:
        return RefineSettings(**self._subtable(key, RefineSettings).fields(RefineSettings))

    def noise(self, key: str) -> NoiseSettings:
        return NoiseSettings(**self._subtable(key, NoiseSettings).fields(NoiseSettings))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_combinations(g: Grid, raw: dict[str, Any]) -> None:
    """Cross-key checks: things each valid alone but impossible together."""
    p = g.path
    _check_heads_divide(g, (*g.widths, g.base_width), key=None)
    batch = max(g.values("batch_size"))
    for budget in g.tokens:
        steps = budget // (batch * g.seq_len)
        if steps < 10:
            raise GridError(p, "tokens", f"budget {budget} gives {steps} steps of batch_size*seq_len="
                                         f"{batch * g.seq_len} tokens; at least 10 steps are needed")
    _check_depth(g, raw)
    _check_sweep(g, raw)
    if g.warmup_tokens and "warmup" in raw:
        raise GridError(p, "warmup_tokens", "set either `warmup` (a fraction of the run) or `warmup_tokens`, not both")
    if g.warmup_tokens >= min(g.tokens):
        raise GridError(p, "warmup_tokens", f"{g.warmup_tokens} is not below the smallest token budget {min(g.tokens)}")
    worst_warmup = g.warmup_tokens / min(g.tokens) if g.warmup_tokens else g.warmup
    if g.schedule == "wsd" and g.decay_frac + worst_warmup > 1.0:
        raise GridError(p, "decay_frac", f"warmup ({worst_warmup:g} of the run) + decay_frac ({g.decay_frac}) "
                                         "exceed the whole run")
    if g.weight_decay_mode == "timescale":
        if g.tau_frac <= 0:
            raise GridError(p, "tau_frac", "weight_decay_mode = \"timescale\" needs tau_frac > 0 (tau as a fraction "
                                           "of the run's steps, e.g. 0.2)")
        if g.weight_decay:
            raise GridError(p, "weight_decay", "is chosen per run under weight_decay_mode = \"timescale\"; leave it 0")
    elif g.tau_frac:
        raise GridError(p, "tau_frac", "only applies with weight_decay_mode = \"timescale\"")
    if g.model == "mlp" and g.mlp_context > g.seq_len:
        raise GridError(p, "mlp_context", f"must be <= seq_len ({g.seq_len}), got {g.mlp_context}")
    _check_transfer(g)
    if g.coord_check is not None:
        widths = coord_widths(g)
        if widths[-1] / widths[0] < g.coord_check.min_range:
            raise GridError(p, "coord_check.widths", f"must span at least {g.coord_check.min_range:g}x "
                                                     f"(got {widths[0]}..{widths[-1]}); set [coord_check] widths")
        _check_heads_divide(g, widths, key="coord_check.widths")
    optimizers = [(f"optimizer.{arm}", spec) for arm, spec in g.arm_optimizer] or [("optimizer", g.optimizer)]
    for key, spec in (("model", g.model), ("model.sp", g.sp_model), *optimizers):
        if spec is None or spec in BUILTIN_MODELS + BUILTIN_OPTIMIZERS:
            continue
        try:
            import_factory(spec)
        except ModelError as e:
            raise GridError(p, key, str(e)) from None
    _check_arms(g)


def _check_depth(g: Grid, raw: dict[str, Any]) -> None:
    """A depth rule needs the built-in models (a user's model applies its own), and a depth axis needs a
    factory that takes `depth`."""
    p = g.path
    if g.depth_alpha and g.model not in BUILTIN_MODELS:
        raise GridError(p, "depth_alpha", "applies to the built-in models; your own model scales its residual "
                                          "branches itself (give its factory a `depth` parameter)")
    if g.depth_alpha and g.model == "mlp" and not g.mlp_residual:
        raise GridError(p, "depth_alpha", "scales residual branches, and the MLP has none by default: set "
                                          "mlp_residual = true (and compare against depth_alpha = 0 with it too)")
    if "base_depth" in raw and not g.depth_alpha:
        raise GridError(p, "base_depth", "only matters with a depth rule (depth_alpha > 0)")
    lacking = _factory_without(g, "depth") if len(g.values("depth")) > 1 else None
    if lacking:
        raise GridError(p, "depths", f"the factory {lacking} takes no `depth`: write it build(width, depth) "
                                     "(mupcheck calls build(width, depth=d) for each depth)")
    ref = g.transfer.reference_depth
    if ref is not None and ref not in g.values("depth"):
        raise GridError(p, "transfer.reference_depth", f"{ref} is not one of the grid's depths {g.values('depth')}")
    if g.transfer.lr_batch_rule == "fit" and len(g.values("batch_size")) < 3:
        raise GridError(p, "transfer.lr_batch_rule", "\"fit\" fits the exponent on the two smallest batch sizes and "
                                                     "checks it on the others: it needs at least 3 batch_sizes")
    if g.transfer.lr_batch_rule != "none" and len(g.values("batch_size")) < 2:
        raise GridError(p, "transfer.lr_batch_rule", "needs a batch-size axis: batch_sizes = [...] with 2 or more")


def _check_sweep(g: Grid, raw: dict[str, Any]) -> None:
    """A swept key needs its values, one home (not also set as a scalar), a model or optimizer that applies
    it, and checks that judge its optimum (the rules along tokens and batch size predict learning rates)."""
    p, key = g.path, g.sweep
    if "sweep_log2" in raw and not key:
        raise GridError(p, "sweep_log2", f"lists values of a swept key: name it, sweep = one of "
                                         f"{', '.join(SWEEP_KEYS)}")
    if not key:
        for name in MODEL_SWEEP_KEYS:
            if name in raw:
                _check_model_takes(g, name, name)
        return
    if "sweep_log2" not in raw:
        raise GridError(p, "sweep_log2", f"required key is missing: the log2 values of {key} to sweep (sweep = "
                                         f"{key!r})")
    if key in raw:
        raise GridError(p, key, f"is swept (sweep = {key!r}, sweep_log2): set its values there, not also here")
    if key == "adam_beta2" and max(g.sweep_log2) >= 0:
        raise GridError(p, "sweep_log2", f"adam_beta2 is swept as 1 - beta2 = 2^x, so x must be < 0 (x = -10 is "
                                         f"beta2 = 0.999), got {max(g.sweep_log2):g}")
    if key in ("adam_beta2", "adam_eps"):
        other = sorted({g.optimizer_of(a) for a in g.parametrization} - {"adamw"})
        if other:
            raise GridError(p, "sweep", f"{key} is the built-in AdamW's setting; this grid trains with {other[0]!r}")
    if key == "weight_decay" and g.weight_decay_mode == "timescale":
        raise GridError(p, "sweep", "weight_decay is chosen per run under weight_decay_mode = \"timescale\"; sweep "
                                    "it under \"coupled\" or \"independent\"")
    if key in MODEL_SWEEP_KEYS:
        _check_model_takes(g, key, "sweep")
    for name, active in (("transfer.lr_rule", g.transfer.lr_rule != "none"),
                         ("transfer.lr_batch_rule", g.transfer.lr_batch_rule != "none")):
        if active:
            raise GridError(p, name, f"predicts the learning rate's optimum; this grid judges {key}'s (sweep = "
                                     f"{key!r}): drop the rule, or sweep the learning rate alone")
    if g.refine is not None and g.joint:
        raise GridError(p, "refine", f"refines one swept key's curve; this grid sweeps lr_log2 and {key} together: "
                                     "drop [refine], or sweep one of them (a single lr_log2 value)")


def _check_model_takes(g: Grid, key: str, where: str) -> None:
    """A key the model applies must be taken by a user factory (the built-in models take them all)."""
    lacking = _factory_without(g, key)
    if lacking:
        raise GridError(g.path, where, f"the factory {lacking} takes no `{key}`: mupcheck applies {key} through the "
                                       f"model's factory, called as build(width, {key}=value)")


def _factory_without(g: Grid, key: str) -> str | None:
    """The first of the grid's own factories (its model, its SP arm's) that does not take the keyword `key`;
    None when every one does, or the model is built in."""
    return next((spec for spec in (g.model, g.sp_model) if spec is not None and spec not in BUILTIN_MODELS
                 and not factory_takes(import_factory(spec), key)), None)


def _factory_depth(model: str) -> int:
    """The depth a grid that sets none builds: the user's factory's own default for `depth` when it has one
    (mupcheck passes `depth` to a factory that takes it, and must not override the factory's choice unasked),
    else RunSettings' default."""
    default: int = setting_default("depth")
    if model in BUILTIN_MODELS:
        return default
    try:
        param = inspect.signature(import_factory(model)).parameters.get("depth")
    except (ModelError, TypeError, ValueError):
        return default  # the checks below say what is wrong with the factory
    return param.default if param is not None and _is_int(param.default) and param.default >= 1 else default


def factory_takes(factory: Callable[..., Any], name: str) -> bool:
    """Whether a model factory accepts the keyword `name` (or **kwargs)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(q.name == name or q.kind is inspect.Parameter.VAR_KEYWORD for q in params)


def _check_arms(g: Grid) -> None:
    """What each parametrization needs of the model."""
    p, user = g.path, g.model not in BUILTIN_MODELS
    if "custom" in g.parametrization and not user:
        raise GridError(p, "parametrization", "\"custom\" means the model applies muP itself; the built-in models "
                                              "use mup (\"mup\"): give your factory as `model`")
    if "custom" in g.parametrization and "mup" in g.parametrization:
        raise GridError(p, "parametrization", "one muP arm per grid: \"mup\" (mupcheck applies mup) or \"custom\" "
                                              "(the model does), not both")
    if "sp" in g.parametrization and user and g.sp_model is None:
        raise GridError(p, "parametrization", "\"sp\" for your own model needs its own SP factory: model = {mup = "
                                              "\"pkg:build\", sp = \"pkg:build_sp\"}. The same muP model under "
                                              "torch's optimizer is not SP (it keeps muP's init and multipliers), "
                                              "so mupcheck does not make one up")


def _check_heads_divide(g: Grid, widths: tuple[int, ...], key: str | None) -> None:
    """The GPT splits each width into heads: every width must be a multiple of head_dim (or n_heads)."""
    if g.model != "gpt":
        return
    name, divisor = ("n_heads", g.n_heads) if g.n_heads else ("head_dim", g.head_dim)
    bad = [w for w in widths if w % divisor]
    if bad:
        raise GridError(g.path, key or name, f"width {bad[0]} is not divisible by {name}={divisor}; every width "
                                             "and base_width must be a multiple of it")


def _check_transfer(g: Grid) -> None:
    t, p = g.transfer, g.path
    for entry in t.expect_break:
        axis = entry.rpartition(":")[2]
        if len(g.values(axis)) < 2:
            raise GridError(p, "transfer.expect_break", f"{entry!r}: the grid has one {axis} value; nothing to break")
    if t.reference_width is not None and t.reference_width not in g.widths:
        raise GridError(p, "transfer.reference_width",
                        f"{t.reference_width} is not one of the grid's widths {g.widths}")
    if t.lr_rule == "power" and t.lr_rule_beta is None:
        fit = t.lr_rule_fit_tokens or g.tokens[:3]
        missing = [x for x in fit if x not in g.tokens]
        if missing:
            raise GridError(p, "transfer.lr_rule_fit_tokens", f"{missing[0]} is not one of the grid's tokens")
        if len(set(fit)) < 2 or len(fit) >= len(g.tokens):
            raise GridError(p, "transfer.lr_rule_fit_tokens", "fitting beta needs at least 2 token budgets, and at "
                                                              "least one budget left out to test the rule on")
