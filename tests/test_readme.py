"""The README's promises: its test command is what CI runs, and its user-model example works."""

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


def test_readme_starts_with_install_and_test_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert first_block[0].startswith("pip install") and "pytest grids/" in first_block[0]
    assert first_block[1].startswith("python -m pytest")
    assert "README.md" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command


def test_readme_user_model_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n# mypkg/models\.py\n(.*?)```", README, re.S).group(1)
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    from helpers import write_grid

    from mupcheck.spec import load_grid, run_configs

    try:
        path = write_grid(tmp_path, model="mypkg.models:build", parametrization='["custom", "sp"]')
        toml = re.search(r"```toml\n# grids/mine\.toml\n(.*?)```", README, re.S).group(1)
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
