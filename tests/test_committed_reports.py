"""Every committed report regenerates from its committed run records, identically (issue 34).

A committed report is `reports/<name>.md` with its grid in `grids/<name>.toml` and its records in
`reports/<name>.store` (a grid that trains) or in the results files its grid names (a results grid);
`reports/changes/<name>.md` is its "What changed" section. This test writes each report
again, the way docs/development.md says they are written, and compares it with the committed file, apart from
the provenance rows that name when and at which commit it was written. A change of method that moves a number
fails here until the reports are regenerated and their "What changed" sections say what moved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mupcheck.outputs.cli import main

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
COMMITTED = sorted(p.stem for p in REPORTS.glob("*.md") if (ROOT / "grids" / f"{p.stem}.toml").is_file())
# Provenance rows that change with every regeneration: when, at which commit, and the output folder.
VOLATILE = ("report written", "grid repository", "command")


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


def test_the_committed_reports_are_found():
    assert len(COMMITTED) >= 9, COMMITTED


@pytest.mark.parametrize("name", COMMITTED)
def test_a_committed_report_regenerates_identically_from_its_records(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(regenerate_command(name, str(tmp_path))) == 0, capsys.readouterr().err
    for suffix, stable in ((".md", _stable_markdown), (".json", _stable_json)):
        fresh, committed = (tmp_path / f"{name}{suffix}").read_text(), (REPORTS / f"{name}{suffix}").read_text()
        assert stable(fresh) == stable(committed), (
            f"reports/{name}{suffix} is stale: regenerate it with `mupcheck {' '.join(regenerate_command(name))}` "
            f"and say what moved in reports/changes/{name}.md")
