"""Coordinate checks: is the muP implementation itself right, before any sweep?

    df = coord_data(build, make_optimizer, widths=[64, 128, 256, 512], batch=(x, y), steps=4)
    slopes = fit_slopes(df)                 # per module: d log2(size) / d log2(width)
    assert_coords_stable(df)                # CoordCheckError naming the offending modules

Each width is trained a few steps from the same seed on one fixed batch; forward hooks record, for
every module, the mean absolute value of its output (`out`) and of the change of its output since
step 0 (`delta`). Under muP neither grows nor vanishes with width; under SP, activations and their
updates grow. A slope of 0.5 means "x1.41 per doubling of width". Written with our own hooks rather
than mup 1.0.0's `get_coord_data`, which defaults to CUDA and fails on modules that return tuples
or None; here those outputs are handled (the first tensor of a tuple; None is skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mupcheck.checks.lint import LintFinding, apply_ignores, lint
from mupcheck.engine.data import TokenData, train_batch
from mupcheck.engine.models import build_model, model_logits
from mupcheck.engine.optim import build_optimizer
from mupcheck.spec import MUP_ARMS, CoordCheckConfig, Grid, Parametrization, RunConfig, arm_config, coord_widths

__all__ = ["coord_data", "fit_slopes", "slope_table", "assert_coords_stable", "CoordCheckError",
           "check_model", "check_trainer_coords", "coords_frame", "CoordResult"]


class CoordCheckError(AssertionError):
    """Some module's activations grow, or its updates vanish, with width."""


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        return _first_tensor(list(output.values()))
    return None


class _Recorder:
    """Forward hooks on every submodule: mean |output| and mean |output - output at step 0|."""

    def __init__(self, model: nn.Module):
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.initial: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if name]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.record(name, type(module).__name__, _first_tensor(output))
        return hook

    def record(self, name: str, kind: str, out: torch.Tensor | None) -> None:
        """One row: the sizes of a module's output (or of the model's logits) at the current step."""
        if out is None or not out.is_floating_point():
            return
        out = out.detach().float()
        if self.step == 0:
            self.initial[name] = out.clone()
        start = self.initial.get(name)
        delta = (out - start).abs().mean().item() if start is not None and start.shape == out.shape else math.nan
        # "centred": what a softmax sees of an output (log-probabilities and logits differ by a constant).
        centred = (out - out.mean(dim=-1, keepdim=True)).abs().mean().item() if out.ndim else math.nan
        self.rows.append({"module": name, "type": kind, "step": self.step,
                          "out": out.abs().mean().item(), "centred": centred, "delta": delta,
                          "numel": out.numel(), "last_dim": out.shape[-1] if out.ndim else 0,
                          "probabilities": _probabilities(out)})

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _probabilities(out: torch.Tensor) -> bool:
    """Whether an output holds probabilities (non-negative, summing to about 1 over its last dim): attention
    probabilities, and their dropout (which keeps the sum's expectation at 1). They keep their size at any
    width by construction, so they are not judged as logits, whatever module computes them (issue 26:
    mutransformers' GPT-2 with a fixed head count failed on its attention-probability Dropout modules)."""
    if out.ndim == 0 or out.shape[-1] < 2 or bool((out < 0).any()):
        return False
    return abs(float(out.sum(dim=-1).mean()) - 1.0) < 0.25


def _probe_attention(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "probe_scores"):
            setattr(module, "probe_scores", True)  # noqa: B010  # built-in GPT: expose attention logits to the hooks


def coord_data(build: Callable[[int, int], nn.Module], make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
               widths: list[int], batch: tuple[torch.Tensor, torch.Tensor], steps: int = 4,
               seeds: int = 1) -> pd.DataFrame:
    """Long-form table: width, seed, step, module, type, out, delta, numel.

    `build(width, seed)` returns the model (base shapes set); `make_optimizer(model)` its optimizer.
    """
    x, y = batch
    frames = []
    for width in widths:
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = build(width, seed)
            _probe_attention(model)
            optimizer = make_optimizer(model)
            recorder = _Recorder(model)
            try:
                for step in range(steps + 1):
                    recorder.step = step
                    logits = model_logits(model, x, y)  # (B, T, V)
                    # What the loss sees: a hand-written muP may scale its head's output after the head.
                    recorder.record(LOGITS, "model output", logits)
                    if step == steps:
                        break
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            finally:
                recorder.remove()
            frame = pd.DataFrame(recorder.rows)
            frame["width"], frame["seed"] = width, seed
            frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    # A module called several times per forward (shared layers) is averaged per step.
    keys = ["width", "seed", "step", "module", "type"]
    return df.groupby(keys, as_index=False, sort=False).agg(out=("out", "mean"), centred=("centred", "mean"),
                                                            delta=("delta", "mean"), numel=("numel", "first"),
                                                            last_dim=("last_dim", "first"),
                                                            probabilities=("probabilities", "all"))


def fit_slopes(df: pd.DataFrame) -> pd.DataFrame:
    """Per (module, step, quantity): the least-squares slope of log2(size) against log2(width) over all widths
    (`slope`) and over the wider half of them (`upper_slope`: what the size does as width grows, after
    finite-width effects that settle)."""
    if "probabilities" not in df:
        df = df.assign(probabilities=False)  # frames recorded before this column existed
    mean = df.groupby(["module", "type", "step", "width"], sort=False).agg(
        out=("out", "mean"), centred=("centred", "mean"), delta=("delta", "mean"),
        numel=("numel", "first"), last_dim=("last_dim", "first"), probabilities=("probabilities", "all")
    ).reset_index()
    vocab = mean.loc[mean["module"] == LOGITS, "last_dim"].max() if (mean["module"] == LOGITS).any() else -1
    rows = []
    for (module, mtype, step), g in mean.groupby(["module", "type", "step"], sort=False):
        step = int(step)  # type: ignore[call-overload]  # pandas types group keys as Hashable
        g = g.sort_values("width")
        # An output whose size does not change with width contracts a width dimension into a finite
        # one: a readout's logits, or attention logits when the number of heads is fixed. Not probabilities:
        # a softmax's output (and its dropout) is normalised, so its size is fixed whatever the logits do.
        output_like = g["numel"].nunique() == 1 and not bool(g["probabilities"].all())
        # A layer with the logits' shape that is not the logits (a head scaled afterwards, a log-softmax): the
        # model's output row judges the readout, so that muP written by hand is not taken for SP.
        before_logits = output_like and module != LOGITS and g["last_dim"].iloc[0] == vocab
        for quantity in ("out", "centred", "delta"):
            sizes = g[quantity].to_numpy(float)
            widths = g["width"].to_numpy(float)
            upper = widths >= np.median(widths)
            rows.append({"module": module, "type": mtype, "step": step, "quantity": quantity,
                         "slope": _slope(widths, sizes), "upper_slope": _slope(widths[upper], sizes[upper]),
                         "output_like": output_like, "before_logits": bool(before_logits),
                         "sizes": tuple(float(s) for s in sizes),
                         "widths": tuple(int(w) for w in widths)})
    return pd.DataFrame(rows)


def _slope(widths: np.ndarray, sizes: np.ndarray) -> float:
    """log2(size) against log2(width); NaN with fewer than two positive sizes (a zero output says nothing)."""
    ok = np.isfinite(sizes) & (sizes > 0)
    return float(np.polyfit(np.log2(widths[ok]), np.log2(sizes[ok]), 1)[0]) if ok.sum() >= 2 else math.nan


LOGITS = "<logits>"  # the model's output, recorded beside its modules

# In muP's own terms, not mup's classes: a model under "custom" applies muP itself (issue 26: the hints
# said MuReadout and MuAdamW to people who had written neither).
_HINTS = {
    "grow": "activations or updates that grow with width usually mean a readout without a 1/width output "
            "multiplier, hidden-layer learning rates not divided by the width multiplier (mup's MuAdamW/MuSGD "
            "do it; torch's optimizers do not), base shapes never set, or attention scaled by 1/sqrt(d_head) "
            "where head_dim grows with width (muP needs 1/d_head)",
    "init": "logits that keep their size at init mean a readout without a 1/width output multiplier (mup's "
            "MuReadout, or a hand-written division in forward), or attention logits scaled by 1/sqrt(d_head) "
            "where muP needs 1/d_head",
    "vanish": "updates that vanish with width usually mean a learning rate scaled down twice (muP's per-layer "
              "scaling plus a manual 1/width factor) or a readout multiplier applied twice",
}


def assert_coords_stable(df: pd.DataFrame, settings: CoordCheckConfig = CoordCheckConfig()) -> pd.DataFrame:
    """Raise CoordCheckError if, after step 0, any module's output or update grows (or its update
    vanishes) with width beyond the tolerances, or if an output-like quantity (readout or attention
    logits with fixed heads) keeps its size at initialisation; return the per-module worst slopes."""
    widths = sorted(df["width"].unique())
    if widths[-1] / widths[0] < settings.min_range:
        raise ValueError(f"coordinate check needs widths spanning at least {settings.min_range:g}x, "
                         f"got {widths[0]}..{widths[-1]}")
    slopes = fit_slopes(df)
    judged = slopes[~slopes["before_logits"]]
    after = judged[(judged["step"] >= 1) & judged["slope"].notna() & judged["quantity"].isin(("out", "delta"))]
    worst = after.loc[after.groupby(["module", "quantity"])["slope"].idxmax()].sort_values("slope", ascending=False)
    lowest = after[after["quantity"] == "delta"]
    lowest = lowest.loc[lowest.groupby("module")["slope"].idxmin()]
    # Growth counts when it persists over the wider half of the widths: sizes that grow at small widths and
    # settle (x1.46, x1.22, x1.13 per doubling, seen in a correct hand-written muP GPT) are finite-width
    # effects, not a broken parametrization, whose growth does not settle (SP: about +1 per doubling).
    growing = worst[(worst["slope"] > settings.max_growth) & (worst["upper_slope"] > settings.max_growth)]
    vanishing = lowest[lowest["slope"] < -settings.max_vanish].sort_values("slope")
    # At init, output-like quantities are judged on their centred size: log-probabilities and logits differ by a
    # constant per position, and a zero-initialised readout has no size to judge (NaN slope: skipped).
    init = judged[(judged["step"] == 0) & (judged["quantity"] == "centred") & judged["output_like"]
                  & judged["slope"].notna()]
    flat_init = init[init["slope"] > settings.max_init_output_slope].sort_values("slope", ascending=False)
    if growing.empty and vanishing.empty and flat_init.empty:
        return worst
    lines = [f"coordinate check failed over widths {', '.join(map(str, widths))}"]
    if not growing.empty:
        lines.append(f"{len(growing)} module output(s) grow with width (slope > {settings.max_growth:g} "
                     "log2 per doubling), worst first:")
        lines += [_describe(r) for r in growing.itertuples()]
        lines.append(f"  hint: {_HINTS['grow']}")
    if not vanishing.empty:
        lines.append(f"{len(vanishing)} module update(s) vanish with width (slope < -{settings.max_vanish:g}):")
        lines += [_describe(r) for r in vanishing.itertuples()]
        lines.append(f"  hint: {_HINTS['vanish']}")
    if not flat_init.empty:
        lines.append(f"{len(flat_init)} output-like quantit(ies) do not shrink with width at initialisation "
                     f"(slope > {settings.max_init_output_slope:g}; muP expects about -0.5):")
        lines += [_describe(r) for r in flat_init.itertuples()]
        lines.append(f"  hint: {_HINTS['init']}")
    raise CoordCheckError("\n".join(lines))


def slope_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per module: the slope of its output at init, and the largest slopes of output and update after it."""
    slopes = fit_slopes(df)
    after = slopes[(slopes["step"] >= 1) & slopes["quantity"].isin(("out", "delta"))]
    init = slopes[(slopes["step"] == 0) & (slopes["quantity"] == "centred")].set_index("module")["slope"]
    table = after.pivot_table(index=["module", "type"], columns="quantity", values="slope", aggfunc="max", sort=False)
    table = table.rename(columns={"out": "output (max)", "delta": "update (max)"}).reset_index()
    table["update (min)"] = after[after["quantity"] == "delta"].groupby("module")["slope"].min().reindex(
        table["module"]).to_numpy()
    table["output at init"] = init.reindex(table["module"]).to_numpy()
    return table.sort_values("output (max)", ascending=False, ignore_index=True)


def _describe(r: Any) -> str:
    what = {"out": "output", "centred": "centred output", "delta": "update"}[r.quantity]
    sizes = ", ".join(f"{w}: {s:.3g}" for w, s in zip(r.widths, r.sizes))
    return f"  {r.module} ({r.type}) {what} at step {r.step}: slope {r.slope:+.2f}; sizes {sizes}"


# --- running a check for a grid's model --------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CoordResult:
    """A model's coordinate check at one parametrization: the data, the lint findings, the verdict."""

    parametrization: str
    widths: tuple[int, ...]
    data: pd.DataFrame
    findings: tuple[LintFinding, ...]
    error: str | None  # the CoordCheckError message, or None when the check passed

    @property
    def passed(self) -> bool:
        return self.error is None and not any(f.fails for f in self.findings)

    def message(self) -> str:
        parts = [str(f) for f in self.findings] + ([self.error] if self.error else [])
        return "\n".join(parts) if parts else f"coordinate check passed over widths {self.widths}"


def coord_template(grid: Grid, parametrization: Parametrization) -> RunConfig:
    """The run config the check uses: the arm's first run (a swept key at its grid setting), at the check's
    learning rate."""
    cc = grid.coord_check or CoordCheckConfig()
    cfg = arm_config(grid, parametrization)
    model = grid.sp_model if parametrization == "sp" and grid.sp_model else cfg.model
    return replace(cfg, parametrization=parametrization, lr_log2=cc.lr_log2, model=model)


def check_model(grid: Grid, parametrization: Parametrization, data: TokenData) -> CoordResult:
    """Lint and coordinate-check the grid's model at one parametrization."""
    cc = grid.coord_check or CoordCheckConfig()
    widths = coord_widths(grid)
    cfg = coord_template(grid, parametrization)

    def build(width: int, seed: int) -> nn.Module:
        return build_model(replace(cfg, width=width, seed=seed), data.vocab_size)

    findings: tuple[LintFinding, ...] = ()
    batch = train_batch(data, step=0, seed=0, batch_size=cfg.batch_size, seq_len=cfg.seq_len)
    if parametrization in MUP_ARMS:
        models = {w: build(w, 0) for w in widths}
        found = lint(models, build_optimizer(models[widths[-1]], cfg), batch[0], parametrization, grid.base_width)
        findings = tuple(apply_ignores(found, grid.lint))
    df = coord_data(build, lambda m: build_optimizer(m, cfg), list(widths), batch, steps=cc.steps, seeds=cc.seeds)
    try:
        assert_coords_stable(df, cc)
        error = None
    except CoordCheckError as e:
        error = str(e)
    return CoordResult(parametrization, tuple(widths), df, findings, error)


# --- the same check on a team's own trainer (mupcheck.watch in its loop) --------------------------------------

def coords_frame(runs: Iterable[tuple[int, int, Sequence[dict[str, Any]]]]) -> pd.DataFrame:
    """The frame `coord_data` gives, from what `mupcheck.watch` recorded in trainer runs: (width, seed, its
    `coord` objects) per run. Sizes are of each layer's output on a fixed probe batch after each of the first
    steps of the team's own loop."""
    rows = [{"module": c["layer"], "type": c.get("type", ""), "step": int(c["step"]), "width": width, "seed": seed,
             "out": c["size"], "centred": math.nan, "delta": c["update"] if c["step"] else math.nan,
             "numel": c.get("numel", 0), "last_dim": c.get("last_dim", 0), "probabilities": False}
            for width, seed, coords in runs for c in coords]
    return pd.DataFrame(rows)


def check_trainer_coords(grid: Grid, parametrization: str, df: pd.DataFrame) -> CoordResult:
    """The coordinate check of a trainer's own training step (coords_frame); an error says when no run recorded
    coordinates (the trainer never called `mupcheck.watch`) or they span too few widths."""
    cc = grid.coord_check or CoordCheckConfig()
    widths = tuple(sorted(int(w) for w in df["width"].unique())) if len(df) else ()
    if len(widths) < 2:
        return CoordResult(parametrization, widths, df, (), "the trainer recorded no coordinate sizes at two widths "
                                                            "or more: call mupcheck.watch(model) in it "
                                                            "(docs/trainers.md)")
    try:
        assert_coords_stable(df, cc)
        error = None
    except (CoordCheckError, ValueError) as e:
        error = f"{e}\n  in a trainer: {_TRAINER_HINT}"
    return CoordResult(parametrization, widths, df, (), error)


# What the trainer adds to the model's own causes (docs/trainers.md).
_TRAINER_HINT = ("a schedule that writes one rate into every parameter group (group['lr'] = lr, as nanoGPT's loop "
                 "does) erases MuAdamW's per-group width scaling; so do groups built by hand, torch's own optimizer "
                 "where MuAdamW was meant, weight decay scaled by a muP rate, or a model re-initialised, compiled or "
                 "wrapped after set_base_shapes")
