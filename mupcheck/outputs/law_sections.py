"""The report's sections on laws: along tokens (the drift law, candidate rules, the power rule), along depth and
batch size (a batch rule), and the published scaling law over a size ladder.

Each function renders part of `mupcheck.outputs.report`'s markdown from the suite (`GridSuite`), which fitted
every law once; the tables' cells read as the rest of the report's do (`markdown.py`).
"""

from __future__ import annotations

import math
from collections import Counter

from mupcheck.analysis.drift import PUBLISHED, AxisLaw
from mupcheck.analysis.transfer import judge
from mupcheck.fmt import format_tokens
from mupcheck.outputs.markdown import SHOWN, cell_text, regret_text, shift_text, table
from mupcheck.outputs.verdicts import GridSuite, Outcome

__all__ = ["axis_section", "drift_section", "scaling_section"]


def axis_section(suite: GridSuite, axis: str, rules: list[Outcome]) -> list[str]:
    """The law along depth or batch size per parametrization, and a batch rule's verdicts."""
    grid = suite.grid
    if len(grid.values(axis)) < 2:
        return []
    name = axis.replace("_", " ")
    lines = [f"Fit of log2 lr* = a + slope * log2({name}) over the cells with a located optimum (one intercept per "
             "combination of the other axes, one shared slope; 95% interval over seeds, from refitting on each "
             "seed's own optima)." + (" Under a depth rule that works the slope is about 0 (CompleteP, arXiv "
                                      "2505.01618); without one, muP alone is expected to drift." if axis == "depth"
                                      else " For Adam the square-root rule predicts a slope of 0.5 (arXiv "
                                           "2205.10287), for SGD the linear rule 1 (arXiv 1706.02677); both hold "
                                           "below a critical batch size only."), ""]
    for par in grid.parametrization:
        lines.append(f"- {par}: {_law_text(suite.axis_law(par, axis))}.")
        if len(grid.tokens) > 1:  # the same fit at each budget alone: does the slope change with duration?
            lines += [f"  - at tokens {format_tokens(t)} alone: {_law_text(suite.axis_law(par, axis, t))}"
                      for t in grid.tokens]
    if rules:
        lines += ["", f"**Batch rule** (`lr_batch_rule = \"{grid.transfer.lr_batch_rule}\"`): the reference "
                  "optimum moved by (B / B_ref)^exponent, judged like any comparison (on cells not used to fit it).",
                  "", _rule_table(suite, rules, axis, "rule")]
    return lines


def _law_text(law: AxisLaw | None) -> str:
    if law is None:
        return "no law: too few located optima"
    return f"{law.sentence()}; over {law.cells} cells" + (f" ({law.left_out} left out: optimum not located)"
                                                          if law.left_out else "")


def _rule_table(suite: GridSuite, rules: list[Outcome], axis: str, source_header: str) -> str:
    """A rule's verdicts (along tokens or batch size): its exponent's source, the transferred rate, the other
    cell's optimum, how far off, the regret."""
    rows = []
    for o in rules:
        if o.check.id not in suite.verdicts:
            continue  # its rule could not be fitted: the outcome says why
        v = suite.verdicts[o.check.id]
        _, source = suite.rule(v.comparison.parametrization, axis)
        rows.append([v.comparison.parametrization, v.comparison.label, source, f"{v.transferred:.2f}",
                     cell_text(v.other), shift_text(v), regret_text(v), SHOWN[o.outcome]])
    return table(["param.", "comparison", source_header, "transferred lr", "other lr*", "off by [95%]", "regret",
                   "verdict"], rows)


def scaling_section(suite: GridSuite) -> list[str]:
    """The optimum's law in the published form, log2 lr* = c - a log2 N - b log2 D (+ g log2 B), per
    parametrization, with its check and what it says about muP."""
    if not suite.has_scaling:
        return []
    grid = suite.grid
    source = ("N from the results' `params` column" if grid.params_stated else
              "N: non-embedding parameters, 12 x depth x width^2 (give a `params` column for the real counts)")
    lines = [f"Fit over the cells with a located optimum, in the form scaling studies publish ({source}; D: "
             "tokens; B: batch size where it varies). `mupcheck predict --params N --tokens D` reads it at a "
             "target, and says how far that extrapolates.", ""]
    for par in grid.parametrization:
        law = suite.scaling(par)
        if law is None:
            lines.append(f"- {par}: no law: fewer located cells than it has coefficients, or one model size and "
                         "one budget")
            continue
        lines += [f"- {par}: {law.sentence()}.", f"  - check: {law.fit_sentence()}.",
                  f"  - muP: {law.mup_reading()}."]
    return lines


def drift_section(suite: GridSuite, rules: list[Outcome]) -> list[str]:
    """The drift law per parametrization (fitted once, by the suite), candidate rules, the power rule's verdicts."""
    grid = suite.grid
    if len(grid.tokens) < 2:
        return []
    lines = ["Fit of log2 lr*(T) = a_width - beta * log2 T over the cells with a found optimum (one intercept "
             "per width, one shared slope; censored optima left out; 95% interval over seeds, from refitting on "
             "each seed's own optima).", ""]
    rows = []
    for par in grid.parametrization:
        fit = suite.drift(par)
        if fit is None:
            continue
        interval = f"[{fit.interval[0]:.3f}, {fit.interval[1]:.3f}]" if fit.interval else "n/a"
        rows.append([par, "joint", f"{fit.beta:.3f}", interval, fit.sentence()])
        rows += [[par, str(w), f"{b:.3f}", "", f"a = {fit.intercepts[w]:.2f} (joint fit); {a:.2f} alone"]
                 for w, (a, b) in fit.per_width.items()]
    lines += [table(["param.", "width", "beta", "95% interval", "reading"], rows), "", f"*{PUBLISHED}.*", ""]
    for par in grid.parametrization:
        fit = suite.drift(par)
        if fit is None:
            continue
        resid = ", ".join(f"w{w}/{format_tokens(t)}: {r:+.2f}" for w, t, r in fit.residuals)
        lines += [f"- **Is one beta enough?** {par}: {fit.fit_sentence()}. Residuals (cell optimum minus the "
                  f"law, log2): {resid}."]
    lines += [""]
    lines += _rules_compared(suite)
    if rules:
        lines += ["", "**Power rule** (`lr_rule = \"power\"`): the reference optimum moved by (T / T_ref)^-beta, "
                  "judged like any comparison on cells not used to fit beta.", "",
                  _rule_table(suite, rules, "tokens", "beta")]
    return lines


def _rules_compared(suite: GridSuite) -> list[str]:
    """How each candidate beta would carry the shortest budget's optimum along tokens, over all cells."""
    grid = suite.grid
    lines = []
    for par in grid.parametrization:
        comps = [c.comparison for c in suite.planned.values() if c.kind == "transfer" and c.comparison
                 and c.comparison.axis == "tokens" and c.comparison.parametrization == par]
        fit = suite.drift(par)
        if not comps or fit is None:
            continue
        candidates = [("no rule (beta 0)", 0.0), (f"this grid's fit (beta {fit.beta:.3f}; in-sample)", fit.beta),
                      ("the published WSD value (beta 0.5)", 0.5)]
        for name, beta in candidates:
            verdicts = [judge(c, suite.optima, grid.transfer, beta=beta, noise=suite.noise(par)) for c in comps]
            tally = Counter(v.outcome for v in verdicts)
            shifts = [abs(v.shift) for v in verdicts if math.isfinite(v.shift)]
            worst = f"{max(shifts):.2f}" if shifts else "n/a"
            parts = ", ".join(f"{tally[k]} {k}" for k in ("transfers", "breaks", "inconclusive") if tally[k])
            lines.append(f"- {par}, {name}: the transferred optimum misses by at most {worst} log2; of "
                         f"{len(verdicts)} tokens comparisons: {parts}.")
    return lines
