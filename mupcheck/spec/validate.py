"""A grid file read and validated: types and ranges of every key, `extends`, per-arm tables, results grids.

    grid = load_grid("grids/smoke.toml")      # GridError naming the file and key on any mistake
    grid = parse_grid(raw_table, "where it came from")

`_Validator` checks each key by the kind its schema field declares (`mupcheck.spec.schema`), then
`mupcheck.spec.checks` checks the keys together. A results grid (`results = ...`) reads its table here to learn
the axes it does not list (`mupcheck.sources`), which imports pandas: only for such grids.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import tomllib
from pathlib import Path
from typing import Any

from mupcheck.errors import GridError
from mupcheck.sources.base import KEY_HELP, KINDS, OPTIONAL_KEYS, REQUIRED_KEYS
from mupcheck.spec.checks import check_combinations, check_transfer
from mupcheck.spec.factories import FACTORY_RE, factory_depth
from mupcheck.spec.schema import (
    BUILTIN_MODELS,
    BUILTIN_OPTIMIZERS,
    IMPORTED_MODEL,
    LINT_CODES,
    MUP_ARMS,
    RESULT_COLUMNS,
    SETTINGS_KEYS,
    TRAINER_MODEL,
    Cell,
    CoordCheckConfig,
    Grid,
    LintSettings,
    NoiseSettings,
    RefineSettings,
    ResultsSettings,
    RunSettings,
    StabilitySettings,
    TrainerSettings,
    TransferSettings,
    setting_default,
    toml_fields,
)
from mupcheck.vocab import SKIP, STATUSES

__all__ = ["load_grid", "parse_grid"]



_REQUIRED = ("name", "model", "widths", "tokens", "lr_log2")


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file. Raises `GridError` naming the file and key on any mistake."""
    return parse_grid(_read_raw(Path(path), ()), str(path))


def _read_raw(p: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The file's table, with `extends = "other.toml"` resolved: its keys override the other file's,
    table by table, so that a variant of a grid states only what differs."""
    if not p.is_file():
        raise GridError(str(p), None, "no such grid file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GridError(str(p), None, f"not valid TOML: {e}") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise GridError(str(p), "extends", f"must be the path of another grid file, got {parent!r}")
    parent_path = (p.parent / parent).resolve()
    if parent_path in (*seen, p.resolve()):
        raise GridError(str(p), "extends", f"{parent} extends this file again (a cycle)")
    if not parent_path.is_file():
        raise GridError(str(p), "extends", f"no grid file {parent} (paths are taken from this file's folder)")
    base = _read_raw(parent_path, (*seen, p.resolve()))
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def parse_grid(raw: dict[str, Any], path: str = "<grid>") -> Grid:
    """Validate a parsed TOML table into a `Grid`."""
    allowed = toml_fields(Grid)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise GridError(path, unknown[0], f"unknown key; allowed keys: {', '.join(sorted(allowed))}")
    if "results" in raw:
        return _parse_results_grid(raw, path)
    if "trainer" in raw:
        if "model" in raw:
            raise GridError(path, "model", "a grid with a [trainer] trains with the team's own code: leave `model` out")
        raw = {**raw, "model": TRAINER_MODEL}
    for required in _REQUIRED:
        if required not in raw:
            raise GridError(path, required, "required key is missing")
    raw, sp_model = _split_model_table(raw, path)
    raw, arm_rates = _split_arm_table(raw, path, "lr_log2")
    raw, arm_optimizers = _split_arm_table(raw, path, "optimizer")
    values = _Validator(path, raw).fields(Grid)
    values.setdefault("base_width", min(values["widths"]))
    if "depth" not in raw and "depths" not in raw:
        values["depth"] = factory_depth(values["model"])
    _resolve_axis(values, raw, path, "depths", "depth")
    _resolve_axis(values, raw, path, "batch_sizes", "batch_size")
    values.setdefault("base_depth", min(values["depths"]))
    grid = Grid(path=path, sp_model=sp_model, arm_lr_log2=arm_rates, arm_optimizer=arm_optimizers, **values)
    check_combinations(grid, raw)
    return grid


def _resolve_axis(values: dict[str, Any], raw: dict[str, Any], path: str, axis: str, scalar: str) -> None:
    """`depths = [...]` or the scalar `depth` (and so for batch sizes): one of them, never both. The scalar
    then holds the smallest value (what a coordinate check and the lint build)."""
    if axis in raw and scalar in raw:
        raise GridError(path, axis, f"set either `{scalar}` (one value) or `{axis}` (an axis to sweep), not both")
    if axis in values:
        values[scalar] = values[axis][0]
    else:
        values[axis] = (values.get(scalar, setting_default(scalar)),)


# The axes a results grid may list (else they are read off its results) and the settings its rows are picked by.
_RESULT_AXES = ("widths", "tokens", "lr_log2", "seeds", "parametrization", "depths", "batch_sizes")


def _parse_results_grid(raw: dict[str, Any], path: str) -> Grid:
    """A grid of results trained elsewhere: `name` and `results` are required; the axes it does not list are
    read off the results (mupcheck.sources reads them, which imports pandas: only for such grids)."""
    # Imported here, not at the top: the table readers import pandas, which costs 0.8 s at every pytest
    # collection of a grid that trains (python -X importtime, the project's 2-core CPU).
    from mupcheck.sources import tables

    if "name" not in raw:
        raise GridError(path, "name", "required key is missing")
    if "model" in raw:
        raise GridError(path, "model", "a grid trains a model or reads `results` trained elsewhere, not both")
    for key in ("coord_check", "lint"):
        if key in raw:
            raise GridError(path, key, "needs a model to check; a results grid has none")
    if "depth_alpha" in raw:
        raise GridError(path, "depth_alpha", "is a depth rule mupcheck applies to the models it trains; a results "
                                             "grid judges runs trained elsewhere")
    for key in ("sweep", "sweep_log2"):
        if key in raw:
            raise GridError(path, key, "a results grid judges the learning rate's optimum; sweeping another key is "
                                       "for grids that train")
    for axis, scalar in (("depths", "depth"), ("batch_sizes", "batch_size")):
        if axis in raw and scalar in raw:
            raise GridError(path, axis, f"set either `{scalar}` (pick one) or `{axis}` (judge several), not both")
    values = _Validator(path, raw).fields(Grid)
    settings: ResultsSettings = values.pop("results")
    picked = tuple(sorted((k, raw[k]) for k in SETTINGS_KEYS if k in raw))
    listed = tuple((k, values[k]) for k in _RESULT_AXES if k in values)
    settings = dataclasses.replace(settings, picked=picked, listed=listed)
    found = tables.read_results(settings.where(), Path(path).parent, path, dict(settings.columns),
                                settings.duplicates, dict(picked), dict(listed), SETTINGS_KEYS, settings.ignore,
                                dict(settings.status))
    derived = tables.derived_axes(found.frame)
    for axis in _RESULT_AXES:
        if axis in derived:
            values.setdefault(axis, derived[axis])
    for scalar in ("depth", "batch_size"):  # a setting the results record once: what the report shows
        if scalar not in values and scalar in found.frame and found.frame[scalar].nunique() == 1:
            values[scalar] = int(found.frame[scalar].iloc[0])
    values.setdefault("base_width", min(values["widths"]))
    for axis, scalar in (("depths", "depth"), ("batch_sizes", "batch_size")):
        values.setdefault(axis, (values.get(scalar, setting_default(scalar)),))
        values[scalar] = values[axis][0]
    values.setdefault("base_depth", values["depths"][0])
    stated = _stated_settings(found.frame, dict(picked))
    settings = dataclasses.replace(settings, stated=stated, left_out=found.left_out, columns_read=found.columns,
                                   inputs=tuple((f.path, f.sha256, f.rows) for f in found.files))
    cells = tuple(sorted({Cell(str(p), int(w), int(t), int(d), int(b)) for p, w, t, d, b in zip(
        found.frame["parametrization"], found.frame["width"], found.frame["tokens"],
        found.frame["depth"] if "depth" in found.frame else [values["depth"]] * len(found.frame),
        found.frame["batch_size"] if "batch_size" in found.frame else [values["batch_size"]] * len(found.frame))}))
    grid = Grid(path=path, model=IMPORTED_MODEL, results=settings, cells=cells,
                shapes=_shapes(found.frame, path), **values)
    check_transfer(grid)
    return grid


def _shapes(frame: Any, path: str) -> tuple[tuple[int, int, float], ...]:
    """(width, depth, params) per model shape, from a `params` column (one value per shape); () without one."""
    if "params" not in frame:
        return ()
    depth = frame["depth"] if "depth" in frame else 0
    out = []
    for (width, d), group in frame.assign(depth=depth).groupby(["width", "depth"]):
        counts = sorted(set(float(n) for n in group["params"]))
        if max(counts) > 1.01 * min(counts):
            raise GridError(path, "results", f"the rows of width {width} and depth {d} give several `params` "
                                             f"({', '.join(f'{n:.4g}' for n in counts[:4])}): one per model shape")
        out.append((int(width), int(d), float(statistics.median(counts))))
    return tuple(out)


def _stated_settings(frame: Any, picked: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The settings a results grid states: those its file picks, and those its table gives one value of. The
    report shows these and says "not stated" for the others, never a default as if it had been measured."""
    stated = {k: str(v) for k, v in picked.items()}
    for column in sorted(SETTINGS_KEYS & set(frame.columns)):
        values = frame[column].astype(str).str.strip()
        if column not in stated and values.nunique() == 1:
            stated[column] = values.iloc[0]
    return tuple(sorted(stated.items()))


def _split_arm_table(raw: dict[str, Any], path: str, key: str) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """`lr_log2 = {mup = [...], sp = [...]}` or `optimizer = {custom = "pkg:opt", sp = "adamw"}`: one value per
    arm, each checked as the plain key would be. The plain key then holds the union of the rates (what the
    report and the plots span) or the muP arm's optimizer. Issue 26: u-muP's optimum lies 7-8 octaves above
    its SP twin's, and its optimizer refuses the SP model, so one list and one optimizer cannot serve both."""
    table = raw.get(key)
    if not isinstance(table, dict):
        return raw, ()
    pars = raw.get("parametrization", ["mup", "sp"])
    if not isinstance(pars, list) or set(table) != set(pars):
        raise GridError(path, key, f"a table gives one value per arm of `parametrization` ({pars}), got arms "
                                   f"{sorted(table)}")
    checked = {arm: _Validator(path, {f"{key}.{arm}": value}).fields_of(f"{key}.{arm}", key) for arm, value in
               table.items()}
    if key == "lr_log2":
        union = sorted({x for values in checked.values() for x in values})
        return {**raw, key: union}, tuple((arm, tuple(checked[arm])) for arm in pars)
    main_arm = next((arm for arm in pars if arm in MUP_ARMS), pars[0])
    return {**raw, key: table[main_arm]}, tuple((arm, checked[arm]) for arm in pars)


def _split_model_table(raw: dict[str, Any], path: str) -> tuple[dict[str, Any], str | None]:
    """`model = {mup = "pkg:build", sp = "pkg:build_sp"}` (or custom instead of mup): the muP arm's factory
    as `model`, and the SP arm's own factory."""
    table = raw["model"]
    if not isinstance(table, dict):
        return raw, None
    if set(table) not in ({"mup", "sp"}, {"custom", "sp"}):
        raise GridError(path, "model", "a table gives one factory per arm: {mup = \"pkg:build\", sp = "
                                       f"\"pkg:build_sp\"}} (or custom instead of mup), got keys {sorted(table)}")
    for arm, spec in table.items():
        if not isinstance(spec, str) or not FACTORY_RE.match(spec):
            raise GridError(path, f"model.{arm}", f"must be a factory written 'package.module:function', got {spec!r}")
    main = table.get("mup") or table["custom"]
    return {**raw, "model": main}, table["sp"]


class _Validator:
    """Type and range checks for the keys of one table; each failure names the key and what is allowed."""

    def __init__(self, path: str, raw: dict[str, Any], prefix: str = ""):
        self.path, self.raw, self.prefix = path, raw, prefix

    def fields(self, cls: type) -> dict[str, Any]:
        """The keys of `cls` present in this table, each checked as its field's metadata says."""
        out = {}
        for name, f in toml_fields(cls).items():
            if name not in self.raw:
                continue
            rule = {k: v for k, v in f.metadata.items() if k != "kind"}
            value = getattr(self, f.metadata["kind"])(name, **rule)
            if value is not None:
                out[name] = value
        return out

    def fields_of(self, key: str, field_name: str) -> Any:
        """The value under `key` checked as the Grid field `field_name` is (for per-arm tables)."""
        f = toml_fields(Grid)[field_name]
        rule = {k: v for k, v in f.metadata.items() if k != "kind"}
        return getattr(self, f.metadata["kind"])(key, **rule)

    def fail(self, key: str, message: str) -> GridError:
        return GridError(self.path, self.prefix + key, message)

    def string(self, key: str, pattern: str | None = None, allowed: str = "") -> str:
        val = self.raw[key]
        if not isinstance(val, str) or not val:
            raise self.fail(key, f"must be a non-empty string, got {val!r}")
        if pattern and not re.match(pattern, val):
            raise self.fail(key, f"{val!r} is not allowed; use {allowed}")
        return val

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        val = self.raw[key]
        if val not in choices:
            raise self.fail(key, f"must be one of {', '.join(map(repr, choices))}, got {val!r}")
        return val

    def boolean(self, key: str) -> bool:
        val = self.raw[key]
        if not isinstance(val, bool):
            raise self.fail(key, f"must be true or false, got {val!r}")
        return val

    def integer(self, key: str, minimum: int | None = None) -> int:
        val = self.raw[key]
        if not _is_int(val):
            raise self.fail(key, f"must be an integer, got {val!r}")
        if minimum is not None and val < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {val}")
        return val

    def number(self, key: str, minimum: float | None = None, maximum: float | None = None,
               below: float | None = None, above: float | None = None) -> float:
        val = self.raw[key]
        if not _is_number(val) or not math.isfinite(val):
            raise self.fail(key, f"must be a finite number, got {val!r}")
        if above is not None and val <= above:
            raise self.fail(key, f"must be > {above}, got {val}")
        if minimum is not None and val < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {val}")
        if maximum is not None and val > maximum:
            raise self.fail(key, f"must be <= {maximum}, got {val}")
        if below is not None and val >= below:
            raise self.fail(key, f"must be < {below}, got {val}")
        return float(val)

    def _list(self, key: str, kind: str) -> list:
        """A list, or one value standing for a list of one (`tokens = 1e9`, `parametrization = "sp"`)."""
        val = self.raw[key]
        if isinstance(val, (str, int, float)) and not isinstance(val, bool):
            return [val]
        if not isinstance(val, list) or not val:
            raise self.fail(key, f"must be a non-empty list of {kind}, got {val!r}")
        return val

    def _sorted(self, key: str, vals: list) -> None:
        if any(b <= a for a, b in zip(vals, vals[1:])):
            raise self.fail(key, f"must be strictly increasing (sorted, no repeats), got {vals}")

    def int_list(self, key: str, minimum: int) -> tuple[int, ...]:
        """Integers; a whole number written as a float counts (`tokens = [4e9, 1.14e10]`: decimal budgets)."""
        vals = self._list(key, "integers")
        bad = [x for x in vals if not (_is_int(x) or (_is_number(x) and math.isfinite(x) and float(x).is_integer()))
               or x < minimum]
        if bad:
            raise self.fail(key, f"must hold integers >= {minimum}, got {bad[0]!r}")
        vals = [int(x) for x in vals]
        self._sorted(key, vals)
        return tuple(vals)

    def string_list(self, key: str) -> tuple[str, ...]:
        vals = self._list(key, "strings")
        bad = [x for x in vals if not isinstance(x, str) or not x]
        if bad:
            raise self.fail(key, f"must hold non-empty strings, got {bad[0]!r}")
        return tuple(vals)

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        val = self.raw[key]
        if not isinstance(val, dict) or not all(isinstance(v, (str, int, float)) for v in val.values()):
            raise self.fail(key, 'must be a table of NAME = "value" (environment variables)')
        return tuple(sorted((str(k), str(v)) for k, v in val.items()))

    def status_map(self, key: str) -> tuple[tuple[str, str], ...]:
        val = self.raw[key]
        allowed = (*STATUSES, SKIP)
        if not isinstance(val, dict):
            raise self.fail(key, 'must be a table of their status = "ours", e.g. FINISHED = "ok", FAILED = '
                                 '"diverged", RUNNING = "skip"')
        for theirs, ours in val.items():
            if ours not in allowed:
                raise self.fail(f"{key}.{theirs}", f"must be one of {', '.join(allowed)} (skip: not a result, left "
                                                   f"out and counted), got {ours!r}")
        return tuple(sorted(val.items()))

    def float_list(self, key: str, minimum: float = -math.inf, maximum: float = math.inf,
                   what: str = "log2 learning rates") -> tuple[float, ...]:
        vals = self._list(key, "numbers")
        bad = [x for x in vals if not _is_number(x) or not math.isfinite(x)]
        if bad:
            raise self.fail(key, f"must hold finite numbers ({what}), got {bad[0]!r}")
        far = [x for x in vals if not minimum <= x <= maximum]
        if far:
            raise self.fail(key, f"must hold {what} between {minimum:g} and {maximum:g} (2^{minimum:g} .. "
                                 f"2^{maximum:g}), got {far[0]!r}")
        self._sorted(key, vals)
        return tuple(float(x) for x in vals)

    def choice_list(self, key: str, choices: tuple[str, ...]) -> tuple[str, ...]:
        vals = self._list(key, "strings")
        bad = [x for x in vals if x not in choices]
        if bad:
            raise self.fail(key, f"allowed values are {', '.join(map(repr, choices))}, got {bad[0]!r}")
        if len(set(vals)) != len(vals):
            raise self.fail(key, f"has repeated values: {vals}")
        return tuple(vals)

    def model(self, key: str) -> str:
        val = self.string(key)
        if val not in (*BUILTIN_MODELS, TRAINER_MODEL) and not FACTORY_RE.match(val):
            raise self.fail(key, f"{val!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                                 "nor a factory written 'package.module:function'")
        return val

    def optimizer(self, key: str) -> str:
        val = self.string(key)
        if val not in BUILTIN_OPTIMIZERS and not FACTORY_RE.match(val):
            raise self.fail(key, f"{val!r} is neither {' nor '.join(map(repr, BUILTIN_OPTIMIZERS))} nor the model's "
                                 "own optimizer written 'package.module:make_optimizer'")
        return val

    def _subtable(self, name: str, cls: type) -> _Validator:
        val = self.raw[name]
        if not isinstance(val, dict):
            raise self.fail(name, f"must be a table ([{name}])")
        allowed = toml_fields(cls)
        unknown = sorted(set(val) - set(allowed))
        if unknown:
            raise self.fail(f"{name}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return _Validator(self.path, val, prefix=f"{self.prefix}{name}.")

    def transfer(self, key: str) -> TransferSettings:
        return TransferSettings(**self._subtable(key, TransferSettings).fields(TransferSettings))

    def stability(self, key: str) -> StabilitySettings:
        return StabilitySettings(**self._subtable(key, StabilitySettings).fields(StabilitySettings))

    def coord_check(self, key: str) -> CoordCheckConfig:
        return CoordCheckConfig(**self._subtable(key, CoordCheckConfig).fields(CoordCheckConfig))

    def lint(self, key: str) -> LintSettings:
        return LintSettings(**self._subtable(key, LintSettings).fields(LintSettings))

    def reason_map(self, key: str) -> tuple[tuple[str, str], ...]:
        val = self.raw[key]
        if not isinstance(val, dict):
            raise self.fail(key, 'must be a table of finding = "reason", e.g. {"plain-readout" = "our head divides '
                                 'by width in forward"}')
        for code, reason in val.items():
            if code not in LINT_CODES:
                raise self.fail(f"{key}.{code}", f"unknown finding; one of {', '.join(LINT_CODES)}")
            if not isinstance(reason, str) or not reason.strip():
                raise self.fail(f"{key}.{code}", "needs the reason it is silenced, as a non-empty string")
        return tuple(sorted(val.items()))

    def results(self, key: str) -> ResultsSettings:
        val = self.raw[key]
        if isinstance(val, str):
            return ResultsSettings(path=self.string(key))
        if not isinstance(val, dict):
            raise self.fail(key, 'must be the path of a results file (results = "runs.csv") or a [results] table '
                                 "with `path`")
        table = self._subtable(key, ResultsSettings)
        settings = ResultsSettings(**table.fields(ResultsSettings))
        self._source_keys(key, val, settings.source)
        return settings

    def _source_keys(self, key: str, val: dict[str, Any], kind: str) -> None:
        """Each source kind's own keys: those it needs are there, and none of another kind's."""
        for name in REQUIRED_KEYS[kind]:
            if name not in val:
                what = KEY_HELP[name]
                raise self.fail(f"{key}.{name}", f"required key is missing: {what}" + (
                    "" if kind == "table" else f' (source = "{kind}")'))
        own = set(REQUIRED_KEYS[kind]) | set(OPTIONAL_KEYS[kind])
        for name in sorted(KEY_HELP):
            if name in val and name not in own:
                kinds = [k for k in KINDS if name in REQUIRED_KEYS[k] + OPTIONAL_KEYS[k]]
                raise self.fail(f"{key}.{name}", f"belongs to source = {' or '.join(map(repr, kinds))}; this "
                                                 f"[results] table reads source = {kind!r}")

    def column_map(self, key: str) -> tuple[tuple[str, str], ...]:
        val = self.raw[key]
        if not isinstance(val, dict):
            raise self.fail(key, 'must be a table of our name = "their column", e.g. lr = "config.lr"')
        allowed = set(RESULT_COLUMNS) | {f.name for f in dataclasses.fields(RunSettings)}
        for ours, theirs in val.items():
            if ours not in allowed:
                raise self.fail(f"{key}.{ours}", f"not a column mupcheck reads; one of {', '.join(RESULT_COLUMNS)}, "
                                                 "or a grid setting (schedule, depth, ...)")
            if not isinstance(theirs, str):
                raise self.fail(f"{key}.{ours}", f"must be the name of a column in the results (or \"\" to ignore "
                                                 f"their `{ours}` column), got {theirs!r}")
        return tuple(sorted(val.items()))

    def refine(self, key: str) -> RefineSettings:
        return RefineSettings(**self._subtable(key, RefineSettings).fields(RefineSettings))

    def trainer(self, key: str) -> TrainerSettings:
        settings = TrainerSettings(**self._subtable(key, TrainerSettings).fields(TrainerSettings))
        if bool(settings.command) == bool(settings.python):
            raise self.fail(key, "needs one of `command` (a command template) or `python` ('package.module:train')")
        return settings

    def noise(self, key: str) -> NoiseSettings:
        return NoiseSettings(**self._subtable(key, NoiseSettings).fields(NoiseSettings))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
