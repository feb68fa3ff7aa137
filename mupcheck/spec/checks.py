"""Cross-key checks of a grid: keys each valid alone but impossible together, named with what would fix them.

    check_combinations(grid, raw)      # GridError naming the file and the key

Run by `mupcheck.spec.validate` once every key has its type and range: budgets too short for a batch, a depth
rule on a user's model, a swept key a factory cannot take, heads that do not divide a width, a reference
width the grid lacks, arms that cannot share a model.
"""

from __future__ import annotations

import math
from typing import Any

from mupcheck.errors import GridError, ModelError
from mupcheck.spec.factories import factory_takes, import_factory
from mupcheck.spec.schema import (
    BUILTIN_MODELS,
    BUILTIN_OPTIMIZERS,
    MODEL_SWEEP_KEYS,
    SWEEP_KEYS,
    TRAINER_MODEL,
    Grid,
    coord_widths,
)

__all__ = ["check_combinations", "check_transfer"]


def check_combinations(g: Grid, raw: dict[str, Any]) -> None:
    """Cross-key checks: things each valid alone but impossible together."""
    p = g.path
    _check_heads_divide(g, (*g.widths, g.base_width), key=None)
    _check_rates_are_log2(g)
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
    check_transfer(g)
    if g.coord_check is not None:
        widths = coord_widths(g)
        if widths[-1] / widths[0] < g.coord_check.min_range:
            raise GridError(p, "coord_check.widths", f"must span at least {g.coord_check.min_range:g}x "
                                                     f"(got {widths[0]}..{widths[-1]}); set [coord_check] widths")
        _check_heads_divide(g, widths, key="coord_check.widths")
    optimizers = [(f"optimizer.{arm}", spec) for arm, spec in g.arm_optimizer] or [("optimizer", g.optimizer)]
    for key, spec in (("model", g.model), ("model.sp", g.sp_model), *optimizers):
        if spec is None or spec in (*BUILTIN_MODELS, *BUILTIN_OPTIMIZERS, TRAINER_MODEL):
            continue
        try:
            import_factory(spec)
        except ModelError as e:
            raise GridError(p, key, str(e)) from None
    _check_arms(g)


def _check_rates_are_log2(g: Grid) -> None:
    """`lr_log2 = [0.001, 0.003, 0.01]` is rates written where their log2 belongs: every run would train near
    lr 1 and diverge, and the suite would pass on nothing. Every value above -1 (rates above 0.5) is refused,
    with the log2 values it probably meant; a grid that truly sweeps such rates lists one at or below -1."""
    for arm in g.parametrization:
        rates = g.rates_of(arm)
        if len(rates) > 1 and all(x > -1 for x in rates):
            key = "lr_log2" if not g.arm_lr_log2 else f"lr_log2.{arm}"
            meant = ", ".join(f"{math.log2(x):.2f}" for x in rates if x > 0)
            raise GridError(g.path, key, f"every value lies above -1, i.e. learning rates above 2^-1 = 0.5 "
                                         f"({', '.join(f'{x:g}' for x in rates)}): lr_log2 holds the log2 of each "
                                         f"rate (2^-10 = 0.001){f'; did you mean [{meant}]' if meant else ''}? To "
                                         "sweep rates that high on purpose, include one value at or below -1")


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
    return next((spec for spec in (g.model, g.sp_model) if spec is not None
                 and spec not in (*BUILTIN_MODELS, TRAINER_MODEL)
                 and not factory_takes(import_factory(spec), key)), None)


def _check_arms(g: Grid) -> None:
    """What each parametrization needs of the model."""
    p, user = g.path, g.model not in (*BUILTIN_MODELS, TRAINER_MODEL)
    if g.model == TRAINER_MODEL:
        return  # the trainer serves every arm itself ({parametrization} in its command)
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


def check_transfer(g: Grid) -> None:
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
