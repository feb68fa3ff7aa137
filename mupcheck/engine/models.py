"""Proxy models under muP (through the `mup` package) and their standard-parametrization twins.

    model = build_model(cfg, vocab_size=256)   # seeded init; muP base shapes already set
    logits = model(tokens)                     # (B, T) int64 -> (B, T, V)

Built-in models, both mapping token ids (B, T) to next-token logits (B, T, V):
- "gpt": pre-LN GPT (learned positions, causal self-attention with head_dim fixed and the number of
  heads growing with width, or with `n_heads` fixed and head_dim growing; 4x MLP, no biases in
  linear layers).
- "mlp": an n-gram MLP: the sum of per-offset embeddings of the last `mlp_context` tokens, `depth`
  hidden ReLU layers of size `width`, and a readout.

muP (Tensor Programs V, arXiv 2203.03466): `MuReadout` readout, attention logits scaled by
1/d_head times a constant that makes it 1/sqrt(d_head) at the base width, fan-in init of hidden
matrices, `mup.set_base_shapes` against `base_width` and a delta model. SP: the same architecture
and init constants, plain `nn.Linear` readout and 1/sqrt(d_head) attention. At width == base_width
both give the same function from the same seed.

A user factory `build(width) -> nn.Module` is used as it is; base shapes are set from
`build(base_width)` and `build(2 * base_width)` (on the meta device, so nearly free) unless every
parameter already carries `infshape`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from mup import MuReadout, set_base_shapes
from torch import nn

from mupcheck.errors import ModelError
from mupcheck.spec import BUILTIN_MODELS, MODEL_SWEEP_KEYS, RunConfig, factory_takes, import_factory, setting_default

__all__ = ["GPT", "MLP", "build_model", "check_logits", "has_base_shapes", "logits_of", "model_logits",
           "takes_targets", "model_factory", "set_mup_base_shapes",
           "width_dims"]

Factory = Callable[[int], nn.Module]


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, head_dim: int, scale: float):
        super().__init__()
        self.head_dim, self.scale = head_dim, scale
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        # The fused attention kernel never materialises the attention logits; coordinate checks set
        # `probe_scores` to route them through this identity, where a forward hook can measure them.
        self.scores = nn.Identity()
        self.probe_scores = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)  # (B, T, C) each
        q, k, v = (t.view(B, T, C // self.head_dim, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        if self.probe_scores:
            self.scores(q @ k.transpose(-2, -1) * self.scale)  # (B, H, T, T), measured only
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, width: int, head_dim: int, attn_scale: float, branch_scale: float = 1.0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, head_dim, attn_scale)
        self.fc = nn.Linear(width, 4 * width, bias=False)
        self.fc_out = nn.Linear(4 * width, width, bias=False)
        self.branch_scale = branch_scale  # (depth / base_depth)^-depth_alpha: CompleteP's residual multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch_scale == 1.0:  # no depth rule: the same operations (and bits) as before the rule existed
            x = x + self.attn(self.ln1(x))
            return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))
        x = x + self.branch_scale * self.attn(self.ln1(x))
        return x + self.branch_scale * self.fc_out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Pre-LN GPT. `parametrization` picks the readout and the attention scale; init is shared."""

    def __init__(self, width: int, depth: int, head_dim: int, vocab_size: int, seq_len: int,
                 parametrization: str = "mup", readout_zero_init: bool = False, query_zero_init: bool = False,
                 n_heads: int = 0, base_width: int | None = None, branch_scale: float = 1.0,
                 output_mult: float = 1.0):
        super().__init__()
        # Either head_dim is fixed and heads grow with width (the default), or n_heads is fixed and
        # head_dim grows with width; only then do muP's and SP's attention scales differ.
        base_head_dim = head_dim
        if n_heads:
            head_dim, base_head_dim = width // n_heads, (base_width or width) // n_heads
        if parametrization == "mup":
            # muP scales attention logits by 1/d_head, times the constant sqrt(d_head at the base width)
            # that makes it equal to SP's 1/sqrt(d_head) there.
            attn_scale = math.sqrt(base_head_dim) / head_dim
        else:
            attn_scale = 1.0 / math.sqrt(head_dim)
        self.tok_emb = nn.Embedding(vocab_size, width)
        self.pos_emb = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, head_dim, attn_scale, branch_scale) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.readout = _readout(width, vocab_size, parametrization, output_mult)
        _init_weights(self)
        if readout_zero_init:
            nn.init.zeros_(self.readout.weight)
        if query_zero_init:
            for block in self.blocks:
                nn.init.zeros_(cast(Block, block).attn.qkv.weight[:width])  # the query rows of the fused qkv matrix

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.pos_emb.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than the model's seq_len {self.pos_emb.num_embeddings}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))  # (B, T, V)

    def hidden_parameters(self) -> list[nn.Parameter]:
        """The parameters of the residual blocks: those CompleteP's depth rule gives their own rates."""
        return list(self.blocks.parameters())


class MLP(nn.Module):
    """n-gram MLP language model: sum of per-offset embeddings of the last `context` tokens. With `residual`,
    each hidden layer is a residual branch, x + branch_scale * relu(layer(x)) (needed by a depth rule)."""

    def __init__(self, width: int, depth: int, vocab_size: int, context: int,
                 parametrization: str = "mup", readout_zero_init: bool = False, residual: bool = False,
                 branch_scale: float = 1.0, output_mult: float = 1.0):
        super().__init__()
        self.context, self.vocab_size = context, vocab_size
        self.residual, self.branch_scale = residual, branch_scale
        # One table for all offsets; row (k, V) is the padding token before the sequence start.
        self.embed = nn.Embedding(context * (vocab_size + 1), width)
        self.hidden = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))
        self.readout = _readout(width, vocab_size, parametrization, output_mult)
        _init_weights(self, gain=math.sqrt(2.0))  # He init: ReLU halves the variance
        if readout_zero_init:
            nn.init.zeros_(self.readout.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        pad = torch.full((B, self.context - 1), self.vocab_size, dtype=idx.dtype, device=idx.device)
        padded = torch.cat([pad, idx], dim=1)  # (B, T + context - 1)
        ids = torch.stack([padded[:, self.context - 1 - k: self.context - 1 - k + T] for k in range(self.context)],
                          dim=-1)  # (B, T, context): token at t - k
        ids = ids + torch.arange(self.context, device=idx.device) * (self.vocab_size + 1)
        x = self.embed(ids).sum(dim=2) / math.sqrt(self.context)  # (B, T, C)
        for layer in self.hidden:
            x = x + self.branch_scale * F.relu(layer(x)) if self.residual else F.relu(layer(x))
        return self.readout(x)  # (B, T, V)

    def hidden_parameters(self) -> list[nn.Parameter]:
        """The hidden layers' parameters: those CompleteP's depth rule gives their own rates."""
        return list(self.hidden.parameters())


class MultipliedReadout(nn.Linear):
    """SP's readout with an output multiplier other than 1: linear(output_mult * x), the operation mup's
    MuReadout applies (less its division by the width multiplier)."""

    def __init__(self, width: int, vocab_size: int, output_mult: float):
        super().__init__(width, vocab_size, bias=False)
        self.output_mult = output_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.output_mult * x)


def _readout(width: int, vocab_size: int, parametrization: str, output_mult: float = 1.0) -> nn.Linear:
    if parametrization == "mup":
        return MuReadout(width, vocab_size, bias=False, output_mult=output_mult)
    if output_mult != 1.0:
        return MultipliedReadout(width, vocab_size, output_mult)
    return nn.Linear(width, vocab_size, bias=False)  # exactly what ran before the multiplier existed


def _init_weights(model: nn.Module, gain: float = 1.0) -> None:
    """Fan-in init for every matrix (readout included: mup rescales it); unit-variance embeddings.

    muP and SP share these constants, so at the base width the two parametrizations coincide.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=gain / math.sqrt(module.in_features))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)


def _scale_init(model: nn.Module, mult: float) -> None:
    """Every weight matrix and embedding times `mult`: their init std times it (LayerNorm gains keep 1)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(mult)


# --- building --------------------------------------------------------------------------------

def model_factory(cfg: RunConfig, vocab_size: int) -> Factory:
    """`width -> nn.Module` for this run's model and parametrization (everything else fixed)."""
    branch_scale = cfg.depth_multiplier ** -cfg.depth_alpha
    if cfg.model == "gpt":
        return lambda w: GPT(w, cfg.depth, cfg.head_dim, vocab_size, cfg.seq_len, cfg.parametrization,
                             cfg.readout_zero_init, cfg.query_zero_init, cfg.n_heads, cfg.base_width, branch_scale,
                             cfg.output_mult)
    if cfg.model == "mlp":
        return lambda w: MLP(w, cfg.depth, vocab_size, cfg.mlp_context, cfg.parametrization,
                             cfg.readout_zero_init, cfg.mlp_residual, branch_scale, cfg.output_mult)
    factory: Callable[..., nn.Module] = load_user_factory(cfg.model)
    kwargs = _user_factory_kwargs(factory, cfg)
    return (lambda w: factory(w, **kwargs)) if kwargs else factory


def _user_factory_kwargs(factory: Callable[..., nn.Module], cfg: RunConfig) -> dict[str, Any]:
    """What a user's factory is called with besides the width: `depth` when it takes it (spec refuses a depth
    axis for a factory without it), and the model's multipliers (MODEL_SWEEP_KEYS) when the grid sweeps or sets
    them; a factory's own defaults stand otherwise."""
    kwargs: dict[str, Any] = {"depth": cfg.depth} if factory_takes(factory, "depth") else {}
    for key in MODEL_SWEEP_KEYS:
        if cfg.sweep == key or getattr(cfg, key) != setting_default(key):
            kwargs[key] = getattr(cfg, key)
    return kwargs


def load_user_factory(spec: str) -> Factory:
    """Import 'package.module:function'."""
    try:
        return import_factory(spec)
    except ModelError as e:
        raise ModelError(f"model {spec!r}: {e}") from None


def logits_of(output: Any, model: str = "model") -> torch.Tensor:
    """The logits in what a model's forward returned: a tensor; the first element of a tuple or list
    (nanoGPT's `(logits, loss)`); the `logits` entry of a dict or attribute of an output object (Hugging
    Face). Anything else is a ModelError naming the model and what is expected."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    raise ModelError(f"model {model!r}: forward returned {type(output).__name__}; expected logits (B, T, V), a "
                     "tuple whose first element is the logits, or a dict/object with `logits`")


def takes_targets(model: nn.Module) -> bool:
    """Whether the model's forward accepts `targets`: nanoGPT's `forward(idx, targets=None)` returns logits for
    the last position only without them, and for every position with them."""
    try:
        return "targets" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def model_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                 name: str = "model") -> torch.Tensor:
    """The model's logits (B, T, V) for token ids x (B, T). A forward that accepts `targets` gets them (the
    loss is computed by mupcheck from the logits all the same, so that every model is scored alike)."""
    output = model(x, targets=y) if y is not None and takes_targets(model) else model(x)
    logits = logits_of(output, name)
    check_logits(logits, x, name)
    return logits


def check_logits(logits: torch.Tensor, x: torch.Tensor, name: str = "model") -> None:
    """ModelError, naming the shapes and the fix, unless logits are (B, T, V) for token ids x (B, T)."""
    if logits.ndim == 3 and tuple(logits.shape[:2]) == tuple(x.shape[-2:]):
        return
    shape, want = tuple(logits.shape), f"({x.shape[-2]}, {x.shape[-1]}, vocab)"
    if logits.ndim == 3 and logits.shape[0] == x.shape[-2] and logits.shape[1] < x.shape[-1]:
        raise ModelError(f"model {name!r}: forward returned logits for {logits.shape[1]} of {x.shape[-1]} positions "
                         f"(shape {shape}, expected {want}); mupcheck scores every position: return logits for all of "
                         "them (nanoGPT does when its forward gets `targets`, which mupcheck passes to a forward "
                         "that accepts them)")
    raise ModelError(f"model {name!r}: forward returned logits of shape {shape}; expected {want} for token ids of "
                     f"shape {tuple(x.shape[-2:])}")


def has_base_shapes(model: nn.Module) -> bool:
    return all(hasattr(p, "infshape") for p in model.parameters())


def build_model(cfg: RunConfig, vocab_size: int) -> nn.Module:
    """Build the run's model from its seed, with muP base shapes set where the parametrization asks."""
    factory = model_factory(cfg, vocab_size)
    # Build the target model first, straight after seeding: the shape-only models below must not
    # consume random numbers, or muP and SP would start from different weights.
    torch.manual_seed(cfg.seed)
    model = _call_factory(factory, cfg.width, cfg.model)
    user = cfg.model not in BUILTIN_MODELS
    if not user and cfg.init_std_mult != 1.0:
        _scale_init(model, cfg.init_std_mult)  # before base shapes: mup's rescaling of the readout keeps it
    if cfg.parametrization == "mup":
        if user and has_base_shapes(model):
            return model  # the factory set base shapes itself: use them as they are
        if user and any(hasattr(p, "infshape") for p in model.parameters()):
            raise ModelError(f"model {cfg.model!r}: some parameters carry `infshape` and others do not; "
                             "call mup.set_base_shapes on the whole model, or on none of it")
        set_mup_base_shapes(model, factory, cfg.base_width, cfg.model)
    elif cfg.parametrization == "sp" and user and any(isinstance(m, MuReadout) for m in model.modules()):
        # The user's own SP factory kept a mup layer: base shapes equal to its own shapes make every width
        # multiplier 1, so MuReadout behaves exactly like nn.Linear.
        if not has_base_shapes(model):
            set_base_shapes(model, None)
    # "custom": the model applies muP itself; nothing is added to it.
    return model


def width_dims(cfg: RunConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """The dims of each parameter whose size changes with width, found by comparing the model's shapes
    at the run's width and at twice that (shape-only builds, on the meta device where the factory allows)."""
    factory = model_factory(cfg, vocab_size)
    here = dict(_shape_model(factory, cfg.width, cfg.model).named_parameters())
    wider = dict(_shape_model(factory, 2 * cfg.width, cfg.model).named_parameters())
    return {name: tuple(d for d, (a, b) in enumerate(zip(p.shape, wider[name].shape)) if a != b)
            for name, p in here.items() if name in wider and p.ndim == wider[name].ndim}


def set_mup_base_shapes(model: nn.Module, factory: Factory, base_width: int, name: str = "model") -> nn.Module:
    """`mup.set_base_shapes` against `factory(base_width)` with `factory(2 * base_width)` as the delta."""
    base = _shape_model(factory, base_width, name)
    delta = _shape_model(factory, 2 * base_width, name)
    try:
        # do_assert=False: mup would refuse a plain nn.Linear readout here; mupcheck's lint reports it
        # instead (with the fix), so that a coordinate check can show what it does to the model.
        return set_base_shapes(model, base, delta=delta, do_assert=False)
    except AssertionError as e:  # mup reports shape mismatches as assertions
        raise ModelError(f"model {name!r}: mup.set_base_shapes failed: {e}") from None


def _shape_model(factory: Factory, width: int, name: str) -> nn.Module:
    """A model used only for its parameter shapes: built on the meta device where the factory allows."""
    try:
        with torch.device("meta"):
            return factory(width)
    except Exception:  # some factories touch real data at build time; fall back to a real build
        state = torch.random.get_rng_state()
        try:
            return _call_factory(factory, width, name)
        finally:
            torch.random.set_rng_state(state)


def _call_factory(factory: Factory, width: int, name: str) -> nn.Module:
    try:
        model = factory(width)
    except Exception as e:
        raise ModelError(f"model {name!r}: build({width}) raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name!r}: build({width}) returned {type(model).__name__}, not an nn.Module")
    return model
