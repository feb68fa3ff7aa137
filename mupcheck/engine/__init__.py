"""The training engine: data, models, optimizers, and the solo and batched ways of training runs.

Each module is imported by name (`mupcheck.engine.solo`, ...); this package imports nothing itself,
so that importing one part does not pull in the others.
"""
