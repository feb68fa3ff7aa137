"""The layout's promises (docs/development.md, "Architecture"): the floors hold (no module imports a higher
floor), no import circle (not even a type-only one), imports sit at the top of their module (two exceptions,
each for a measured start-up cost), no module past 600 lines without a reason, persistence and analysis know
nothing of torch, and loading the pytest plugin (which every pytest run in an environment with mupcheck does)
imports neither torch nor pandas."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter import cli as importlinter_cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mupcheck"
TORCH_FREE = ["mupcheck.outputs.plugin", "mupcheck.spec", "mupcheck.store", "mupcheck.result",
              "mupcheck.provenance", "mupcheck.frame", "mupcheck.analysis.optima", "mupcheck.analysis.transfer",
              "mupcheck.analysis.drift", "mupcheck.analysis.stability", "mupcheck.analysis.noise",
              "mupcheck.sources.tables"]
# Imports inside functions (besides the optional extras, each imported where it is used, so that mupcheck works
# without them): each pays a measured start-up cost only where it is needed, and says so in a comment.
OPTIONAL_EXTRAS = ("ray", "mlflow", "tensorboard", "optuna")
MAX_INNER_IMPORTS = 2
MAX_LINES = 600


def test_no_module_imports_a_higher_floor(monkeypatch):
    """The layers contract in pyproject.toml, checked by import-linter: it lists every forbidden import."""
    monkeypatch.chdir(ROOT)
    assert importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(set(graph.find_modules_directly_imported_by(m)) & set(modules)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_there_is_no_import_circle_not_even_a_type_only_one():
    assert _circles(grimp.build_graph("mupcheck")) == []


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for m in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(m)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.y", imported="a.z")
    assert _circles(graph) == [["a.x", "a.y"]]


def _inner_imports() -> list[tuple[str, int, str, bool]]:
    """(file, line, module, commented) of every import inside a function, besides the optional extras."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    name = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                    if name and name.split(".")[0] in OPTIONAL_EXTRAS:
                        continue
                    around = lines[inner.lineno - 3:inner.lineno]
                    found.append((str(path.relative_to(ROOT)), inner.lineno, str(name),
                                  any("#" in line for line in around)))
    return found


def test_imports_sit_at_the_top_but_for_two_commented_start_up_costs():
    inner = _inner_imports()
    assert len(inner) <= MAX_INNER_IMPORTS, inner
    assert all(commented for *_, commented in inner), inner


def test_no_module_is_over_600_lines_without_a_reason_at_its_top():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and "longer than 600 lines because" not in doc.lower():
            long.append(str(path.relative_to(ROOT)))
    assert long == []


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(ROOT)) for p in sorted(PACKAGE.rglob("*.py"))
               if p.read_text().strip() and ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_does_not_import_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'mup') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} imports {out.strip()}"


def test_the_analysis_imports_neither_torch_nor_the_store_nor_the_plan():
    """Analysis is pure functions of the long-form table (issue 36)."""
    modules = sorted(f"mupcheck.analysis.{p.stem}" for p in (PACKAGE / "analysis").glob("*.py") if p.stem != "__init__")
    code = (f"import sys, {', '.join(modules)}; "
            "print(sorted(m for m in ('torch', 'mupcheck.store', 'mupcheck.plan', 'mupcheck.collect') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("module", ["mupcheck.outputs.plugin", "mupcheck.spec"])
def test_parsing_a_grid_does_not_import_pandas(module):
    """pandas costs 0.8 s to import: parsing a grid (what every pytest collection of a grid does) leaves it
    to the grids that read results (mupcheck.sources)."""
    code = f"import sys, {module}; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
