"""Data sources: determinism, fingerprints, fixed evaluation batches, token files, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mupcheck.engine.data import _python_files, eval_batches, load_data, train_batch
from mupcheck.errors import DataError


def test_synthetic_is_deterministic_with_stable_fingerprint():
    data = load_data("synthetic")
    assert data.vocab_size == 256 and len(data.train) > 100_000 and len(data.val) > 10_000
    assert data.fingerprint == load_data("synthetic").fingerprint


def test_train_batch_depends_on_seed_and_step_only():
    data = load_data("synthetic")
    a = train_batch(data, step=3, seed=0, batch_size=4, seq_len=16)
    b = train_batch(data, step=3, seed=0, batch_size=4, seq_len=16)
    c = train_batch(data, step=3, seed=1, batch_size=4, seq_len=16)
    assert a[0].shape == (4, 16) and a[0].dtype == torch.int64
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    torch.testing.assert_close(a[0][:, 1:], a[1][:, :-1])  # targets are inputs shifted by one


def test_eval_batches_are_fixed_and_cover_eval_tokens():
    data = load_data("synthetic")
    first = eval_batches(data, eval_tokens=1000, seq_len=32, batch_size=8)
    again = eval_batches(data, eval_tokens=1000, seq_len=32, batch_size=8)
    assert sum(x.shape[0] for x, _ in first) == 32  # ceil(1000 / 32) windows
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(first, again))


def _write_tokens(directory, fmt, train, val):
    directory.mkdir(exist_ok=True)
    for name, arr in (("train", train), ("val", val)):
        if fmt == "bin":
            arr.astype(np.uint16).tofile(directory / f"{name}.bin")
        else:
            np.save(directory / f"{name}.npy", arr)


@pytest.mark.parametrize("fmt", ["bin", "npy"])
def test_token_files(tmp_path, fmt):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 1000, 5000), rng.integers(0, 1000, 500)
    _write_tokens(tmp_path / "d", fmt, train, val)
    data = load_data("d", grid_dir=tmp_path)  # relative paths are taken from the grid's folder
    assert data.vocab_size == max(train.max(), val.max()) + 1
    assert np.array_equal(np.asarray(data.train), train)
    assert load_data(str(tmp_path / "d"), vocab_size=1024).vocab_size == 1024
    with pytest.raises(DataError, match="vocab_size = 10"):
        load_data(str(tmp_path / "d"), vocab_size=10)


def test_fingerprint_follows_content(tmp_path):
    _write_tokens(tmp_path / "a", "npy", np.arange(100), np.arange(50))
    _write_tokens(tmp_path / "b", "npy", np.arange(100)[::-1], np.arange(50))
    assert load_data(str(tmp_path / "a")).fingerprint != load_data(str(tmp_path / "b")).fingerprint


def test_missing_token_files_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    np.save(tmp_path / "half" / "train.npy", np.arange(10))
    with pytest.raises(DataError, match=r"missing val\.bin"):
        load_data(str(tmp_path / "half"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"train\.npy: not a readable \.npy"):
        load_data(str(tmp_path / "bad"))


def test_python_corpus_is_real_deterministic_and_held_out():
    files = _python_files(stdlib_only=True)
    assert files == _python_files(stdlib_only=True)
    assert any(name.endswith("/json/decoder.py") for name, _ in files)
    data = load_data("python-stdlib")
    assert len(data.train) > 5_000_000 and len(data.val) > 100_000
    assert b"def " in data.val[:200_000].tobytes()  # held-out files are real Python source
    assert data.fingerprint != load_data("synthetic").fingerprint
