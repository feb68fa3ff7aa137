"""Where sweeps trained elsewhere come from: the tables and tracking systems teams log them to.

`tables` reads CSV, JSONL and Parquet files. Each reader returns the same runs (one row per run: parametrization,
width, tokens, lr_log2, seed, loss, status, ...), so that nothing downstream knows where a sweep came from.
The readers sit below the grid's schema: they know the vocabulary (`mupcheck.vocab`), not the grid.
"""
