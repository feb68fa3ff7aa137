"""One training run at a time: a `RunConfig` in, a `RunResult` out (stored by `mupcheck.store`).

    result = train_run(cfg, load_data(cfg.data), device="cpu")
    result.status, result.loss      # "ok" | "diverged", final validation loss (None if diverged)

The run trains for `cfg.steps = tokens // (batch_size * seq_len)` steps with the grid's schedule,
evaluates the fixed validation batches at four checkpoints, and stops early when it diverges
(`mupcheck.engine.runlog`). Weight decay is coupled (torch's), independent of the learning rate, or
set by the AdamW timescale rule; each record stores the effective timescale tau. On CUDA the forward
pass runs under bf16 autocast; on CPU it is float32 and deterministic for a given seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mupcheck.engine.data import TokenData, eval_batches, train_batch
from mupcheck.engine.device import autocast, device_name, resolve_device
from mupcheck.engine.models import build_model, model_logits
from mupcheck.engine.optim import build_optimizer, set_step_lr
from mupcheck.engine.runlog import RunLog
from mupcheck.result import RunResult
from mupcheck.spec import RunConfig

__all__ = ["EVAL_BATCH", "Progress", "evaluate", "solo_losses", "train_run"]

EVAL_BATCH = 32

Progress = Callable[[int, int], None]


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, name: str = "model"
          ) -> torch.Tensor:
    with autocast(device):
        logits = model_logits(model, x, y, name)  # (B, T, V)
    # Half-precision logits are scored in float32; float64 (equivalence tests) stays float64.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


@torch.no_grad()
def evaluate(model: nn.Module, batches: list, device: torch.device) -> float:
    """Mean token-level cross-entropy over fixed batches."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        total += _loss(model, x, y, device).item() * y.numel()
        count += y.numel()
    model.train()
    return total / count


def train_run(cfg: RunConfig, data: TokenData, device: str | torch.device = "cpu",
              progress: Progress | None = None, dtype: torch.dtype = torch.float32) -> RunResult:
    """Train one run and return its result (status, losses, checkpoints, speed, repeats of data).

    `dtype` is the parameter dtype; float64 exists for the batched engines' equivalence tests.
    """
    device = resolve_device(device)
    return _train(cfg, data, device, progress, dtype).result(data, device_name(device))


def solo_losses(cfg: RunConfig, data: TokenData, device: torch.device, steps: int,
                dtype: torch.dtype = torch.float32) -> list[float]:
    """The training loss of the run's first `steps` steps (fewer if it diverges), without evaluation:
    what the batched engines' canary compares a member with."""
    return _train(cfg, data, device, None, dtype, max_steps=steps).losses


def _train(cfg: RunConfig, data: TokenData, device: torch.device, progress: Progress | None, dtype: torch.dtype,
           max_steps: int | None = None) -> RunLog:
    model = build_model(cfg, data.vocab_size).to(device=device, dtype=dtype)
    optimizer = build_optimizer(model, cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    evals = eval_batches(data, cfg.eval_tokens, cfg.seq_len, EVAL_BATCH)
    log = RunLog(cfg)
    for step in range(cfg.steps if max_steps is None else min(max_steps, cfg.steps)):
        t0 = time.perf_counter()
        set_step_lr(optimizer, base_lrs, cfg, step)
        x, y = train_batch(data, step, cfg.seed, cfg.batch_size, cfg.seq_len)
        loss = _loss(model, x.to(device), y.to(device), device, cfg.model)
        if not log.observe(step, loss.item()):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.train_time += time.perf_counter() - t0
        if log.is_checkpoint(step) and max_steps is None:
            t1 = time.perf_counter()
            log.checkpoint(step, evaluate(model, evals, device))
            log.eval_time += time.perf_counter() - t1
        if progress is not None:
            progress(step + 1, cfg.steps)
    return log
