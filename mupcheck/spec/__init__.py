"""The experiment's specification: a grid file, validated, and the runs it expands into.

    grid = load_grid("grids/smoke.toml")      # GridError naming the file and key on any mistake
    for cfg in run_configs(grid): ...         # one RunConfig per (parametrization, width, tokens, lr, seed)

Four concerns, one module each: `schema` (every TOML key declared once: the settings tables, `RunSettings`,
`RunConfig`, `Grid`, `Cell`), `validate` (reading a file: types, ranges, `extends`, results grids), `checks`
(keys that are valid alone but impossible together) and `factories` (a user's model and optimizer factories).
This package is the public face of all four.
"""

from mupcheck.spec.factories import factory_takes, import_factory
from mupcheck.spec.schema import (
    AXES,
    BACKENDS,
    BUILTIN_MODELS,
    BUILTIN_OPTIMIZERS,
    IMPORTED_MODEL,
    LINT_CODES,
    LR_BATCH_RULES,
    LR_LOG2_RANGE,
    MODEL_SWEEP_KEYS,
    MUP_ARMS,
    PARAMETRIZATIONS,
    RESULT_COLUMNS,
    SETTINGS_KEYS,
    SWEEP_KEYS,
    TRAINER_MODEL,
    Cell,
    CoordCheckConfig,
    Grid,
    LintSettings,
    NoiseSettings,
    Parametrization,
    RefineSettings,
    ResultsSettings,
    RunConfig,
    RunSettings,
    StabilitySettings,
    TrainerSettings,
    TransferSettings,
    arm_config,
    coord_widths,
    non_embedding_params,
    run_configs,
    setting_default,
    sweep_value,
    swept_quantity,
)
from mupcheck.spec.validate import load_grid, parse_grid

__all__ = ["AXES", "BACKENDS", "BUILTIN_MODELS", "BUILTIN_OPTIMIZERS", "IMPORTED_MODEL", "LINT_CODES",
           "LR_BATCH_RULES", "LR_LOG2_RANGE", "MODEL_SWEEP_KEYS", "MUP_ARMS", "PARAMETRIZATIONS",
           "RESULT_COLUMNS", "SETTINGS_KEYS", "SWEEP_KEYS", "TRAINER_MODEL", "Cell", "CoordCheckConfig", "Grid",
           "LintSettings", "NoiseSettings", "Parametrization", "RefineSettings", "ResultsSettings",
           "RunConfig", "RunSettings", "StabilitySettings", "TrainerSettings", "TransferSettings", "arm_config",
           "coord_widths", "non_embedding_params", "factory_takes", "import_factory", "load_grid",
           "parse_grid", "run_configs", "setting_default", "sweep_value", "swept_quantity"]
