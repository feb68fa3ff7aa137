"""Where sweeps trained elsewhere come from: the tables and tracking systems teams log them to.

`tables` reads CSV, JSONL and Parquet files, and judges every source's runs alike; `mlflow_store`,
`tensorboard_logs` and `optuna_study` read a tracking system's store into a raw table of runs in its own
column names (`base`: what they share). Each source ends as the same runs (one row per run: parametrization,
width, tokens, lr_log2, seed, loss, status, ...), so that nothing downstream knows where a sweep came from.
The readers sit below the grid's schema: they know the vocabulary (`mupcheck.vocab`), not the grid.
"""
