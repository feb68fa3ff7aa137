"""A plan: a grid resolved against its data and device, with the store key of every run, and what it costs.

    plan = plan_grid(load_grid("grids/smoke.toml"))
    for cfg in plan.configs:
        plan.key(cfg)            # the run's store key
    estimate_cost(plan).lines()  # runs, tokens, FLOPs, estimated time on CPU and on an H100

A key is a hash of the run config, the model's source, the engine's source, the data fingerprint,
the device type and the mupcheck version: a changed grid, corpus, model or training code never
reuses a stale record.

A plan has two stages: the grid's own (coarse) runs, and, with a `[refine]` table, the rates added around
each cell's coarse argmin once those are in (`refinement_configs`, a pure function of the coarse runs, so
every process that asks computes the same ones and the store trains each once). A coarse sweep steps lr by
an octave, about the size of the seed noise of an optimum; the refinement adds rates at `step_log2` spacing
within `span_log2` of the argmin of each cell's seed-mean coarse curve, for every seed. A cell whose coarse
argmin is on the edge of `lr_log2` gets none (its optimum is censored: extend the grid instead). For a
results grid, which trains nothing, `refinement_advice` says which rates to run next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

import mupcheck
from mupcheck.engine import ENGINE_VERSION
from mupcheck.engine.command import check_trainer
from mupcheck.engine.command import fingerprint as command_fingerprint
from mupcheck.engine.data import TokenData, load_data
from mupcheck.engine.device import pin_device, resolve_device
from mupcheck.engine.groups import fusion_groups, share_chains, sharing_note, trained_steps
from mupcheck.fmt import format_duration, format_tokens
from mupcheck.frame import CELL, x_column
from mupcheck.spec import AXES, BUILTIN_MODELS, Cell, Grid, RunConfig, run_configs, setting_default

__all__ = ["AUTO_PARALLEL_STEPS", "CostEstimate", "Plan", "RunContext", "auto_workers", "estimate_cost",
           "flops_per_token", "key_config", "model_source_hash", "plan_grid", "refinement_advice", "refinement_configs",
           "refinement_rates", "repeated_data_warning", "run_flops"]

def model_source_hash(model: str) -> str:
    """What identifies a model's code in a key: the engine's version for the built-in models (part of the
    engine), the hash of the user's module source otherwise."""
    if model in BUILTIN_MODELS:
        return f"builtin-engine-{ENGINE_VERSION}"
    module = importlib.import_module(model.partition(":")[0])
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        source = model  # no source available (compiled module): the name is the best we have
    return hashlib.sha256(source.encode()).hexdigest()[:16]


# Settings added after records were first stored, and the value at which they change nothing: a run with that
# value leaves them out of its key, so that every record stored before them stays valid.
_INERT = {name: setting_default(name) for name in ("depth_alpha", "mlp_residual", "output_mult", "init_std_mult",
                                                   "adam_beta2", "adam_eps")}
_NEEDS = {"base_depth": "depth_alpha"}  # meaningful only when the other setting is not inert
# Where a run sits on a grid's swept key, not what it trains: the key's own field holds its value.
_COORDINATES = ("sweep", "sweep_log2")


def key_config(cfg: RunConfig) -> dict[str, Any]:
    """The run's config as its key hashes it: settings that change nothing in this run are left out."""
    config = cfg.to_dict()
    for name in _COORDINATES:
        config.pop(name, None)
    for name, inert in _INERT.items():
        if config.get(name) == inert:
            del config[name]
    for name, needs in _NEEDS.items():
        if needs not in config:
            config.pop(name, None)
    return config


@dataclass(frozen=True)
class RunContext:
    """What besides the run config can change a result; hashed into every key."""

    data_fingerprint: str
    model_source: str
    engine_source: str
    device_type: str
    mupcheck_version: str

    @classmethod
    def for_grid(cls, grid: Grid, data_fingerprint: str, device: torch.device) -> RunContext:
        if grid.trainer is not None:  # the team's code trains: its command and source make the key, not ours
            return cls("", command_fingerprint(grid), "trainer", device.type, mupcheck.__version__)
        return cls(data_fingerprint, model_source_hash(grid.model), f"engine-{ENGINE_VERSION}",
                   device.type, mupcheck.__version__)

    def key_material(self, cfg: RunConfig) -> dict[str, Any]:
        return {"config": key_config(cfg), **asdict(self)}

    def key(self, cfg: RunConfig) -> str:
        blob = json.dumps(self.key_material(cfg), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True, eq=False)
class Plan:
    """A grid resolved against its data and device: the runs and the key of each."""

    grid: Grid
    data: TokenData
    device: torch.device
    context: RunContext
    configs: tuple[RunConfig, ...]

    def key(self, cfg: RunConfig) -> str:
        return self.context.key(cfg)

    def key_material(self, cfg: RunConfig) -> dict[str, Any]:
        return self.context.key_material(cfg)

    def cost(self, cfg: RunConfig) -> float:
        """A run's training FLOPs (`flops_per_token` x its token budget)."""
        return flops_per_token(cfg, self.data.vocab_size) * cfg.tokens

    def costs(self) -> dict[str, tuple[float, int]]:
        """Each run's key -> (training FLOPs, steps): what a progress display weighs runs by. Budgets that share
        a run (`share_runs`) weigh what the shared run trains: its longest budget carries the run's steps and
        branches, a shorter budget nothing of its own (it finishes on the way)."""
        if not self.grid.share_runs or self.grid.trainer is not None:
            return {self.key(c): (self.cost(c), c.steps) for c in self.configs}
        out = {}
        for chain in share_chains(self.configs):
            trunk = chain[-1]
            for c in chain:
                out[self.key(c)] = (self.cost(trunk) * trained_steps(chain) / trunk.steps if c is trunk else 0.0,
                                    c.steps)
        return out


def flops_per_token(cfg: RunConfig, vocab_size: int) -> float:
    """Training FLOPs per token of the built-in GPT's shape: 6 x matmul parameters (12 x depth x width^2
    in the blocks, width x vocab in the readout) + 12 x depth x width x seq_len for attention's scores and
    values (PaLM, arXiv 2204.02311, appendix B). For the MLP and users' models, a relative cost only."""
    matmul_params = cfg.depth * 12 * cfg.width**2 + cfg.width * vocab_size
    return 6.0 * matmul_params + 12.0 * cfg.depth * cfg.width * cfg.seq_len


def plan_grid(grid: Grid, device: str | None = None, worker: int | None = None) -> Plan:
    """Load the grid's data, resolve the device (pinned to one GPU for `worker`, see `pin_device`)
    and compute every run's store key."""
    if grid.trainer is not None:
        check_trainer(grid)  # one line before anything runs
    # A trainer reads its own data; mupcheck's corpus is not loaded for it.
    data = load_data("synthetic" if grid.trainer is not None else grid.data, grid.grid_dir, grid.vocab_size)
    dev = resolve_device(device or grid.device)
    if worker is not None:
        dev = pin_device(dev, worker)
    return Plan(grid, data, dev, RunContext.for_grid(grid, data.fingerprint, dev), tuple(run_configs(grid)))


def repeated_data_warning(plan: Plan) -> str | None:
    """A loud message when a token budget exceeds the training split."""
    n = len(plan.data.train)
    worst = max(plan.grid.tokens)
    if worst <= n:
        return None
    return (f"WARNING: token budget {format_tokens(worst)} exceeds the training split of {plan.data.description} "
            f"({n:,} tokens): runs see their data up to {worst / n:.2f} times. Repeated data changes the "
            "experiment; each record stores its `data_repeats`.")


# --- what a grid costs, before it trains ----------------------------------------------------------

# Training FLOP/s against FLOPs per token, measured (log-log interpolated between points, extrapolated along
# the end segments). CPU: one thread per run, medians over the 630 committed records of cpu_width,
# cpu_horizon_cosine and cpu_horizon_constant (this project's 2-core CPU machine, torch 2.13 CPU build).
CPU_MEASURED = ((1.47e5, 19.5e9), (2.95e5, 26.2e9), (8.85e5, 36.5e9), (2.95e6, 46.9e9), (1.06e7, 53.4e9))
# One H100 (torch 2.11, bf16 autocast), the gpu_reference GPT at widths 128-1024: tokens/s of docs/gpu.md
# (benchmarks/results/20261127-h100.md) times FLOPs per token; solo, and batched x32 eager.
GPU_SOLO = ((6.49e6, 6.1e12), (2.24e7, 2.24e13), (8.26e7, 9.8e13), (3.16e8, 2.2e14))
GPU_BATCHED = ((6.49e6, 5.6e13), (2.24e7, 1.03e14), (8.26e7, 1.73e14), (3.16e8, 2.47e14))
# A step on the GPU costs at least what the smallest measured one did: 8,192 tokens at 0.94M tokens/s solo
# (width 128). Small proxies are bound by it, not by FLOPs; a batched step is taken to cost as much.
GPU_STEP_FLOOR_S = 8192 / 0.94e6
EVAL_CHECKPOINTS = 4  # a run evaluates eval_tokens at four checkpoints (engine.runlog), forward only


def run_flops(cfg: RunConfig, vocab_size: int) -> float:
    """A run's FLOPs: training (`flops_per_token` x tokens) and its evaluations (a forward pass, a third of a
    training step's FLOPs, over eval_tokens at each checkpoint): at small budgets the evaluations dominate."""
    fpt = flops_per_token(cfg, vocab_size)
    return fpt * cfg.tokens + EVAL_CHECKPOINTS * cfg.eval_tokens * fpt / 3


def _rate(table: tuple[tuple[float, float], ...], fpt: float) -> float:
    """FLOP/s at `fpt` FLOPs per token, log-log between the measured points."""
    xs, ys = [math.log(x) for x, _ in table], [math.log(y) for _, y in table]
    x = math.log(fpt)
    k = 1 if x <= xs[1] else len(xs) - 1 if x >= xs[-2] else next(i for i in range(1, len(xs)) if x <= xs[i])
    w = (x - xs[k - 1]) / (xs[k] - xs[k - 1])
    return math.exp(ys[k - 1] + w * (ys[k] - ys[k - 1]))


@dataclass(frozen=True)
class Sharing:
    """What shared runs save (`mupcheck.engine.shared`): the grid's runs that share a run with other budgets of
    their rate and seed, the shared runs they train as, and the tokens, CPU and GPU time with every budget alone."""

    runs: int
    chains: int
    tokens: int  # tokens trained with sharing (the trunks, and the decay branches)
    cpu_s_alone: float
    gpu_batched_s_alone: float
    ratio: float  # training FLOPs with sharing over those with every budget alone


@dataclass(frozen=True)
class CostEstimate:
    """What a grid asks for before anything trains: runs, tokens and FLOPs (and the refinement runs a
    `[refine]` table may add, at most), and the time they take on this machine's CPU cores and on one H100,
    read off measured throughput (estimates: a grid unlike the measured ones may differ by 2x)."""

    grid: Grid
    factors: tuple[tuple[str, int], ...]  # (what multiplies the runs, how many): arms, axes, rates, seeds
    runs: int
    tokens: int
    flops: float  # training (the times count the evaluations too)
    refine_runs: int  # at most this many more (a [refine] table; 0 without)
    refine_flops: float
    cpu_s: float  # on `cpu_workers` processes (what `mupcheck run` starts here), one thread each
    cpu_workers: int
    cpu_source: str
    gpu_solo_s: float
    gpu_batched_s: float
    groups: int  # batched groups on a GPU (fuse 32)
    split_by: tuple[str, ...]  # axes whose values never share a batched group (they change shapes)
    sharing: Sharing | None = None  # budgets that train as one run per rate and seed (None: no sharing)
    sharing_note: str | None = None  # why budgets of this grid cannot share a run, where they cannot

    def lines(self) -> list[str]:
        g = self.grid
        product = _product_text(self.grid, self.factors)
        out = [f"{g.name}: {self.runs} runs = {product}",
               f"  tokens {format_tokens(self.tokens)} in all, {self.flops:.3g} training FLOPs"]
        if self.refine_runs:
            out.append(f"  [refine]: up to {self.refine_runs} more runs ({self.refine_flops:.3g} FLOPs) around each "
                       "cell's argmin, once the coarse runs are in")
        total = 1 + (self.refine_flops / self.flops if self.flops else 0.0)
        sharing = self.sharing
        if sharing is not None:
            out.append(f"  shared runs: {sharing.runs} runs train as {sharing.chains}, one per rate and seed to its "
                       "longest budget (shorter budgets read off it, or their decays branched off it): "
                       f"{sharing.tokens:,} tokens trained instead of {self.tokens:,} ({sharing.ratio:.2f}x)")
        elif self.sharing_note:
            out.append(f"  shared runs: none; {self.sharing_note}")
        alone = f"; {format_duration(sharing.cpu_s_alone)} with every budget alone" if sharing else ""
        out.append(f"  CPU: about {format_duration(self.cpu_s)} in {self.cpu_workers} process(es)"
                   + (f" (up to {format_duration(self.cpu_s * total)} with refinement)" if self.refine_runs else "")
                   + f"{alone}; {self.cpu_source}")
        alone = f" ({format_duration(sharing.gpu_batched_s_alone)} with every budget alone)" if sharing else ""
        out.append(f"  GPU (one H100): about {format_duration(self.gpu_batched_s)} batched{alone} "
                   f"({self.groups} group(s) of up to 32 runs), {format_duration(self.gpu_solo_s)} one run at a time; "
                   "from the H100 measurements of docs/gpu.md")
        if self.split_by:
            out.append(f"  batching: runs of different {', '.join(self.split_by)} change the model's or the "
                       "batch's shape, so they train in separate groups")
        if g.sweep:
            out.append(f"  batching: runs of different {g.sweep} train in separate groups (a group shares one "
                       "model definition and one update rule; only lr, seed and tokens differ within it)")
        return out


# Below this many training steps in a grid, one process: a worker process spends seconds importing torch
# (about 3 s on this project's 2-core machine), more than such a grid takes to train (8 runs of 16 steps:
# under 2 s); the smoke grid (6912 steps) trains in 47 s on two one-thread processes, 62 s on one.
AUTO_PARALLEL_STEPS = 2000


def auto_workers(plan: Plan, alone: bool) -> int:
    """Training processes for `--workers 0`: one per core for a CPU sweep that is the only process training
    it and has enough steps to pay for starting them (every CPU run trains on one thread,
    engine.device.CPU_THREADS); else one."""
    if plan.device.type != "cpu" or not alone or sum(c.steps for c in plan.configs) < AUTO_PARALLEL_STEPS:
        return 1
    return max(1, min(os.cpu_count() or 1, len(plan.configs)))


def estimate_cost(plan: Plan, store: Any = None) -> CostEstimate:
    """The grid's cost (see CostEstimate). With a store that holds some of this grid's CPU runs, the CPU rate
    is calibrated on them (FLOP/s each achieved) instead of the project's measurements."""
    grid, vocab = plan.grid, plan.data.vocab_size
    configs = plan.configs
    fpt = {c: flops_per_token(c, vocab) for c in configs}
    cost = {c: run_flops(c, vocab) for c in configs}
    flops = sum(fpt[c] * c.tokens for c in configs)
    refine_runs, refine_flops = 0, 0.0
    if grid.refine is not None:
        extra_rates = 2 * round(grid.refine.span_log2 / grid.refine.step_log2)
        per_cell = {(c.parametrization, c.width, c.tokens, c.depth, c.batch_size): c for c in configs}
        refine_runs = len(per_cell) * extra_rates * len(grid.seeds)
        refine_flops = sum(fpt[c] * c.tokens for c in per_cell.values()) * extra_rates * len(grid.seeds)
    workers = auto_workers(plan, alone=True)  # what `mupcheck run` uses
    share = grid.share_runs and grid.trainer is None
    chains = share_chains(configs) if share else [[c] for c in configs]
    # A shared run's FLOPs: those of the steps it trains (trunk and branches), and every budget's evaluations.
    shared_cost = {c: cost[c] * (trained_steps(chain) / c.steps if c is chain[-1] else 0.0) if c.steps else cost[c]
                   for chain in chains for c in chain}
    for chain in chains:
        for c in chain[:-1]:  # the evaluations of a budget that rides a shared run are its own
            shared_cost[c] = EVAL_CHECKPOINTS * c.eval_tokens * fpt[c] / 3
    measured = _store_rates(plan, store, fpt)
    if len(measured) >= 3:
        scale = sorted(measured)[len(measured) // 2]
        rate = {c: scale for c in configs}
        source = (f"calibrated on {len(measured)} of this grid's runs in the store (median {scale / 1e9:.1f} "
                  "GFLOP/s of training)")
    else:
        rate = {c: _rate(CPU_MEASURED, fpt[c]) for c in configs}
        source = "from the project's CPU records (19-53 GFLOP/s per thread by model size)"
    cpu_s = sum(shared_cost[c] / rate[c] for c in configs) / workers
    cpu_alone = sum(cost[c] / rate[c] for c in configs) / workers
    gpu_solo = sum(max(shared_cost[c] / _rate(GPU_SOLO, fpt[c]), c.steps * GPU_STEP_FLOOR_S) for c in configs
                   if shared_cost[c] > 0)
    groups_of = fusion_groups(list(configs), 32, share)

    def batched_s(costs: dict[RunConfig, float]) -> float:
        return sum(max(sum(costs[c] / _rate(GPU_BATCHED, fpt[c]) for c in group),
                       max(c.steps for c in group) * GPU_STEP_FLOOR_S) for group in groups_of)

    gpu_batched = batched_s(shared_cost)
    groups = len(groups_of)
    split_by = tuple(a.replace("_", " ") for a in ("width", "depth", "batch_size") if len(grid.values(a)) > 1)
    shared = [chain for chain in chains if len(chain) > 1]
    sharing = None
    if shared:
        tokens = sum(trained_steps(chain) * chain[-1].tokens_per_step for chain in chains)
        train = sum(fpt[c] * c.tokens for c in configs)
        sharing = Sharing(sum(len(chain) for chain in shared), len(shared), tokens, cpu_alone, batched_s(cost),
                          sum(fpt[chain[-1]] * trained_steps(chain) * chain[-1].tokens_per_step for chain in chains)
                          / train if train else 1.0)
    note = None
    if not shared and grid.trainer is None:
        note = "share_runs = false: every budget trains alone" if not grid.share_runs else sharing_note(configs)
    return CostEstimate(grid, _factors(grid), len(configs), sum(c.tokens for c in configs), flops, refine_runs,
                        refine_flops, cpu_s, workers, source, gpu_solo, gpu_batched, groups, split_by, sharing, note)


def _product_text(grid: Grid, factors: tuple[tuple[str, int], ...]) -> str:
    """'2 arms x 2 widths x 6 rates x 5 seeds', or per arm where the arms sweep different rates: 'mup: 2 widths
    x 5 rates x 5 seeds + sp: 2 widths x 6 rates x 5 seeds' (a product that multiplies out to the runs)."""
    counts = {p: len(grid.rates_of(p)) for p in grid.parametrization}
    if len(set(counts.values())) <= 1:
        return " x ".join(f"{n} {what}" for what, n in factors)
    rest = [(what, n) for what, n in factors if what not in ("arms", "rates")]
    return " + ".join(f"{p}: " + " x ".join(f"{n} {what}" for what, n in [*rest[:-1], ("rates", k), rest[-1]])
                      for p, k in counts.items())


def _factors(grid: Grid) -> tuple[tuple[str, int], ...]:
    """What multiplies the runs: the arms, each axis with several values, the rates (the most any arm has)
    and the seeds."""
    names = {"width": "widths", "tokens": "token budgets", "depth": "depths", "batch_size": "batch sizes"}
    rates = max(len(grid.rates_of(p)) for p in grid.parametrization)
    tuned = (("rates", rates),) if rates > 1 or not grid.sweep else ()
    swept = ((f"{grid.sweep} values", len(grid.sweep_log2)),) if grid.sweep else ()
    return (("arms", len(grid.parametrization)), *((names[a], len(grid.values(a))) for a in AXES
                                                   if len(grid.values(a)) > 1), *tuned, *swept,
            ("seeds", len(grid.seeds)))


def _store_rates(plan: Plan, store: Any, fpt: dict[RunConfig, float]) -> list[float]:
    """FLOP/s of this grid's runs already in `store` on a CPU (none without a store)."""
    if store is None:
        return []
    rates = []
    for cfg in plan.configs:
        record = store.load(plan.key(cfg))
        speed = record.result.tokens_per_s if record is not None else None
        if speed and str(record.result.device).startswith("cpu"):
            rates.append(fpt[cfg] * speed)
    return rates


# --- refinement: the rates a grid's [refine] table adds, from its coarse runs ---------------------------

def refinement_rates(coarse: list[float], argmin: float, step: float, span: float) -> list[float]:
    """The extra lr_log2 values around `argmin`: every `step` within `span`, except rates already measured."""
    n = int(round(span / step))
    rates = [round(argmin + k * step, 6) for k in range(-n, n + 1)]
    return [x for x in rates if min(abs(x - c) for c in coarse) > 1e-6 and coarse[0] < x < coarse[-1]]


def refinement_configs(grid: Grid, coarse_df: pd.DataFrame) -> list[RunConfig]:
    """The refinement runs of `grid`, given its collected coarse runs; [] without a `[refine]` table. They
    refine the curve of the grid's tuned key: the learning rate, or the swept key (spec refuses `[refine]` for
    a joint sweep of both)."""
    if grid.refine is None:
        return []
    by_cell: dict[tuple, RunConfig] = {}
    for cfg in run_configs(grid):
        by_cell.setdefault(tuple(getattr(cfg, k) for k in CELL), cfg)
    x_col = x_column(grid.tuned)
    extra = []
    for key, template in by_cell.items():
        coarse = sorted(grid.sweep_log2 if grid.sweep else grid.rates_of(template.parametrization))
        mask = np.logical_and.reduce([coarse_df[k] == v for k, v in zip(CELL, key)])
        cell = coarse_df[mask & coarse_df[x_col].isin(coarse)]
        losses = cell.assign(loss=np.where(cell["status"] != "ok", np.inf, cell["loss"]))  # diverged or unstable
        curve = losses.groupby(x_col)["loss"].mean()
        if not np.isfinite(curve.to_numpy()).any():
            continue
        argmin = float(curve.idxmin())
        if argmin in (coarse[0], coarse[-1]):
            continue  # censored: refining inside the grid would not find it
        for x in refinement_rates(coarse, argmin, grid.refine.step_log2, grid.refine.span_log2):
            at_x = template.at_sweep(x) if grid.sweep else dataclasses.replace(template, lr_log2=x)
            extra += [dataclasses.replace(at_x, seed=s) for s in grid.seeds]
    return extra


def refinement_advice(grid: Grid, df: pd.DataFrame) -> list[str]:
    """For a grid of results trained elsewhere (nothing is trained here): per cell, the rates a `[refine]`
    table asks for around the seed-mean argmin that some seed has not run, as lines to act on; [] without
    a `[refine]` table or when nothing is missing."""
    if grid.refine is None:
        return []
    lines = []
    shown = tuple(a for a in ("depth", "batch_size") if df[a].nunique() > 1)
    for key, cell in df.groupby(list(CELL), sort=True):
        par, *values = cast(tuple, key)  # pandas types group keys as Hashable
        where = Cell(str(par), *(int(v) for v in values)).where(shown)
        losses = cell.assign(loss=np.where(cell["status"] != "ok", np.inf, cell["loss"]))
        curve = losses.groupby("lr_log2")["loss"].mean()
        if not np.isfinite(curve.to_numpy()).any():
            continue
        measured = sorted(float(x) for x in curve.index)
        argmin = float(measured[int(np.argmin(curve.to_numpy()))])
        if argmin in (measured[0], measured[-1]):
            side = "below" if argmin == measured[0] else "above"
            lines.append(f"{where}: the optimum lies {side} the "
                         f"measured rates (2^{argmin:g}): run rates {side} it first")
            continue
        n = int(round(grid.refine.span_log2 / grid.refine.step_log2))
        wanted = [round(argmin + k * grid.refine.step_log2, 6) for k in range(-n, n + 1)]
        seeds = sorted(set(cell["seed"]))
        ran = {(round(float(x), 6), s) for x, s in zip(cell["lr_log2"], cell["seed"])}
        missing = [x for x in wanted if any((x, s) not in ran for s in seeds)]
        if missing:
            lines.append(f"{where}: run lr_log2 "
                         f"{', '.join(f'{x:g}' for x in missing)} for seeds {', '.join(map(str, seeds))} "
                         f"(every {grid.refine.step_log2:g} within {grid.refine.span_log2:g} of the argmin "
                         f"2^{argmin:g})")
    return lines
