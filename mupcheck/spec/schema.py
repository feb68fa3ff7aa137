"""The grid's schema: every TOML key declared once, the settings tables, a run, a grid and a cell.

    Grid, RunConfig, Cell                  # a validated grid file, one training run, one cell of a grid
    run_configs(grid)                      # one RunConfig per (parametrization, width, tokens, lr, seed, ...)

Every TOML key is a field of `RunSettings` (what every run of the grid shares), `Grid` (the axes of the sweep
and how it runs) or a settings table (`[transfer]`, `[stability]`, ...), with its check in the field's
metadata (`_key`): `mupcheck.spec.validate` walks those fields, so a new hyperparameter is one line here.
`RunConfig` is `RunSettings` plus one value of each axis, and everything derived (learning rate, step count,
weight decay) is computed from it, never configured twice.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mupcheck.fmt import format_tokens
from mupcheck.sources.base import KINDS, Source
from mupcheck.vocab import AXES, MUP_ARMS, PARAMETRIZATIONS, Parametrization

__all__ = ["AXES", "BACKENDS", "BUILTIN_MODELS", "BUILTIN_OPTIMIZERS", "Cell", "CoordCheckConfig",
           "EXPECT_BREAK_CHOICES", "Grid", "IMPORTED_MODEL", "LINT_CODES", "LR_BATCH_RULES",
           "LR_LOG2_RANGE", "LintSettings", "MODEL_SWEEP_KEYS", "MUP_ARMS", "NoiseSettings",
           "PARAMETRIZATIONS", "Parametrization", "RESULT_COLUMNS", "RefineSettings", "SETTINGS_KEYS",
           "ResultsSettings", "RunConfig", "RunSettings", "SWEEP_KEYS", "StabilitySettings",
           "TRAINER_MODEL", "TrainerSettings", "TransferSettings", "arm_config", "coord_widths", "run_configs",
           "setting_default", "sweep_value", "swept_quantity", "toml_fields"]

# The arms (mupcheck.vocab): "custom" is a model that applies muP itself (hand-written muP); mupcheck neither
# sets its base shapes nor wraps its optimizer, and judges it as the muP arm.
BUILTIN_MODELS = ("mlp", "gpt")
BUILTIN_OPTIMIZERS = ("adamw", "sgd")
# Where runs train: "local" (processes on this machine) or "ray" (tasks on a Ray cluster).
BACKENDS = ("local", "ray")
# The muP lint's findings (mupcheck.checks.lint), which a grid's `[lint] ignore` may name.
LINT_CODES = ("no-infshape", "unit-multipliers", "plain-readout", "not-mup-optimizer", "base-width-mismatch")
# log2 learning rates a grid may list: 2^-64 is below float32's resolution of any weight, 2^16 far above any
# rate that trains; outside, the arithmetic overflows (2^1000 raised OverflowError in training).
LR_LOG2_RANGE = (-64.0, 16.0)
# The axes (mupcheck.vocab.AXES): `depths` and `batch_sizes` default to the scalar `depth` and `batch_size`.
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
        neither need not repeat them in every line); a width or budget a results table did not state (0) is
        left out."""
        text = self.parametrization + (f" width={self.width}" if self.width else "") + (
            f" tokens={format_tokens(self.tokens)}" if self.tokens else "")
        return text + (f" depth={self.depth}" if self.depth and "depth" in shown else "") + (
            f" batch={self.batch_size}" if self.batch_size and "batch_size" in shown else "")



# An expected break names an axis, or a parametrization and an axis ("sp:width": the SP control).
EXPECT_BREAK_CHOICES = AXES + tuple(f"{p}:{a}" for p in PARAMETRIZATIONS for a in AXES)
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
    (mupcheck.sources), from a file or a tracking system's store."""

    # Where the runs are: "table" (files), "mlflow", "tensorboard" or "optuna"; each needs its own keys
    # (mupcheck.sources.base.REQUIRED_KEYS).
    source: str = _key("choice", "table", choices=KINDS)
    path: str = _key("string", "")  # table: a file or a glob, from the grid file's folder
    tracking_uri: str = _key("string", "")  # mlflow: an mlruns/ folder, sqlite:///mlflow.db, or a server
    experiment: str = _key("string", "")  # mlflow: the experiment's name
    filter: str = _key("string", "")  # mlflow: a search filter in MLflow's syntax
    logdir: str = _key("string", "")  # tensorboard: the log folder, one folder of event files per run
    pattern: str = _key("string", "")  # tensorboard: the run folder's name with {fields} (w{width}_lr{lr})
    curve: str = _key("string", "")  # mlflow: the metric, tensorboard: the scalar tag that is the training curve
    storage: str = _key("string", "")  # optuna: the study's storage (sqlite:///study.db)
    study: str = _key("string", "")  # optuna: the study's name
    # Two rows of one run: an error, or "mean" (GPU reruns of one seed differ: averaging is a choice).
    duplicates: Literal["error", "mean"] = _key("choice", "error", choices=("error", "mean"))
    # [results.columns]: our name = "their name" ("" ignores their column of our name: MLflow's own `status`).
    columns: tuple[tuple[str, str], ...] = _key("column_map", ())
    ignore: tuple[str, ...] = _key("string_list", ())  # their columns to leave out
    # [results.status]: their status = ours (ok, unstable, diverged, or skip: not a result, left out and counted).
    status: tuple[tuple[str, str], ...] = _key("status_map", ())
    # Not keys: what the grid file itself set, which the results must match (settings picked, axes listed), and
    # what reading them found (the settings stated by the file or the table, the runs left out and why, the
    # columns given, and what was read: (name, sha256, rows) per file or tracking-system table).
    picked: tuple[tuple[str, Any], ...] = ()
    listed: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    stated: tuple[tuple[str, str], ...] = ()
    left_out: tuple[tuple[str, int], ...] = ()
    columns_read: tuple[str, ...] = ()
    inputs: tuple[tuple[str, str, int], ...] = ()

    @property
    def described(self) -> str:
        """Where the runs are, in a few words: the file, or the tracking system's store and experiment."""
        return {"table": self.path, "mlflow": f"MLflow {self.tracking_uri} experiment {self.experiment!r}",
                "tensorboard": f"TensorBoard logs {self.logdir}",
                "optuna": f"Optuna {self.storage} study {self.study!r}"}[self.source]

    @property
    def skipped(self) -> int:
        """How many runs the source held that are not results (still running, pruned, skipped by the grid)."""
        return sum(n for _, n in self.left_out)

    def where(self) -> Source:
        """Where the runs are, as the readers take it."""
        return Source(kind=self.source, path=self.logdir if self.source == "tensorboard" else self.path,
                      tracking_uri=self.tracking_uri, experiment=self.experiment, filter=self.filter,
                      curve=self.curve, pattern=self.pattern, storage=self.storage, study=self.study)


# What a [results.columns] table may map to: the run's coordinates and outcome, its curve, and any setting.
RESULT_COLUMNS = ("width", "tokens", "lr", "lr_log2", "seed", "loss", "parametrization", "status", "initial_loss",
                  "curve")
# The model of a results grid: nothing is built or trained.
IMPORTED_MODEL = "(results)"
# The model of a grid whose runs the team's own trainer trains ([trainer]): not built by mupcheck.
TRAINER_MODEL = "(trainer)"


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
    # How well the prior is known, as the degrees of freedom of the estimate it came from (5 seeds in 3 cells:
    # 12): its intervals use Student's t there. A prior is not exact: 4 by default, a guess from a small study.
    df: int = _key("integer", 4, minimum=1)


@dataclass(frozen=True)
class TrainerSettings:
    """The `[trainer]` table: the team's own training code runs each run instead of mupcheck's engine
    (mupcheck.engine.command), as a command template or a Python function; it reports its losses as JSON lines
    (docs/trainers.md)."""

    # A shell-free command template: {width}, {depth}, {tokens}, {batch_size}, {lr}, {lr_log2}, {seed},
    # {parametrization}, {run_dir}, any swept key and any run setting ({schedule}, {optimizer}, ...).
    command: str = _key("string", "")
    # Or a function "package.module:train", called in a process of its own as train(run) -> curve.
    python: str = _key("string", "", pattern=r"^$|^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", allowed="'package.module:function'")
    cwd: str = _key("string", "")  # where it runs, from the grid file's folder (default: that folder)
    env: tuple[tuple[str, str], ...] = _key("string_map", ())  # [trainer.env]: variables added to its environment
    timeout_s: float = _key("number", 0.0, minimum=0.0)  # a run that takes longer failed (0: no limit)
    # Files whose content enters every run's store key (a changed trainer never reuses a stale record); default:
    # the script the command names, or the function's module.
    code: tuple[str, ...] = _key("string_list", ())
    runs_per_gpu: int = _key("integer", 1, minimum=1)  # runs sharing one GPU (CUDA_VISIBLE_DEVICES), with --gpus


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
    # Budgets that differ only in tokens train as one run per rate and seed where that is exact (constant and
    # WSD schedules with warmup_tokens: mupcheck.engine.groups): a duration study costs its longest budget, not
    # their sum. false: every budget trains alone (the results are the same; only the cost differs).
    share_runs: bool = _key("boolean", True)
    backend: str = _key("choice", "local", choices=BACKENDS)  # where runs train (BACKENDS)
    transfer: TransferSettings = _table("transfer", TransferSettings)
    stability: StabilitySettings = _table("stability", StabilitySettings)
    coord_check: CoordCheckConfig | None = _table("coord_check")
    refine: RefineSettings | None = _table("refine")
    lint: LintSettings | None = _table("lint")
    noise: NoiseSettings = _table("noise", NoiseSettings)
    results: ResultsSettings | None = _table("results")
    trainer: TrainerSettings | None = _table("trainer")
    # The cells a results grid has runs in (not a key): a ragged sweep lacks some combinations of its axes, and a
    # comparison exists only where both cells do. Empty: every combination (a grid that trains).
    cells: tuple[Cell, ...] = ()
    # (width, depth, parameter count) of each model shape a results table gives a `params` column for (not a
    # key); where it gives none, `params_of` computes non-embedding parameters.
    shapes: tuple[tuple[int, int, float], ...] = ()
    sp_model: str | None = None  # the SP arm's own factory (model = {mup = ..., sp = ...}); not a key itself
    # Per-arm rates and optimizers (lr_log2 = {mup = [...], sp = [...]}, optimizer = {...}); not keys themselves:
    # `lr_log2` then holds the union of the arms' rates and `optimizer` the muP arm's.
    arm_lr_log2: tuple[tuple[str, tuple[float, ...]], ...] = ()
    arm_optimizer: tuple[tuple[str, str], ...] = ()
    path: str = ""  # the file it came from, for messages and provenance (not a TOML key)

    @property
    def grid_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def params_of(self, width: int, depth: int) -> float:
        """A model shape's parameter count: the results table's `params`, else `non_embedding_params`."""
        given = {(w, d): n for w, d, n in self.shapes}
        return given.get((width, depth), non_embedding_params(width, depth))

    @property
    def params_stated(self) -> bool:
        """The parameter counts come from the results (a `params` column), not from a formula."""
        return bool(self.shapes)

    def has_cell(self, cell: Cell) -> bool:
        """Whether the grid has runs in `cell` (a results grid may be ragged; a grid that trains has them all)."""
        return not self.cells or cell in self._cell_set

    @functools.cached_property
    def _cell_set(self) -> frozenset[Cell]:
        return frozenset(self.cells)

    @property
    def not_stated(self) -> tuple[str, ...]:
        """The axes (AXES order) that a results grid's table and file never gave: their one coordinate in every
        cell (0 for width and tokens, the default depth and batch size) is a placeholder, not a measurement."""
        if self.results is None:
            return ()
        read, stated = set(self.results.columns_read), dict(self.results.stated)
        out = []
        for axis in AXES:
            values = self.values(axis)
            given = axis in read or (values != (0,) if axis in ("width", "tokens") else axis in stated)
            if len(values) == 1 and not given:
                out.append(axis)
        return tuple(out)

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


# Every setting a run shares with its grid, by name: the columns of a results table that are settings.
SETTINGS_KEYS = frozenset(f.name for f in dataclasses.fields(RunSettings))


def non_embedding_params(width: int, depth: int) -> float:
    """The non-embedding parameters of a standard transformer of this width and depth (12 d^2 per block: the
    attention's 4 d^2 and an MLP of 4d's 8 d^2): what orders a size ladder that gives no `params` column."""
    return 12.0 * depth * width**2


def toml_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a schema class that are TOML keys (those declared with `_key` or `_table`)."""
    return {f.name: f for f in dataclasses.fields(cls) if "kind" in f.metadata}


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
