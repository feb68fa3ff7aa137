"""The training engine: data, models, optimizers, and the solo and batched ways of training runs.

Each module is imported by name (`mupcheck.engine.solo`, ...); this package imports nothing itself,
so that importing one part does not pull in the others.
"""

# Part of every run's store key. Bump it with any change that can alter what a run trains to (data
# order, init, models, optimizers, schedules, divergence, evaluation): records of the old engine are then
# never reused. A refactoring that leaves results alone keeps it, so that committed run records (the
# evidence behind committed reports) stay readable. The sources' hash is kept in each record's
# provenance, for who wants to know exactly which code trained it.
ENGINE_VERSION = "2"
