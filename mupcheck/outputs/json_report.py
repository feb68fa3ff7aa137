"""The suite as JSON: `reports/<grid>.json`, for other tools and CI dashboards.

    data = suite_json(suite, provenance)       # a dict of plain values (JSON has no NaN: unknown is null)
    json.dumps(data)

The same `GridSuite` the markdown report and the pytest items render: the numbers cannot disagree.
The schema is versioned (`schema`); fields are only ever added within a version. Floats are log2 of the
tuned key (`tuned.key`: the learning rate unless the grid sweeps another key) unless named otherwise;
regrets are fractions (0.005 = 0.5%); intervals are 95%, `[lo, hi]` or null. A cell's `lr_log2` is its
learning rate optimum (null where the grid tunes another key); `optimum_log2` is the tuned key's.

    schema       "mupcheck.report/1"
    grid         {name, path, imported, not_stated: the axes a results table never gave, whose coordinate in
                 every cell (0, or the default depth and batch size) is a placeholder}
    tuned        {key, sweep_log2, joint}                    what each cell's curve runs along
    counts       {pass, fail, xfail, xpass, inconclusive}
    outcomes     [{id, kind, outcome, summary}]                 every check, as pytest shows it
    cells        [{parametrization, width, tokens, depth, batch_size, lr_log2, interval, censored, n_seeds, n_found,
                   loss, stability_log2, stability_interval, stability_censored, margin_log2,
                   margin_interval, flags, tuned, optimum_log2, joint_lr_log2, joint_lr_interval, resolution}]
                 (resolution: a coarse fit's systematic error in log2, 0 for the local fit)
                 (joint_...: a joint sweep's learning-rate optimum, with the swept key tuned per seed)
    comparisons  [{id, kind, axis, parametrization, fixed, at, ref, other, outcome, verdict, transferred,
                   shift, interval, noise, band, band_outer, band_sides, band_source, regret, regret_interval,
                   regret_source, regret_noise, regret_diverged, regret_read_at, regret_diverged_nearby, reason,
                   borderline, beta}]
                 (noise: where the shift's interval came from: "paired seeds", or the noise model's source;
                 band: the shifts known to cost at most max_regret; band_outer: past it, known to cost more
                 (null: no run says where), equal to band where the fit locates the edge; band_sides: how the
                 sides below and above the optimum were read;
                 regret_source: "measured", "interpolated", "fitted" (inside the fit's span only) or "at least"
                 (a lower bound from the run at regret_read_at, between the optimum and the transferred rate;
                 regret_diverged_nearby: the next rate beyond it, where every seed diverged, else null);
                 regret_noise: the noise model's source for a one-seed regret's interval, else null;
                 borderline: why a decisive verdict's deciding bound lies near its threshold, else null)
    stability    [{id, axis, parametrization, fixed, ref, other, outcome, transferred, boundary,
                   boundary_censored, margin, interval, min_margin, reason}]
    missing      [{parametrization, width, tokens, depth, batch_size, runs}]   cells left out: runs not in the store
    noise        {<parametrization>: {optimum: {sd, df, source, detail} | null, loss: the same | null,
                  law: the same | null, notes: [sentence]}}
                 (df null where exact; the loss SD is relative; law: the cross-check, the cells' optima about a
                 smooth law; notes: what it says of the model)
    laws         {<parametrization>: {width: {slope, interval, n_seeds, seeds_used, residual_df} | null,
                   tokens: {beta, interval, curvature, curvature_interval, lack_of_fit, n_seeds, seeds_used,
                            residual_df} | null,
                   margin_tokens: {slope, interval} | null, margin_width: {slope, interval} | null,
                   depth, batch_size: {slope, interval, n_seeds, seeds_used, residual_df} | null,
                   scaling: {c, a, a_interval, b, b_interval, g, g_interval, terms, cells, seeds_used, residual_df,
                             lack_of_fit} | null (a size ladder, or a results table with `params`),
                   depth_by_tokens, batch_size_by_tokens: {<tokens>: the same at one budget} (several budgets)}}
                 (n_seeds: the grid's seeds; seeds_used: those with an optimum in every cell, which the
                 interval rests on; residual_df > 0: one seed, the interval from the cells' residuals;
                 `fixed` is the value of the paired axis: tokens along width, width along the others;
                 `at` the other axes' values: {depth, batch_size, tokens})
    provenance   {<label>: <text>}                              as in the markdown report
"""

from __future__ import annotations

import math
from typing import Any

from mupcheck.analysis.drift import AxisLaw, MarginLaw
from mupcheck.analysis.noise import Noise
from mupcheck.analysis.optima import CellOptimum
from mupcheck.analysis.scaling import ScalingLaw
from mupcheck.outputs.verdicts import GridSuite

__all__ = ["SCHEMA", "suite_json"]

SCHEMA = "mupcheck.report/1"


def _num(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _pair(iv: tuple[float, float] | None) -> list[float | None] | None:
    return None if iv is None else [_num(iv[0]), _num(iv[1])]


def _cell(o: CellOptimum, lr: CellOptimum | None = None) -> dict[str, Any]:
    """A cell's numbers; `lr`: under a joint sweep, the same cell's learning-rate optimum."""
    optimum = _num(o.optimum_log2) if o.found else None
    return {
        "parametrization": o.parametrization, "width": o.width, "tokens": o.tokens, "depth": o.depth,
        "batch_size": o.batch_size,
        "lr_log2": optimum if o.tuned == "lr" else None, "interval": _pair(o.interval),
        "tuned": o.tuned, "optimum_log2": optimum,
        "joint_lr_log2": _num(lr.optimum_log2) if lr is not None and lr.found else None,
        "joint_lr_interval": _pair(lr.interval) if lr is not None else None,
        "censored": o.censored, "n_seeds": o.n_seeds, "n_found": len(o.found_optima), "loss": _num(o.loss),
        "stability_log2": _num(o.boundary), "stability_interval": _pair(o.boundary_interval),
        "stability_censored": o.boundary_censored, "margin_log2": _num(o.margin),
        "margin_interval": _pair(o.margin_interval), "flags": list(o.flags), "resolution": _num(o.resolution),
    }


def _noise(n: Noise | None) -> dict[str, Any] | None:
    if n is None:
        return None
    return {"sd": _num(n.sd), "df": None if math.isinf(n.df) else n.df, "source": n.source, "detail": n.detail}


def _axis(law: AxisLaw | None) -> dict[str, Any] | None:
    return None if law is None else {"slope": _num(law.slope), "interval": _pair(law.interval), "n_seeds": law.n_seeds,
                                     "seeds_used": law.seeds_used, "residual_df": law.residual_df}


def _scaling(law: ScalingLaw | None) -> dict[str, Any] | None:
    """The published form: log2 lr* = c - a log2 N - b log2 D (+ g log2 B); a, b, g null where the term does not
    enter; intervals 95% (over seeds when seeds_used > 0, else from the one fit's residuals)."""
    if law is None:
        return None
    out: dict[str, Any] = {"c": _num(law.coef[0]), "terms": list(law.terms), "cells": law.cells,
                           "seeds_used": law.seeds_used, "residual_df": law.residual_df,
                           "lack_of_fit": law.lack_of_fit}
    for name, letter, sign in (("params", "a", -1.0), ("tokens", "b", -1.0), ("batch_size", "g", 1.0)):
        value, iv = law.term(name)
        out[letter] = _num(sign * value) if math.isfinite(value) else None
        out[f"{letter}_interval"] = None if iv is None else sorted([_num(sign * iv[0]), _num(sign * iv[1])])
    return out


def _margin(law: MarginLaw | None) -> dict[str, Any] | None:
    return None if law is None else {"slope": _num(law.slope), "interval": _pair(law.interval)}


def suite_json(suite: GridSuite, provenance: dict[str, str]) -> dict[str, Any]:
    """Every outcome of the suite and the numbers behind it, as plain JSON values."""
    outcomes = suite.outcomes()
    counts = {k: sum(o.outcome == k for o in outcomes) for k in ("pass", "fail", "xfail", "xpass", "inconclusive")}
    by_id = {o.check.id: o.outcome for o in outcomes}
    comparisons = []
    for check_id, v in suite.verdicts.items():
        c = v.comparison
        comparisons.append({
            "id": check_id, "kind": suite.planned[check_id].kind, "axis": c.axis, "parametrization": c.parametrization,
            "fixed": c.fixed, "at": dict(c.held + c.at), "ref": c.ref, "other": c.other, "outcome": v.outcome,
            "verdict": by_id[check_id],
            "transferred": _num(v.transferred), "shift": _num(v.shift), "interval": _pair(v.interval),
            "noise": v.noise or None,
            "band": _pair(v.band), "band_outer": _pair(v.bands.outer), "band_sides": list(v.bands.sides),
            "band_source": v.band_source, "regret": _num(v.regret),
            "regret_interval": _pair(v.regret_interval), "regret_source": v.regret_source,
            "regret_noise": v.regret_at.noise or None,
            "regret_diverged": v.regret == math.inf, "regret_read_at": _num(v.regret_at.read_at),
            "regret_diverged_nearby": _num(v.regret_at.diverged_nearby), "reason": v.reason,
            "borderline": v.borderline or None, "beta": v.beta,
        })
    stability = []
    for check_id, sv in suite.stability.items():
        c = sv.comparison
        stability.append({
            "id": check_id, "axis": c.axis, "parametrization": c.parametrization, "fixed": c.fixed, "ref": c.ref,
            "other": c.other, "outcome": sv.outcome, "transferred": _num(sv.transferred),
            "boundary": _num(sv.boundary), "boundary_censored": sv.boundary_censored, "margin": _num(sv.margin),
            "interval": _pair(sv.interval), "min_margin": sv.min_margin, "reason": sv.reason,
        })
    laws: dict[str, Any] = {}
    for par in suite.grid.parametrization:
        width, drift = suite.width_law(par), suite.drift(par)
        laws[par] = {
            "width": None if width is None else {"slope": _num(width.slope), "interval": _pair(width.interval),
                                                 "n_seeds": width.n_seeds, "seeds_used": width.seeds_used,
                                                 "residual_df": width.residual_df},
            "tokens": None if drift is None else {
                "beta": _num(drift.beta), "interval": _pair(drift.interval), "curvature": _num(drift.curvature),
                "curvature_interval": _pair(drift.curvature_interval), "lack_of_fit": drift.lack_of_fit,
                "n_seeds": drift.n_seeds, "seeds_used": drift.seeds_used, "residual_df": drift.residual_df},
            "margin_tokens": _margin(suite.margin_law(par, "tokens")),
            "scaling": _scaling(suite.scaling(par)),
            "margin_width": _margin(suite.margin_law(par, "width")),
        }
        for axis in ("depth", "batch_size"):
            laws[par][axis] = _axis(suite.axis_law(par, axis))
            if len(suite.grid.tokens) > 1:
                laws[par][f"{axis}_by_tokens"] = {str(t): _axis(suite.axis_law(par, axis, t))
                                                  for t in suite.grid.tokens}
    return {
        "schema": SCHEMA,
        "grid": {"name": suite.grid.name, "path": suite.grid.path, "imported": suite.grid.imported,
                 "not_stated": list(suite.grid.not_stated)},
        "tuned": {"key": suite.grid.tuned, "sweep_log2": list(suite.grid.sweep_log2), "joint": suite.grid.joint},
        "counts": counts,
        "outcomes": [{"id": o.check.id, "kind": o.check.kind, "outcome": o.outcome, "summary": o.summary}
                     for o in outcomes],
        "cells": [_cell(o, suite.lr_optima.get(k)) for k, o in suite.optima.items()],
        "comparisons": comparisons,
        "stability": stability,
        "missing": [{"parametrization": c.parametrization, "width": c.width, "tokens": c.tokens, "depth": c.depth,
                     "batch_size": c.batch_size, "runs": n} for c, n in suite.missing],
        "noise": {par: {"optimum": _noise(suite.noise(par).optimum), "loss": _noise(suite.noise(par).loss),
                        "law": _noise(suite.noise(par).law), "notes": list(suite.noise(par).notes)}
                  for par in suite.grid.parametrization},
        "laws": laws,
        "provenance": dict(provenance),
    }
