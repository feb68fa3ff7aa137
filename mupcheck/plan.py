"""A plan: a grid resolved against its data and device, with the store key of every run.

    plan = plan_grid(load_grid("grids/smoke.toml"))
    for cfg in plan.configs:
        plan.key(cfg)            # the run's store key

A key is a hash of the run config, the model's source, the engine's source, the data fingerprint,
the device type and the mupcheck version: a changed grid, corpus, model or training code never
reuses a stale record.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch

import mupcheck
from mupcheck.engine import ENGINE_VERSION
from mupcheck.engine.data import TokenData, load_data
from mupcheck.engine.device import pin_device, resolve_device
from mupcheck.fmt import format_tokens
from mupcheck.spec import BUILTIN_MODELS, Grid, RunConfig, run_configs

__all__ = ["Plan", "RunContext", "flops_per_token", "key_config", "model_source_hash", "plan_grid",
           "repeated_data_warning"]

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
_INERT = {"depth_alpha": 0.0, "mlp_residual": False}
_NEEDS = {"base_depth": "depth_alpha"}  # meaningful only when the other setting is not inert


def key_config(cfg: RunConfig) -> dict[str, Any]:
    """The run's config as its key hashes it: settings that change nothing in this run are left out."""
    config = cfg.to_dict()
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
        """Each run's key -> (training FLOPs, steps): what a progress display weighs runs by."""
        return {self.key(c): (self.cost(c), c.steps) for c in self.configs}


def flops_per_token(cfg: RunConfig, vocab_size: int) -> float:
    """Training FLOPs per token of the built-in GPT's shape: 6 x matmul parameters (12 x depth x width^2
    in the blocks, width x vocab in the readout) + 12 x depth x width x seq_len for attention's scores and
    values (PaLM, arXiv 2204.02311, appendix B). For the MLP and users' models, a relative cost only."""
    matmul_params = cfg.depth * 12 * cfg.width**2 + cfg.width * vocab_size
    return 6.0 * matmul_params + 12.0 * cfg.depth * cfg.width * cfg.seq_len


def plan_grid(grid: Grid, device: str | None = None, worker: int | None = None) -> Plan:
    """Load the grid's data, resolve the device (pinned to one GPU for `worker`, see `pin_device`)
    and compute every run's store key."""
    data = load_data(grid.data, grid.grid_dir, grid.vocab_size)
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
