"""The README's and the docs' promises: the README is short and its test command is what CI runs; every link
resolves; every command the docs show parses against the real command line and names grid files that
load; the cheap ones run; the user-model example works."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import torch

from mupcheck.engine.data import load_data
from mupcheck.engine.fused import train_fused
from mupcheck.engine.models import build_model
from mupcheck.engine.solo import train_run
from mupcheck.outputs.cli import main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {p: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
MODELS = (ROOT / "docs" / "models.md").read_text()


def test_readme_starts_with_install_and_test_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert first_block[0].startswith("pip install") and "pytest grids/" in first_block[0]
    assert first_block[1].startswith("python -m pytest")
    assert "README.md" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command


def test_readme_user_model_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n# mypkg/models\.py\n(.*?)```", MODELS, re.S).group(1)
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    from helpers import write_grid

    from mupcheck.spec import load_grid, run_configs

    try:
        path = write_grid(tmp_path, model="mypkg.models:build", parametrization='["custom", "sp"]')
        toml = re.search(r"```toml\n# grids/mine\.toml\n(.*?)```", MODELS, re.S).group(1)
        model_line, optimizer_line = toml.splitlines()[0], toml.splitlines()[1]
        text = path.read_text().replace('model = "mypkg.models:build"', f"{model_line}\n{optimizer_line}")
        path.write_text(text.replace("widths = [16, 32]", "widths = [32, 64]").replace("base_width = 16",
                                                                                     "base_width = 32"))
        configs = run_configs(load_grid(path))  # the custom arm comes first; the SP arm last
        assert (configs[0].model, configs[-1].model) == ("mypkg.models:build", "mypkg.models:build_sp")
        for cfg in (configs[0], configs[-1]):
            logits, loss = build_model(cfg, 256)(torch.zeros(2, 8, dtype=torch.long))
            assert logits.shape == (2, 8, 256) and loss is None
        # The model's own optimizer, batched: members train as their solo runs do.
        cfg = configs[0]
        group = [cfg, dataclasses.replace(cfg, lr_log2=-6.0)]
        data = load_data("synthetic")
        fused = train_fused(group, data, dtype=torch.float64)
        for member, result in zip(group, fused):
            assert result.engine == "fused"
            assert result.loss == pytest.approx(train_run(member, data, dtype=torch.float64).loss, rel=1e-9)
        # The README's coordinate-check command passes for it, and fails for its SP twin.
        common = ["--widths", "32,64,128,256", "--data", "synthetic", "--batch-size", "4", "--seq-len", "32",
                  "--plot", str(tmp_path / "c.png")]
        assert main(["coord-check", "--model", "mypkg.models:build", "--parametrization", "custom", "--optimizer",
                     "mypkg.models:make_optimizer", *common]) == 0
        assert main(["coord-check", "--model", "mypkg.models:build_sp", "--parametrization", "sp", *common]) == 1
    finally:
        for name in ("mypkg", "mypkg.models"):
            sys.modules.pop(name, None)


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_the_readme_is_short_and_every_link_resolves():
    assert len(README.splitlines()) <= 160
    for path, text in [(ROOT / "README.md", README), *DOCS.items()]:
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            assert resolved.exists(), f"{path.name}: link to {target}: no such file"
            if anchor and resolved.suffix == ".md":
                headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", resolved.read_text(), re.M)}
                assert anchor in headings, f"{path.name}: link to {target}: no such heading"


def _commands() -> list[tuple[str, str]]:
    """(page, command) for every `mupcheck ...` and `pytest ...` line in a bash block of the README and docs."""
    out = []
    for path, text in [(ROOT / "README.md", README), *DOCS.items()]:
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith(("mupcheck ", "pytest ", "python -m pytest")):
                    out.append((path.name, line))
    return out


def test_every_command_the_docs_show_parses_and_names_grids_that_load():
    """Run through the command line's own parser (pytest's options through its --help): an option the code
    does not have, or a grid file that is not there, fails here. Placeholders (grids/X.toml) are skipped."""
    import shlex
    import subprocess

    from mupcheck.outputs.cli import build_parser
    from mupcheck.spec import load_grid

    commands = _commands()
    assert len(commands) >= 20
    pytest_help = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                                 capture_output=True, text=True, cwd=ROOT).stdout
    for page, line in commands:
        words = [w for w in shlex.split(line.replace("$(", "").replace(")", "")) if "=" not in w or w.startswith("-")]
        grids = [w for w in words if w.startswith("grids/") and w.endswith(".toml")]
        for grid in grids:
            if Path(grid).stem not in ("X", "theirs", "my_grid", "mine", "my_tokens_grid"):
                load_grid(ROOT / grid)
        if words[0] == "mupcheck":
            if any(w in ("grids/X.toml", "<head>:6379") for w in words):
                continue
            try:
                build_parser().parse_args(words[1:])
            except SystemExit as e:
                raise AssertionError(f"{page}: `{line}` does not parse") from e
        else:
            for option in (w.split("=")[0] for w in words if w.startswith("--mupcheck")):
                assert option in pytest_help, f"{page}: `{line}`: pytest has no {option}"


def test_the_cheap_commands_the_docs_show_run(tmp_path, capsys):
    """Report, predict and export on the committed records, as the docs show them (output elsewhere)."""
    assert main(["report", str(ROOT / "grids/cpu_horizon_constant.toml"), "--store",
                 str(ROOT / "reports/cpu_horizon_constant.store"), "--out", str(tmp_path), "--json"]) == 0
    assert main(["predict", str(ROOT / "grids/cpu_horizon_constant.toml"), "--store",
                 str(ROOT / "reports/cpu_horizon_constant.store"), "--width", "32", "--tokens", "8e6"]) == 0
    assert main(["report", str(ROOT / "grids/example_results.toml"), "--out", str(tmp_path)]) == 0
    assert main(["export", str(ROOT / "grids/cpu_horizon_cosine.toml"), "--store",
                 str(ROOT / "reports/cpu_horizon_cosine.store"), "--out", str(tmp_path / "runs.csv")]) == 0
    assert "wrote 325 runs" in capsys.readouterr().out


def test_the_sweep_example_of_the_axes_page_loads(tmp_path):
    """docs/axes.md's grid lines for a swept key, on top of a small grid, load into the sweep they describe."""
    from helpers import TINY_GRID

    from mupcheck.spec import load_grid, run_configs

    snippet = re.search(r"```toml\n(lr_log2 = \[-5\].*?)```", DOCS[ROOT / "docs" / "axes.md"], re.S).group(1)
    path = tmp_path / "swept.toml"
    path.write_text(TINY_GRID.format(model="gpt", extra="").replace("lr_log2 = [-8, -6]\n", "") + snippet)
    grid = load_grid(path)
    assert grid.tuned == "output_mult" and not grid.joint and grid.refine is not None
    assert len(run_configs(grid)) == 2 * 2 * 10  # arms x widths x values of the key (one rate, one seed)
