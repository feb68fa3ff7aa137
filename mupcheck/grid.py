"""Grid files: one TOML file under `grids/` defines a whole experiment.

    from mupcheck.grid import load_grid, run_configs
    grid = load_grid("grids/smoke.toml")
    for cfg in run_configs(grid): ...

A grid is parsed into a frozen `Grid` and validated before anything trains: an unknown key,
a wrong type, an empty or unsorted list, or an impossible combination raises `GridError`
naming the file, the key and what is allowed. `run_configs` expands the grid into one
`RunConfig` per (parametrization, width, tokens, lr, seed); everything derived (learning rate,
step count) is computed from the grid, never configured twice.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mupcheck.errors import GridError

__all__ = [
    "Grid",
    "CoordCheckConfig",
    "coord_widths",
    "RunConfig",
    "TransferSettings",
    "load_grid",
    "parse_grid",
    "run_configs",
    "BUILTIN_MODELS",
    "AXES",
]

Parametrization = Literal["mup", "sp"]
BUILTIN_MODELS = ("mlp", "gpt")
PARAMETRIZATIONS = ("mup", "sp")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear", "wsd")
# Axes a grid can vary along; the transfer suite compares optima along each of them.
AXES = ("width", "tokens")
# An expected break names an axis, or a parametrization and an axis ("sp:width": the SP control).
EXPECT_BREAK_CHOICES = AXES + tuple(f"{p}:{a}" for p in PARAMETRIZATIONS for a in AXES)
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class TransferSettings:
    """How strict the transfer assertions are (the `[transfer]` table of a grid)."""

    tolerance_log2: float = 0.5
    max_regret: float = 0.01
    expect_break: tuple[str, ...] = ()
    # The width every other width is compared with; None: the base width if the grid has it, else the smallest.
    reference_width: int | None = None
    # "Wider is better": at a fixed learning rate, muP's loss may rise with width by at most this fraction.
    wider_tolerance: float = 0.01
    # A transfer rule along tokens: "power" predicts lr*(T) = lr*(T_ref) * (T / T_ref)^-beta, with beta
    # given (lr_rule_beta) or fitted on the cells of lr_rule_fit_tokens (default: the two shortest
    # budgets); the suite then checks the rule on the other cells.
    lr_rule: Literal["none", "power"] = "none"
    lr_rule_beta: float | None = None
    lr_rule_fit_tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class CoordCheckConfig:
    """The `[coord_check]` table: coordinate checks of the grid's model before any sweep."""

    widths: tuple[int, ...] = ()  # () means the grid's widths
    steps: int = 4
    seeds: int = 1
    lr_log2: float = -6.0
    parametrization: tuple[Parametrization, ...] = ("mup",)
    max_growth: float = 0.2  # largest slope of log2(size) per doubling of width after step 0
    # Largest fall of log2(update size) per doubling. Looser than max_growth on purpose: at small
    # widths the init-driven part of readout and attention-logit updates shrinks as width^-1/2 under
    # correct muP (slopes near -0.45 measured at widths 16-128 on CPU); a real vanish is near -1.
    max_vanish: float = 0.6
    # Output-like quantities (readout logits, attention logits with fixed heads) shrink at init as
    # width^-1/2 under muP; a fan-in readout or 1/sqrt(d) attention keeps them flat (slope ~0).
    max_init_output_slope: float = -0.25
    min_range: float = 8.0  # the widths must span at least this factor


@dataclass(frozen=True)
class Grid:
    """A validated grid file. Field names are the TOML keys."""

    name: str
    model: str
    widths: tuple[int, ...]
    tokens: tuple[int, ...]
    lr_log2: tuple[float, ...]
    parametrization: tuple[Parametrization, ...] = ("mup", "sp")
    base_width: int = 0  # 0 until resolved: defaults to the smallest width
    depth: int = 2
    head_dim: int = 16
    n_heads: int = 0  # 0: head_dim is fixed and heads grow with width; else heads fixed, head_dim grows
    batch_size: int = 16
    seq_len: int = 128
    seeds: tuple[int, ...] = (0,)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 0.0
    # How weight decay is applied: "coupled" (torch AdamW: each step shrinks weights by lr * wd),
    # "independent" (by wd, whatever the lr), or "timescale" (wd chosen per run so that the AdamW
    # timescale tau = 1 / (lr * wd) is `tau_frac` of the run's steps; Wang & Aitchison, arXiv 2405.13698).
    weight_decay_mode: Literal["coupled", "independent", "timescale"] = "coupled"
    tau_frac: float = 0.0
    schedule: Literal["constant", "cosine", "linear", "wsd"] = "cosine"
    warmup: float = 0.05
    warmup_tokens: int = 0  # if set, warmup is this many tokens instead of a fraction of the run
    min_lr_frac: float = 0.1
    decay_frac: float = 0.2
    data: str = "python"
    vocab_size: int = 0  # 0: taken from the data source
    eval_tokens: int = 65536
    device: str = "auto"
    # Runs trained together as one batched model (they differ only in lr, seed, tokens); 0: automatic
    # (32 on CUDA, 1 elsewhere, where batching is slower than a loop); 1: one run at a time.
    fuse: int = 0
    # torch.compile the fused model and update: faster steps, but tens of seconds to compile each group.
    compile: bool = False
    readout_zero_init: bool = False
    query_zero_init: bool = False
    mlp_context: int = 8
    transfer: TransferSettings = field(default_factory=TransferSettings)
    coord_check: CoordCheckConfig | None = None
    path: str = ""  # the file it came from, for messages and provenance

    @property
    def grid_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run. Hashed (with data and code) into its store key."""

    model: str
    parametrization: Parametrization
    width: int
    base_width: int
    depth: int
    head_dim: int
    n_heads: int
    tokens: int
    batch_size: int
    seq_len: int
    lr_log2: float
    seed: int
    optimizer: str
    weight_decay: float
    weight_decay_mode: str
    tau_frac: float
    schedule: str
    warmup: float
    warmup_tokens: int
    min_lr_frac: float
    decay_frac: float
    data: str
    vocab_size: int
    eval_tokens: int
    readout_zero_init: bool
    query_zero_init: bool
    mlp_context: int

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

    def label(self) -> str:
        """Short human-readable name, for progress bars and messages."""
        return (
            f"{self.model} {self.parametrization} width={self.width} "
            f"tokens={format_tokens(self.tokens)} lr=2^{self.lr_log2:g} seed={self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def format_tokens(n: int) -> str:
    """1048576 -> '1M', 65536 -> '64K'; exact binary or decimal multiples only, else the number."""
    for div, suffix in ((2**30, "G"), (2**20, "M"), (2**10, "K")):
        if n % div == 0:
            return f"{n // div}{suffix}"
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "K")):
        if n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


# --- parsing -------------------------------------------------------------------------------

_TOP_KEYS = {f.name for f in dataclasses.fields(Grid)} - {"path"}
_TRANSFER_KEYS = {f.name for f in dataclasses.fields(TransferSettings)}
_COORD_KEYS = {f.name for f in dataclasses.fields(CoordCheckConfig)}


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
    if parent_path in seen + (p.resolve(),):
        raise GridError(str(p), "extends", f"{parent} extends this file again (a cycle)")
    if not parent_path.is_file():
        raise GridError(str(p), "extends", f"no grid file {parent} (paths are taken from this file's folder)")
    base = _read_raw(parent_path, seen + (p.resolve(),))
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def parse_grid(raw: dict[str, Any], path: str = "<grid>") -> Grid:
    """Validate a parsed TOML table into a `Grid`."""
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise GridError(path, unknown[0], f"unknown key; allowed keys: {', '.join(sorted(_TOP_KEYS))}")
    for required in ("name", "model", "widths", "tokens", "lr_log2"):
        if required not in raw:
            raise GridError(path, required, "required key is missing")
    v = _Validator(path, raw)
    kw: dict[str, Any] = {
        "name": v.string("name", pattern=r"^[\w.-]+$", allowed="letters, digits, '_', '-', '.'"),
        "model": v.model(),
        "widths": v.int_list("widths", minimum=1),
        "tokens": v.int_list("tokens", minimum=1),
        "lr_log2": v.float_list("lr_log2"),
        "parametrization": v.choice_list("parametrization", PARAMETRIZATIONS),
        "depth": v.integer("depth", minimum=1),
        "head_dim": v.integer("head_dim", minimum=1),
        "n_heads": v.integer("n_heads", minimum=0),
        "batch_size": v.integer("batch_size", minimum=1),
        "seq_len": v.integer("seq_len", minimum=1),
        "seeds": v.int_list("seeds", minimum=0),
        "optimizer": v.choice("optimizer", OPTIMIZERS),
        "weight_decay": v.number("weight_decay", minimum=0.0),
        "weight_decay_mode": v.choice("weight_decay_mode", ("coupled", "independent", "timescale")),
        "tau_frac": v.number("tau_frac", minimum=0.0),
        "warmup_tokens": v.integer("warmup_tokens", minimum=0),
        "schedule": v.choice("schedule", SCHEDULES),
        "warmup": v.number("warmup", minimum=0.0, below=1.0),
        "min_lr_frac": v.number("min_lr_frac", minimum=0.0, maximum=1.0),
        "decay_frac": v.number("decay_frac", minimum=0.0, maximum=1.0),
        "data": v.string("data"),
        "vocab_size": v.integer("vocab_size", minimum=2),
        "eval_tokens": v.integer("eval_tokens", minimum=1),
        "device": v.string("device", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", allowed="auto, cpu, cuda, cuda:N, mps"),
        "fuse": v.integer("fuse", minimum=0),
        "compile": v.boolean("compile"),
        "readout_zero_init": v.boolean("readout_zero_init"),
        "query_zero_init": v.boolean("query_zero_init"),
        "mlp_context": v.integer("mlp_context", minimum=1),
        "base_width": v.integer("base_width", minimum=1),
        "transfer": v.transfer(),
        "coord_check": v.coord_check(),
    }
    kw = {k: val for k, val in kw.items() if val is not None}
    kw.setdefault("base_width", min(kw["widths"]))
    grid = Grid(path=path, **kw)
    _check_combinations(grid, raw)
    return grid


class _Validator:
    """Type and range checks for single keys; each failure names the key and what is allowed."""

    def __init__(self, path: str, raw: dict[str, Any], prefix: str = ""):
        self.path, self.raw, self.prefix = path, raw, prefix

    def fail(self, key: str, message: str) -> GridError:
        return GridError(self.path, key if "." in key else self.prefix + key, message)

    def _get(self, key: str) -> Any:
        return self.raw.get(key)

    def string(self, key: str, pattern: str | None = None, allowed: str = "") -> str | None:
        val = self._get(key)
        if val is None:
            return None
        if not isinstance(val, str) or not val:
            raise self.fail(key, f"must be a non-empty string, got {val!r}")
        if pattern and not re.match(pattern, val):
            raise self.fail(key, f"{val!r} is not allowed; use {allowed}")
        return val

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        val = self._get(key)
        if val is None:
            return None
        if val not in choices:
            raise self.fail(key, f"must be one of {', '.join(map(repr, choices))}, got {val!r}")
        return val

    def boolean(self, key: str) -> bool | None:
        val = self._get(key)
        if val is not None and not isinstance(val, bool):
            raise self.fail(key, f"must be true or false, got {val!r}")
        return val

    def integer(self, key: str, minimum: int | None = None) -> int | None:
        val = self._get(key)
        if val is None:
            return None
        if not _is_int(val):
            raise self.fail(key, f"must be an integer, got {val!r}")
        if minimum is not None and val < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {val}")
        return val

    def number(self, key: str, minimum: float | None = None, maximum: float | None = None,
               below: float | None = None) -> float | None:
        val = self._get(key)
        if val is None:
            return None
        if not _is_number(val) or not math.isfinite(val):
            raise self.fail(key, f"must be a finite number, got {val!r}")
        if minimum is not None and val < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {val}")
        if maximum is not None and val > maximum:
            raise self.fail(key, f"must be <= {maximum}, got {val}")
        if below is not None and val >= below:
            raise self.fail(key, f"must be < {below} (a fraction of the run), got {val}")
        return float(val)

    def _list(self, key: str, kind: str) -> list | None:
        val = self._get(key)
        if val is None:
            return None
        if not isinstance(val, list) or not val:
            raise self.fail(key, f"must be a non-empty list of {kind}, got {val!r}")
        return val

    def _sorted(self, key: str, vals: list) -> None:
        if any(b <= a for a, b in zip(vals, vals[1:])):
            raise self.fail(key, f"must be strictly increasing (sorted, no repeats), got {vals}")

    def int_list(self, key: str, minimum: int) -> tuple[int, ...] | None:
        vals = self._list(key, "integers")
        if vals is None:
            return None
        bad = [x for x in vals if not _is_int(x) or x < minimum]
        if bad:
            raise self.fail(key, f"must hold integers >= {minimum}, got {bad[0]!r}")
        self._sorted(key, vals)
        return tuple(vals)

    def float_list(self, key: str) -> tuple[float, ...] | None:
        vals = self._list(key, "numbers")
        if vals is None:
            return None
        bad = [x for x in vals if not _is_number(x) or not math.isfinite(x)]
        if bad:
            raise self.fail(key, f"must hold finite numbers (log2 of the learning rate), got {bad[0]!r}")
        self._sorted(key, vals)
        return tuple(float(x) for x in vals)

    def choice_list(self, key: str, choices: tuple[str, ...]) -> tuple[str, ...] | None:
        vals = self._list(key, "strings")
        if vals is None:
            return None
        bad = [x for x in vals if x not in choices]
        if bad:
            raise self.fail(key, f"allowed values are {', '.join(map(repr, choices))}, got {bad[0]!r}")
        if len(set(vals)) != len(vals):
            raise self.fail(key, f"has repeated values: {vals}")
        return tuple(vals)

    def model(self) -> str:
        val = self.string("model")
        if val is None:
            raise self.fail("model", "required key is missing")
        if val in BUILTIN_MODELS:
            return val
        if not _FACTORY_RE.match(val):
            raise self.fail("model", f"{val!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                                     "nor a factory written 'package.module:function'")
        return val

    def _subtable(self, name: str, allowed: set[str]) -> _Validator | None:
        val = self._get(name)
        if val is None:
            return None
        if not isinstance(val, dict):
            raise self.fail(name, f"must be a table ([{name}])")
        unknown = sorted(set(val) - allowed)
        if unknown:
            raise self.fail(f"{name}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return _Validator(self.path, val, prefix=f"{name}.")

    def transfer(self) -> TransferSettings | None:
        sub = self._subtable("transfer", _TRANSFER_KEYS)
        if sub is None:
            return None
        kw: dict[str, Any] = {
            "tolerance_log2": sub.number("tolerance_log2", minimum=0.0),
            "max_regret": sub.number("max_regret", minimum=0.0),
            "expect_break": sub.choice_list("expect_break", EXPECT_BREAK_CHOICES),
            "wider_tolerance": sub.number("wider_tolerance", minimum=0.0),
            "reference_width": sub.integer("reference_width", minimum=1),
            "lr_rule": sub.choice("lr_rule", ("none", "power")),
            "lr_rule_beta": sub.number("lr_rule_beta"),
            "lr_rule_fit_tokens": sub.int_list("lr_rule_fit_tokens", minimum=1),
        }
        return TransferSettings(**{k: x for k, x in kw.items() if x is not None})

    def coord_check(self) -> CoordCheckConfig | None:
        sub = self._subtable("coord_check", _COORD_KEYS)
        if sub is None:
            return None
        kw: dict[str, Any] = {
            "widths": sub.int_list("widths", minimum=1),
            "steps": sub.integer("steps", minimum=1),
            "seeds": sub.integer("seeds", minimum=1),
            "lr_log2": sub.number("lr_log2"),
            "parametrization": sub.choice_list("parametrization", PARAMETRIZATIONS),
            "max_growth": sub.number("max_growth", minimum=0.0),
            "max_vanish": sub.number("max_vanish", minimum=0.0),
            "max_init_output_slope": sub.number("max_init_output_slope"),
            "min_range": sub.number("min_range", minimum=1.0),
        }
        return CoordCheckConfig(**{k: x for k, x in kw.items() if x is not None})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_combinations(g: Grid, raw: dict[str, Any]) -> None:
    """Cross-key checks: things each valid alone but impossible together."""
    p = g.path
    if g.model == "gpt":
        key, divisor = ("n_heads", g.n_heads) if g.n_heads else ("head_dim", g.head_dim)
        for w in g.widths + (g.base_width,):
            if w % divisor:
                raise GridError(p, key, f"width {w} is not divisible by {key}={divisor}; "
                                        "every width and base_width must be a multiple of it")
    for budget in g.tokens:
        steps = budget // (g.batch_size * g.seq_len)
        if steps < 10:
            raise GridError(p, "tokens", f"budget {budget} gives {steps} steps of batch_size*seq_len="
                                         f"{g.batch_size * g.seq_len} tokens; at least 10 steps are needed")
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
    t = g.transfer
    if t.reference_width is not None and t.reference_width not in g.widths:
        raise GridError(p, "transfer.reference_width",
                        f"{t.reference_width} is not one of the grid's widths {g.widths}")
    if t.lr_rule == "power" and t.lr_rule_beta is None:
        fit = t.lr_rule_fit_tokens or g.tokens[:2]
        missing = [x for x in fit if x not in g.tokens]
        if missing:
            raise GridError(p, "transfer.lr_rule_fit_tokens", f"{missing[0]} is not one of the grid's tokens")
        if len(set(fit)) < 2 or len(fit) >= len(g.tokens):
            raise GridError(p, "transfer.lr_rule_fit_tokens", "fitting beta needs at least 2 token budgets, and at "
                                                              "least one budget left out to test the rule on")
    if g.coord_check is not None:
        widths = coord_widths(g)
        if widths[-1] / widths[0] < g.coord_check.min_range:
            raise GridError(p, "coord_check.widths", f"must span at least {g.coord_check.min_range:g}x "
                                                     f"(got {widths[0]}..{widths[-1]}); set [coord_check] widths")
        if g.model == "gpt":
            divisor = g.n_heads or g.head_dim
            bad = [w for w in widths if w % divisor]
            if bad:
                raise GridError(p, "coord_check.widths", f"width {bad[0]} is not divisible by "
                                                         f"{'n_heads' if g.n_heads else 'head_dim'}={divisor}")
    if g.model not in BUILTIN_MODELS:
        _check_factory_importable(g)


def coord_widths(grid: Grid) -> tuple[int, ...]:
    """The widths of the grid's coordinate check: its own, else the grid's."""
    return (grid.coord_check.widths if grid.coord_check and grid.coord_check.widths else grid.widths)


def _check_factory_importable(g: Grid) -> None:
    module_name, _, attr = g.model.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user module may raise anything at import
        raise GridError(g.path, "model", f"cannot import {module_name!r} (run from the directory that "
                                         f"holds it, or install it): {type(e).__name__}: {e}") from None
    if not callable(getattr(module, attr, None)):
        raise GridError(g.path, "model", f"module {module_name!r} has no callable {attr!r}")


def run_configs(grid: Grid) -> list[RunConfig]:
    """Expand a grid into its runs, ordered by parametrization, width, tokens, lr, seed."""
    common: dict[str, Any] = dict(
        model=grid.model, base_width=grid.base_width, depth=grid.depth, head_dim=grid.head_dim,
        n_heads=grid.n_heads,
        batch_size=grid.batch_size, seq_len=grid.seq_len, optimizer=grid.optimizer,
        weight_decay=grid.weight_decay, weight_decay_mode=grid.weight_decay_mode, tau_frac=grid.tau_frac,
        schedule=grid.schedule, warmup=grid.warmup, warmup_tokens=grid.warmup_tokens,
        min_lr_frac=grid.min_lr_frac, decay_frac=grid.decay_frac, data=grid.data,
        vocab_size=grid.vocab_size, eval_tokens=grid.eval_tokens,
        readout_zero_init=grid.readout_zero_init, query_zero_init=grid.query_zero_init,
        mlp_context=grid.mlp_context,
    )
    return [
        RunConfig(parametrization=par, width=w, tokens=t, lr_log2=lr, seed=s, **common)
        for par in grid.parametrization
        for w in grid.widths
        for t in grid.tokens
        for lr in grid.lr_log2
        for s in grid.seeds
    ]
