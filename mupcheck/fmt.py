"""How numbers read in messages, ids and reports: token budgets, durations and losses."""

from __future__ import annotations

import math

__all__ = ["format_duration", "format_loss", "format_tokens", "parse_count"]

_BINARY = ((2**30, "G"), (2**20, "M"), (2**10, "K"))
_DECIMAL = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))


def format_tokens(n: int) -> str:
    """A token budget as people write it: 1048576 -> '1M' and 65536 -> '64K' (binary multiples, what mupcheck's
    own grids use), 4e9 -> '4B' and 1.14e10 -> '11.4B' (decimal, what scaling studies use). Of the exact
    forms (and the plain number), the shortest; a tie goes to the binary one. Never '3906250K' for 4e9."""
    candidates = [f"{n // div}{suffix}" for div, suffix in _BINARY if n and n % div == 0]
    for div, suffix in _DECIMAL:
        if n and n % (div // 1000) == 0 and n >= div:  # at most three decimals: 11.4B, 1.125M
            candidates.append(f"{n / div:.3f}".rstrip("0").rstrip(".") + suffix)
    return min([*candidates, str(n)], key=len)


def format_duration(seconds: float) -> str:
    """'1h02m03s' or '2m03s'."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def format_loss(x: float | None) -> str:
    """A loss in a table of curves: '-' for no run, 'diverged' for an infinite loss."""
    if x is None:
        return "-"
    return "diverged" if math.isinf(x) else f"{x:.4f}"


_SUFFIXES = {"K": 2**10, "M": 2**20, "G": 2**30, "B": 10**9, "T": 10**12}


def parse_count(text: str) -> float:
    """A token budget or parameter count as people write it: '1e9', '4000000000', '128K', '1M', '4B', '11.4B'.
    K, M and G are binary (2^10, 2^20, 2^30: what mupcheck's own grids use and `format_tokens` prints), B and T
    decimal (1e9, 1e12: what scaling studies use). ValueError says what is accepted."""
    cleaned = text.strip().replace("_", "")
    try:
        if cleaned and cleaned[-1].upper() in _SUFFIXES:
            value = float(cleaned[:-1]) * _SUFFIXES[cleaned[-1].upper()]
        else:
            value = float(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a count: write 1e9, 4000000000, 128K, 1M (binary: K, M, G) or 4B, "
                         "11.4B (decimal: B, T)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} must be a positive count")
    return value
