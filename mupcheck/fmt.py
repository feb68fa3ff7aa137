"""How numbers read in messages, ids and reports: token budgets and durations."""

from __future__ import annotations

__all__ = ["format_duration", "format_tokens"]


def format_tokens(n: int) -> str:
    """1048576 -> '1M', 65536 -> '64K'; exact binary or decimal multiples only, else the number."""
    for div, suffix in ((2**30, "G"), (2**20, "M"), (2**10, "K")):
        if n % div == 0:
            return f"{n // div}{suffix}"
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "K")):
        if n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def format_duration(seconds: float) -> str:
    """'1h02m03s' or '2m03s'."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
