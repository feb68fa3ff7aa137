"""The built-in models with a leading member axis: many runs' forward passes as one set of batched kernels.

    forward = native_forward(template)          # None for a model that is not built in
    logits = forward(params, x)                 # params: name -> (M, *shape); x: (M, B, T) -> (M, B, T, V)

The fused engine keeps every member's parameters stacked along a leading axis (`mupcheck.engine.fused`).
For the built-in GPT and MLP this module computes all members' logits directly from those stacks:
every matrix product is one batched matmul over members, embeddings are one lookup into the members'
tables laid end to end, and attention folds the member axis into the batch, (M * B, heads, T, head_dim),
so that it goes through the same `F.scaled_dot_product_attention` call, and the same fused kernels, as a
solo model. No `vmap` is involved: on CUDA, vmap over scaled_dot_product_attention trained NaN or wrong
models (pytorch/pytorch#133964, PR #176265), which is why this path exists.

Everything that makes a member its own model is read from a solo model built the usual way: the names
and shapes of its parameters, the attention scale (muP's 1/d_head or SP's 1/sqrt(d_head)), LayerNorm's
eps, and the readout multiplier (mup's `MuReadout` divides its input by the width multiplier of its own
base shapes). The arithmetic is the solo models' own, in the same order; float64 equivalence with solo
runs is tested step by step (tests/engine/test_fused.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from mup import MuReadout
from torch import nn

from mupcheck.engine.models import GPT, MLP, Block, MultipliedReadout

__all__ = ["BatchedForward", "native_forward"]

Params = dict[str, torch.Tensor]
BatchedForward = Callable[[Params, torch.Tensor], torch.Tensor]


def native_forward(template: nn.Module) -> BatchedForward | None:
    """The member-batched forward of a built-in model (`template` is one member's solo model), or None."""
    if isinstance(template, GPT):
        return _BatchedGPT.from_model(template)
    if isinstance(template, MLP):
        return _BatchedMLP.from_model(template)
    return None


# --- building blocks over stacked parameters ---------------------------------------------------------

def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each member's x @ W.T: x (M, ..., in), weight (M, out, in) -> (M, ..., out), one batched matmul."""
    M, inner = x.shape[0], x.shape[-1]
    out = torch.bmm(x.reshape(M, -1, inner), weight.transpose(1, 2))  # (M, N, out)
    return out.view(*x.shape[:-1], weight.shape[1])


def _embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each member's rows of its own table: ids (M, ...) int64, weight (M, N, C) -> (M, ..., C).
    The tables are laid end to end, so one lookup serves every member."""
    M, N, C = weight.shape
    offsets = (torch.arange(M, device=ids.device) * N).view(M, *([1] * (ids.ndim - 1)))
    return F.embedding(ids + offsets, weight.reshape(M * N, C))


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """nn.LayerNorm with each member's affine: x (M, ..., C), weight and bias (M, C)."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    y = F.layer_norm(x, x.shape[-1:], eps=eps)
    return y * weight.view(shape) + bias.view(shape)


def _readout(x: torch.Tensor, weight: torch.Tensor, mu: tuple[float, int] | None) -> torch.Tensor:
    """The readout: a plain linear (`mu` None: SP), or MuReadout's linear(output_mult * x / width_mult),
    the same operations in the same order, with mup's width_mult = fan_in / base fan-in, `mu` =
    (output_mult, base fan-in). The multiplier is read off x's shape rather than stored: a graph compiled
    with the width dynamic then serves every width, where a stored float is a constant torch.compile guards.
    """
    if mu is None:
        return _linear(x, weight)
    output_mult, base_fan_in = mu
    return _linear(output_mult * x / (x.shape[-1] / base_fan_in), weight)


def _readout_factors(readout: nn.Module) -> tuple[float, int] | None:
    """A MuReadout's (output_mult, base fan-in); SP's MultipliedReadout as (output_mult, its own fan-in), whose
    width multiplier is then 1; None for a plain linear readout."""
    if isinstance(readout, MultipliedReadout):
        return readout.output_mult, readout.in_features
    if not isinstance(readout, MuReadout):
        return None
    infshape = getattr(readout.weight, "infshape", None)
    fan_in = infshape.main if infshape is not None else None
    if fan_in is None or fan_in.dim != readout.weight.shape[-1]:  # build_model sets base shapes under muP
        raise ValueError("MuReadout without base shapes on its fan-in; call mup.set_base_shapes on the model")
    return float(readout.output_mult), int(fan_in.base_dim)


# --- the models ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _BatchedGPT:
    """`mupcheck.engine.models.GPT`, for M members at once."""

    depth: int
    head_dim: int
    attn_scale: float
    eps: tuple[float, ...]  # ln1, ln2 of each block, then ln_f
    readout_mu: tuple[float, int] | None  # MuReadout's (output_mult, base fan-in); None: a plain linear
    branch_scale: float = 1.0  # the depth rule's residual multiplier (models.Block)

    @classmethod
    def from_model(cls, model: GPT) -> _BatchedGPT:
        blocks = [cast(Block, b) for b in model.blocks]
        eps = tuple(e for b in blocks for e in (b.ln1.eps, b.ln2.eps)) + (model.ln_f.eps,)
        attn = blocks[0].attn
        return cls(len(blocks), attn.head_dim, attn.scale, eps, _readout_factors(model.readout),
                   blocks[0].branch_scale)

    def __call__(self, p: Params, idx: torch.Tensor) -> torch.Tensor:
        M, B, T = idx.shape
        seq_len = p["pos_emb.weight"].shape[1]
        if T > seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's seq_len {seq_len}")
        x = _embedding(idx, p["tok_emb.weight"]) + p["pos_emb.weight"][:, None, :T]  # (M, B, T, C)
        for i in range(self.depth):
            pre = f"blocks.{i}."
            h = _layer_norm(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"], self.eps[2 * i])
            x = x + self._branch(self._attention(h, p[pre + "attn.qkv.weight"], p[pre + "attn.proj.weight"]))
            h = _layer_norm(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"], self.eps[2 * i + 1])
            x = x + self._branch(_linear(F.gelu(_linear(h, p[pre + "fc.weight"])), p[pre + "fc_out.weight"]))
        x = _layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], self.eps[-1])
        return _readout(x, p["readout.weight"], self.readout_mu)  # (M, B, T, V)

    def _branch(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.branch_scale == 1.0 else self.branch_scale * y  # as models.Block: no op without a rule

    def _attention(self, x: torch.Tensor, qkv_weight: torch.Tensor, proj_weight: torch.Tensor) -> torch.Tensor:
        M, B, T, C = x.shape
        H, hd = C // self.head_dim, self.head_dim
        q, k, v = _linear(x, qkv_weight).split(C, dim=-1)  # (M, B, T, C) each
        # Members fold into the batch: the solo model's SDPA call on (M * B, H, T, hd).
        q, k, v = (t.reshape(M * B, T, H, hd).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attn_scale)
        return _linear(y.transpose(1, 2).reshape(M, B, T, C), proj_weight)


@dataclass(frozen=True)
class _BatchedMLP:
    """`mupcheck.engine.models.MLP`, for M members at once."""

    depth: int
    context: int
    vocab_size: int
    readout_mu: tuple[float, int] | None  # MuReadout's (output_mult, base fan-in); None: a plain linear
    residual: bool = False
    branch_scale: float = 1.0

    @classmethod
    def from_model(cls, model: MLP) -> _BatchedMLP:
        return cls(len(model.hidden), model.context, model.vocab_size, _readout_factors(model.readout),
                   model.residual, model.branch_scale)

    def __call__(self, p: Params, idx: torch.Tensor) -> torch.Tensor:
        M, B, T = idx.shape
        ctx = self.context
        pad = torch.full((M, B, ctx - 1), self.vocab_size, dtype=idx.dtype, device=idx.device)
        padded = torch.cat([pad, idx], dim=2)  # (M, B, T + context - 1)
        ids = torch.stack([padded[..., ctx - 1 - k: ctx - 1 - k + T] for k in range(ctx)], dim=-1)  # (M, B, T, ctx)
        ids = ids + torch.arange(ctx, device=idx.device) * (self.vocab_size + 1)
        x = _embedding(ids, p["embed.weight"]).sum(dim=3) / math.sqrt(ctx)  # (M, B, T, C)
        for i in range(self.depth):
            y = F.relu(_linear(x, p[f"hidden.{i}.weight"]))
            x = x + self.branch_scale * y if self.residual else y
        return _readout(x, p["readout.weight"], self.readout_mu)  # (M, B, T, V)
