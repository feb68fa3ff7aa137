"""How numbers read in messages, ids and reports: token budgets, durations and losses."""

from __future__ import annotations

import math

__all__ = ["format_duration", "format_loss", "format_tokens", "parse_count", "plural"]

_BINARY = ((2**30, "G"), (2**20, "M"), (2**10, "K"))
_DECIMAL = ((10**12, "T"), (10**9, "B"))


def format_tokens(n: int) -> str:
    """A token budget as people write it, and as `parse_count` reads it back: 1048576 -> '1M' and 131072 ->
    '128K' (binary multiples, what mupcheck's own grids use), 4e9 -> '4B' and 1.14e10 -> '11.4B' (decimal, what
    scaling studies use); any other count in exact e-notation, 1000000 -> '1e6' and 8192000 -> '8.192e6' (K and
    M are binary here: a decimal million written '1M' would read back as 1048576, issue 42). Of the exact forms
    (and the plain number), the shortest; a tie goes to the first. Never '3906250K' for 4e9, nor '8000K'."""
    candidates = [f"{n // div}{suffix}" for div, suffix in _BINARY if n and n % div == 0 and n // div < 1024]
    for div, suffix in _DECIMAL:
        if n and n % (div // 1000) == 0 and n >= div:  # at most three decimals: 11.4B, 1.125T
            candidates.append(f"{n / div:.3f}".rstrip("0").rstrip(".") + suffix)
    if n >= 1000 and not candidates:
        exponent = len(str(n)) - 1
        if n % 10 ** max(exponent - 3, 0) == 0:  # at most four significant digits
            mantissa = f"{n / 10**exponent:.3f}".rstrip("0").rstrip(".")
            candidates.append(f"{mantissa}e{exponent}")
    return min([*candidates, str(n)], key=len)


def plural(n: int, word: str) -> str:
    """'1 run', '2 runs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
