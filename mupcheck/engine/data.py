"""Token data, offline: the Python sources on this interpreter's path, users' token files, or synthetic.

    data = load_data("python")                       # default real corpus, byte-level (V=256)
    data = load_data("python-stdlib")                # the standard library only
    data = load_data("data/owt", grid_dir=Path("grids"))   # train.bin/val.bin (uint16) or train.npy/val.npy
    data = load_data("synthetic")                    # small, fast, for tests
    x, y = train_batch(data, step=0, seed=0, batch_size=16, seq_len=128)   # (B, T) int64 each

Every source carries a content `fingerprint`; it goes into each run's store key, so results from
different corpora never mix. Validation tokens are a fixed held-out split, and `eval_batches`
returns the same batches for every run that shares `seq_len` and `eval_tokens`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mupcheck.errors import DataError

__all__ = ["TokenData", "load_data", "train_batch", "eval_batches", "BYTE_VOCAB"]

BYTE_VOCAB = 256
# One file in twenty (chosen by a hash of its path, so the split is stable) is held out for validation.
_VAL_EVERY = 20


@dataclass(frozen=True, eq=False)
class TokenData:
    """A tokenized corpus split into train and validation, with a content fingerprint."""

    train: np.ndarray  # (N_train,) integer token ids
    val: np.ndarray  # (N_val,)
    vocab_size: int
    fingerprint: str
    description: str


def load_data(spec: str, grid_dir: Path | None = None, vocab_size: int = 0) -> TokenData:
    """Load the data source named by a grid's `data` key (cached per process)."""
    if spec in ("python", "python-stdlib"):
        data = _python_corpus(stdlib_only=spec == "python-stdlib")
    elif spec == "synthetic":
        data = _synthetic_corpus()
    else:
        path = Path(spec)
        if not path.is_absolute() and grid_dir is not None:
            path = grid_dir / path
        data = _token_files(str(path.resolve()))
    if vocab_size:
        if vocab_size < data.vocab_size:
            raise DataError(f"data {spec!r} holds token ids up to {data.vocab_size - 1}, "
                            f"but the grid sets vocab_size = {vocab_size}")
        data = TokenData(data.train, data.val, vocab_size, data.fingerprint, data.description)
    return data


# --- sources ---------------------------------------------------------------------------------

def _python_roots(stdlib_only: bool) -> list[Path]:
    """Where the interpreter's own sources live; not sys.path, which also holds the working directory."""
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    if not stdlib_only:
        extra = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
        roots += [Path(p) for p in extra]
    seen, unique = set(), []
    for r in roots:
        rr = r.resolve()
        if rr.is_dir() and rr not in seen:
            seen.add(rr)
            unique.append(rr)
    return unique


def _python_files(stdlib_only: bool) -> list[tuple[str, Path]]:
    """(stable name, path) of every .py file, in a deterministic order."""
    files: dict[Path, str] = {}
    for i, root in enumerate(_python_roots(stdlib_only)):
        for dirpath, dirnames, filenames in os.walk(root):
            # Installed packages are walked as their own root; don't count them twice under stdlib.
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "site-packages", "dist-packages"))
            for f in sorted(filenames):
                if f.endswith(".py"):
                    p = Path(dirpath, f)
                    files.setdefault(p.resolve(), f"{i}/{p.relative_to(root).as_posix()}")
    return sorted(((name, p) for p, name in files.items()), key=lambda item: item[0])


def _is_val_file(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % _VAL_EVERY == 0


@functools.lru_cache(maxsize=4)
def _python_corpus(stdlib_only: bool) -> TokenData:
    train_parts: list[bytes] = []
    val_parts: list[bytes] = []
    for name, path in _python_files(stdlib_only):
        try:
            blob = path.read_bytes()
        except OSError:
            continue  # unreadable files are skipped; the fingerprint records what was read
        (val_parts if _is_val_file(name) else train_parts).append(blob)
    train = np.frombuffer(b"".join(train_parts), dtype=np.uint8)
    val = np.frombuffer(b"".join(val_parts), dtype=np.uint8)
    label = "python-stdlib" if stdlib_only else "python"
    n_files = len(train_parts) + len(val_parts)
    return TokenData(train, val, BYTE_VOCAB, _fingerprint(label, train, val),
                     f"{label}: bytes of {n_files} .py files on this interpreter's path")


@functools.lru_cache(maxsize=1)
def _synthetic_corpus() -> TokenData:
    """Zipf-distributed random 'words' over a small alphabet: structure a tiny model learns in seconds."""
    rng = np.random.default_rng(1234)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    words = [np.append(rng.choice(alphabet, size=rng.integers(2, 8)), ord(" ")).astype(np.uint8)
             for _ in range(512)]
    ranks = np.arange(1, len(words) + 1)
    probs = (1.0 / ranks) / np.sum(1.0 / ranks)

    def text(n_words: int) -> np.ndarray:
        return np.concatenate([words[i] for i in rng.choice(len(words), size=n_words, p=probs)])

    train, val = text(300_000), text(20_000)
    return TokenData(train, val, BYTE_VOCAB, _fingerprint("synthetic", train, val),
                     "synthetic: Zipf-distributed random words (seed 1234)")


@functools.lru_cache(maxsize=8)
def _token_files(directory: str) -> TokenData:
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"data directory {directory} does not exist (the grid's `data` key; relative "
                        "paths are taken from the grid file's folder)")
    split = {}
    for name in ("train", "val"):
        bin_path, npy_path = d / f"{name}.bin", d / f"{name}.npy"
        if bin_path.is_file():
            split[name] = np.memmap(bin_path, dtype=np.uint16, mode="r")  # nanoGPT's format
        elif npy_path.is_file():
            try:
                split[name] = np.load(npy_path, mmap_mode="r")
            except ValueError as e:
                raise DataError(f"{npy_path}: not a readable .npy array: {e}") from None
            if split[name].ndim != 1 or not np.issubdtype(split[name].dtype, np.integer):
                raise DataError(f"{npy_path}: must be a 1-D integer array, got {split[name].dtype} "
                                f"with shape {split[name].shape}")
        else:
            raise DataError(f"{d}: missing {name}.bin (uint16, nanoGPT style) or {name}.npy")
    train, val = split["train"], split["val"]
    vocab = int(max(train.max(), val.max())) + 1
    return TokenData(train, val, vocab, _fingerprint("tokens", train, val), f"token files in {d}")


def _fingerprint(label: str, train: np.ndarray, val: np.ndarray) -> str:
    h = hashlib.sha256(label.encode())
    for arr in (train, val):
        h.update(str(arr.dtype).encode() + str(len(arr)).encode())
        step = 1 << 24  # hash big memmaps in chunks
        for i in range(0, len(arr), step):
            h.update(np.ascontiguousarray(arr[i:i + step]).tobytes())
    return h.hexdigest()[:16]


# --- batches ---------------------------------------------------------------------------------

def _windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = offsets[:, None] + np.arange(seq_len + 1)[None, :]  # (B, T+1)
    chunk = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    # Contiguous copies: a model may call .view on its inputs or targets (nanoGPT does).
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()  # inputs (B, T), next-token targets (B, T)


def train_batch(data: TokenData, step: int, seed: int, batch_size: int, seq_len: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch a run with this seed sees at this step: random windows of the train split."""
    high = len(data.train) - seq_len - 1
    if high <= 0:
        raise DataError(f"{data.description}: train split ({len(data.train)} tokens) is shorter than seq_len")
    rng = np.random.default_rng((seed, step))
    return _windows(data.train, rng.integers(0, high, size=batch_size), seq_len)


def eval_batches(data: TokenData, eval_tokens: int, seq_len: int, batch_size: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed evaluation batches: evenly spaced windows of the validation split, the same for every run."""
    n_seq = max(1, -(-eval_tokens // seq_len))
    high = len(data.val) - seq_len - 1
    if high <= 0:
        raise DataError(f"{data.description}: validation split ({len(data.val)} tokens) is shorter than seq_len")
    offsets = np.linspace(0, high, n_seq).astype(np.int64)
    return [_windows(data.val, offsets[i:i + batch_size], seq_len) for i in range(0, n_seq, batch_size)]
