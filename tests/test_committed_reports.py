"""Every committed report regenerates from its committed run records (issues 34 and 41).

A committed report is `reports/<name>.md` with its grid in `grids/<name>.toml` and its records in
`reports/<name>.store` (a grid that trains) or in the results files its grid names (a results grid);
`reports/changes/<name>.md` is its "What changed" section. This test writes each report
again, the way docs/development.md says they are written, and compares it with the committed file, apart from
the provenance rows that name when and at which commit it was written. The markdown must match character for
character (its numbers are rounded); the JSON's strings, counts, booleans and keys exactly, and its floats to a
relative RELATIVE_TOLERANCE: another CPU's BLAS moves the last digits of a least squares fit (issue 41 measured
up to 1.7e-12 relative on an AMD EPYC machine), and no method change moves a number that little. A change of
method that moves a number fails here until the reports are regenerated and their "What changed" sections say
what moved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mupcheck.outputs.cli import main

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
COMMITTED = sorted(p.stem for p in REPORTS.glob("*.md") if (ROOT / "grids" / f"{p.stem}.toml").is_file())
# Provenance rows that change with every regeneration: when, at which commit, and the output folder.
VOLATILE = ("report written", "grid repository", "command")
RELATIVE_TOLERANCE = 1e-9


def regenerate_command(name: str, out: str = "reports") -> list[str]:
    """The `mupcheck report` arguments that write a committed report (docs/development.md)."""
    store = ["--store", f"reports/{name}.store"] if (REPORTS / f"{name}.store").is_dir() else []
    args = ["report", f"grids/{name}.toml", *store, "--out", out, "--json"]
    if (REPORTS / "changes" / f"{name}.md").is_file():
        args += ["--changes", f"reports/changes/{name}.md"]
    return args


def _stable_markdown(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not any(line.startswith(f"| {k} |") for k in VOLATILE))


def _stable_json(text: str) -> dict:
    data = json.loads(text)
    data["provenance"] = {k: v for k, v in data["provenance"].items() if k not in VOLATILE}
    return data


def json_differences(fresh: Any, committed: Any, path: str = "$") -> list[str]:
    """Where two parsed JSON documents differ: floats beyond RELATIVE_TOLERANCE (relative to the larger, with an
    absolute floor of the same size for values near zero), anything else at all; each as 'path: fresh != committed'."""
    if isinstance(fresh, bool) or isinstance(committed, bool) or not (
            isinstance(fresh, (int, float)) and isinstance(committed, (int, float))):
        if isinstance(fresh, dict) and isinstance(committed, dict):
            if fresh.keys() != committed.keys():
                return [f"{path}: keys {sorted(fresh.keys() ^ committed.keys())} differ"]
            return [d for k in fresh for d in json_differences(fresh[k], committed[k], f"{path}.{k}")]
        if isinstance(fresh, list) and isinstance(committed, list):
            if len(fresh) != len(committed):
                return [f"{path}: {len(fresh)} items != {len(committed)}"]
            return [d for i, (a, b) in enumerate(zip(fresh, committed)) for d in json_differences(a, b, f"{path}[{i}]")]
        return [] if fresh == committed else [f"{path}: {fresh!r} != {committed!r}"]
    if isinstance(fresh, int) and isinstance(committed, int):  # counts: exact
        return [] if fresh == committed else [f"{path}: {fresh} != {committed}"]
    if math.isclose(fresh, committed, rel_tol=RELATIVE_TOLERANCE, abs_tol=RELATIVE_TOLERANCE):
        return []
    return [f"{path}: {fresh!r} != {committed!r}"]


def test_the_committed_reports_are_found():
    assert len(COMMITTED) >= 9, COMMITTED


@pytest.mark.parametrize("name", COMMITTED)
def test_a_committed_report_regenerates_identically_from_its_records(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    status = main(regenerate_command(name, str(tmp_path)))
    counts = json.loads((REPORTS / f"{name}.json").read_text())["counts"]
    assert status == (1 if counts["fail"] + counts["xpass"] else 0), capsys.readouterr().err  # pytest's status
    stale = (f"is stale: regenerate it with `mupcheck {' '.join(regenerate_command(name))}` and say what moved in "
             f"reports/changes/{name}.md")
    fresh, committed = (tmp_path / f"{name}.md").read_text(), (REPORTS / f"{name}.md").read_text()
    assert _stable_markdown(fresh) == _stable_markdown(committed), f"reports/{name}.md {stale}"
    differences = json_differences(_stable_json((tmp_path / f"{name}.json").read_text()),
                                   _stable_json((REPORTS / f"{name}.json").read_text()))
    assert not differences, f"reports/{name}.json {stale}:\n  " + "\n  ".join(differences[:20])


def _perturbed(value: Any, relative: float) -> Any:
    """Every non-integer float of a parsed JSON document moved by `relative` of itself."""
    if isinstance(value, dict):
        return {k: _perturbed(v, relative) for k, v in value.items()}
    if isinstance(value, list):
        return [_perturbed(v, relative) for v in value]
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        return value * (1 + relative)
    return value


@pytest.mark.parametrize(("relative", "passes"), [(1e-12, True), (-1e-12, True), (1e-6, False)])
def test_the_comparison_takes_another_cpus_last_digits_and_nothing_more(relative, passes, tmp_path, monkeypatch,
                                                                         capsys):
    """Issue 41: another CPU's BLAS moved the committed JSON's floats by up to 1.7e-12 relative, and every case
    here failed. A committed JSON perturbed by 1e-12 still matches its regeneration; by 1e-6 it does not (a
    change of method is still caught)."""
    name = "public_mup_issue66"
    monkeypatch.chdir(ROOT)
    assert main(regenerate_command(name, str(tmp_path))) in (0, 1), capsys.readouterr().err
    committed = _stable_json((REPORTS / f"{name}.json").read_text())
    moved = _perturbed(committed, relative)
    assert moved != committed  # the perturbation reached some floats
    differences = json_differences(_stable_json((tmp_path / f"{name}.json").read_text()), moved)
    assert (not differences) is passes, differences[:5]


def test_report_exits_as_pytest_does_and_says_why_in_its_last_line(tmp_path, monkeypatch, capsys):
    """Issue 42: `mupcheck report` exited 0 with failing checks, while pytest exits 1: a CI gate needs one rule.
    mup#66 has a failing check; the ladder has none, only inconclusive ones, which fail under --inconclusive fail."""
    monkeypatch.chdir(ROOT)
    assert main(["report", "grids/public_mup_issue66.toml", "--out", str(tmp_path)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("1 check of 7 failed, 6 inconclusive"), last
    ladder = ["report", "grids/cpu_ladder.toml", "--store", "reports/cpu_ladder.store", "--out", str(tmp_path)]
    assert main(ladder) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("0 checks of 38 failed, 38 inconclusive")
    assert main([*ladder, "--inconclusive", "fail"]) == 1
