"""Property-based tests of what users hand mupcheck: over random mutations of a valid grid file and of a valid
run record and of a results table, every input either loads or is refused with one line naming the file and
the key (a grid, a table) or is set aside as corrupt with one warning (a record): never a traceback (issues 26,
35).

Counts of inputs tried (hypothesis, fixed seed; this project's 2-core machine): 300 structured grid
mutations, 300 text mutations of a grid file, 300 structured record mutations, 200 text mutations of a
record, 150 results tables (69 judged end to end, 81 refused in one line); each test counts the inputs it ran
and asserts at least that many.
"""

from __future__ import annotations

import json
import math
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_GRID, fake_result

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mupcheck.errors import MupcheckError  # noqa: E402
from mupcheck.result import RunRecord  # noqa: E402
from mupcheck.spec import load_grid  # noqa: E402
from mupcheck.store import CorruptRecordWarning, Store  # noqa: E402

TABLES = "[transfer]\nmax_regret = 0.005\n[refine]\nstep_log2 = 0.5\n"
VALID = tomllib.loads(TINY_GRID.format(model="gpt", extra=TABLES))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                database=None)

scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=12), st.just(""), st.just("gpt"), st.just("pkg.mod:build"))
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=6), scalars, max_size=3))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _toml(d: dict[str, Any]) -> str:
    plain = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    tables = [f"[{json.dumps(k)}]\n" + "\n".join(f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
              for k, v in d.items() if isinstance(v, dict)]
    return "\n".join(plain + tables) + "\n"


@st.composite
def mutated_grids(draw) -> dict[str, Any]:
    grid = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["delete", "replace", "add", "table"]))
        keys = list(grid)
        if action == "delete" and keys:
            grid.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            grid[draw(st.sampled_from(keys))] = draw(values)
        elif action == "add":
            grid[draw(st.sampled_from(["depth", "lr_log2", "widths", "seeds", "unknown_key", "results", "model",
                                       "stability", "warmup", "tokens"]))] = draw(values)
        else:
            table = draw(st.sampled_from(["transfer", "refine", "stability", "coord_check", "lint"]))
            grid[table] = {draw(st.sampled_from(["max_regret", "step_log2", "min_margin_log2", "widths", "bogus",
                                                 "ignore"])): draw(values)}
    return grid


def _loads_or_one_line(path: Path) -> None:
    try:
        load_grid(path)
    except MupcheckError as e:
        message = str(e)
        assert message and "\n" not in message.strip() and str(path) in message, message


def _tries(test, minimum: int) -> None:
    """Run a hypothesis test, counting the inputs it tried; at least `minimum` of them."""
    tried: list[int] = []
    test(tried)
    assert len(tried) >= minimum, f"tried {len(tried)} inputs"


def test_a_mutated_grid_loads_or_is_one_line_naming_the_file(tmp_path):
    @seed(26)
    @settings(max_examples=300, **SETTINGS)
    @given(grid=mutated_grids())
    def check(tried, grid):
        path = tmp_path / f"fuzz{len(tried)}.toml"
        path.write_text(_toml(grid))
        _loads_or_one_line(path)
        tried.append(1)

    _tries(check, 300)


def test_a_grid_file_with_its_text_damaged_loads_or_is_one_line(tmp_path):
    text = TINY_GRID.format(model="gpt", extra="")

    @seed(26)
    @settings(max_examples=300, **SETTINGS)
    @given(cut=st.integers(0, 400), junk=st.text(max_size=8))
    def check(tried, cut, junk):
        cut %= len(text)
        path = tmp_path / f"fuzz{len(tried)}.toml"
        path.write_text(text[:cut] + junk + text[cut + len(junk) // 2:], errors="surrogateescape")
        _loads_or_one_line(path)
        tried.append(1)

    _tries(check, 300)


def _valid_record() -> dict[str, Any]:
    return RunRecord("k" * 24, {"config": {"width": 16, "lr_log2": -8.0}, "data_fingerprint": "x"},
                     fake_result(2.5), {"date": "2026-11-27"}).to_dict()


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)


@st.composite
def mutated_records(draw) -> Any:
    record = _valid_record()
    for _ in range(draw(st.integers(1, 3))):
        target = record
        path = draw(st.lists(st.sampled_from(["result", "key_material", "config", "checkpoints", "fused", "loss",
                                              "status", "steps", "provenance", "key"]), min_size=1, max_size=2))
        for step in path[:-1]:
            target = target.get(step) if isinstance(target, dict) and isinstance(target.get(step), dict) else target
        if isinstance(target, dict):
            if draw(st.booleans()):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = draw(json_values)
    return record


def _load_or_set_aside(store: Store, text: str) -> None:
    path = store.path("k" * 24)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, errors="surrogateescape")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = store.load("k" * 24)
    if record is None:
        assert [w.category for w in caught] == [CorruptRecordWarning]
        assert path.with_name(path.name + ".corrupt").exists()
    else:
        assert isinstance(record, RunRecord) and record.result.status in ("ok", "unstable", "diverged")
        record.result.judged_status()  # and it can be judged


def test_a_mutated_record_loads_or_is_set_aside_with_one_warning(tmp_path):
    @seed(26)
    @settings(max_examples=300, **SETTINGS)
    @given(record=mutated_records())
    def check(tried, record):
        _load_or_set_aside(Store(tmp_path / f"s{len(tried)}"), json.dumps(record))
        tried.append(1)

    _tries(check, 300)


def test_a_record_with_its_text_damaged_loads_or_is_set_aside(tmp_path):
    text = json.dumps(_valid_record(), indent=2)

    @seed(26)
    @settings(max_examples=200, **SETTINGS)
    @given(cut=st.integers(0, 2000), junk=st.text(max_size=6))
    def check(tried, cut, junk):
        cut %= len(text)
        _load_or_set_aside(Store(tmp_path / f"r{len(tried)}"), text[:cut] + junk + text[cut + 1:])
        tried.append(1)

    _tries(check, 200)


# --- results tables (issue 35): any table pandas can read is judged, or refused in one line --------------------

_COLUMNS = ("width", "tokens", "lr", "lr_log2", "seed", "loss", "status", "parametrization", "depth", "batch_size",
            "params", "schedule", "notes", "curve", "initial_loss", "train_loss@10")
cells = st.one_of(st.just(""), st.just("nan"), st.integers(-5, 5000), st.floats(-20, 1e12), st.just(math.nan),
                  st.sampled_from(["ok", "diverged", "unstable", "FINISHED", "sp", "mup", "cosine", "[1, 2]", "1e9",
                                   "4B", "abc", "-1", "0.001", "2.5"]))


@st.composite
def tables(draw: Any) -> Any:
    """A table of a few runs: some of mupcheck's columns (lr and loss mostly among them), in any order, a valid
    sweep of one or two widths with, half the time, one cell damaged."""
    import pandas as pd

    columns = draw(st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=8, unique=True))
    if draw(st.integers(0, 4)):
        columns = list(dict.fromkeys(["lr", "loss", *columns]))
    n = draw(st.integers(1, 14))
    rows = []
    for k in range(n):
        base = {"lr": 2.0 ** (-10 + k % 7), "loss": 3.0 + 0.05 * ((k % 7) - 3) ** 2, "width": 32 * (1 + k // 7),
                "tokens": 2**20, "seed": 0, "status": "ok", "parametrization": "mup", "depth": 2, "batch_size": 16,
                "params": 1e6, "schedule": "cosine", "lr_log2": -10 + k % 7, "notes": "", "curve": "[3.5, 3.1]",
                "initial_loss": 3.6, "train_loss@10": 3.2}
        rows.append({c: base[c] for c in columns})
    table = pd.DataFrame(rows, columns=columns).astype(object)
    if draw(st.booleans()):
        table.iloc[draw(st.integers(0, n - 1)), draw(st.integers(0, len(columns) - 1))] = draw(cells)
    return table


def test_any_table_pandas_reads_is_judged_or_refused_in_one_line(tmp_path):
    """Never a traceback: the grid loads and its whole suite (optima, verdicts, laws, report text) renders, or the
    load stops with one GridError line naming the file."""
    from mupcheck.outputs.report import render_report
    from mupcheck.outputs.verdicts import GridSuite

    @seed(35)
    @settings(max_examples=150, **SETTINGS)
    @given(table=tables())
    def check(tried, table):
        folder = tmp_path / f"t{len(tried)}"
        folder.mkdir()
        table.to_csv(folder / "runs.csv", index=False)
        path = folder / "theirs.toml"
        path.write_text('name = "theirs"\nresults = "runs.csv"\n')
        try:
            grid = load_grid(path)
        except MupcheckError as e:
            assert "\n" not in str(e).strip() and str(path) in str(e) or "runs.csv" in str(e), str(e)
            tried.append(1)
            return
        suite = GridSuite(grid)
        render_report(suite, {}, [])
        tried.append(1)

    _tries(check, 150)
