"""The analysis, pandas only: run records to a DataFrame, the optimum of each cell, transfer verdicts,
the drift law along tokens."""
