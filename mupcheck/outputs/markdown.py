"""How the report's tables read: a markdown table, an optimum with its interval, a shift, a regret, an outcome.

Shared by the report's sections (`report.py`, `law_sections.py`), so that a number reads the same wherever
it appears.
"""

from __future__ import annotations

import math

from mupcheck.analysis.optima import CellOptimum
from mupcheck.analysis.transfer import Verdict

__all__ = ["SHOWN", "cell_text", "interval_text", "regret_text", "shift_text", "table"]


# How each outcome reads in the report (pytest shows the same outcome: see mupcheck.outputs.suite).
SHOWN = {"pass": "pass", "fail": "FAIL", "xfail": "xfail (expected break)",
         "xpass": "XPASS: expected break did not happen", "inconclusive": "inconclusive"}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cell_text(opt: CellOptimum) -> str:
    if not math.isfinite(opt.fit.x0):
        return "all diverged"
    if opt.censored:
        return f"{'<=' if opt.censored == 'low' else '>='} {opt.fit.x0:g} (censored)"
    text = f"{opt.optimum_log2:.2f}"
    if opt.interval:
        text += f" [{opt.interval[0]:.2f}, {opt.interval[1]:.2f}]"
    return text


def shift_text(v: Verdict) -> str:
    if not math.isfinite(v.shift):
        return "n/a"
    return f"{v.shift:+.2f}" + (f" [{v.interval[0]:+.2f}, {v.interval[1]:+.2f}]" if v.interval else "")


def regret_text(v: Verdict) -> str:
    return v.regret_at.text()


def interval_text(value: float, interval: tuple[float, float] | None, censored: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    if censored:
        return f">= {value:.2f} (beyond the rates)"
    return f"{value:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
