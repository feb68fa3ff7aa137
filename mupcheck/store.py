"""The result store: one human-readable JSON record per run, keyed by what can change the result.

    store = Store.open()                    # --store DIR, else $MUPCHECK_STORE, else ./.mupcheck
    ctx = RunContext.for_grid(grid, data, device)
    record, trained = store.get_or_train(cfg, ctx, train=lambda: train_run(cfg, data, device))

Layout under the root: `runs/<key>.json` (the records) and `locks/<key>.lock` (advisory locks).
A key is a hash of the resolved run config, the model's source, the engine's source, the data
fingerprint, the device type and the mupcheck version. Writes go to a temporary file and are
renamed into place, so a record is whole or absent. A run is trained under an exclusive
`flock` on its lock file: other processes skip it and come back later, and the kernel drops the
lock when its holder dies (even by kill -9), so an interrupted run is simply trained again.
A record that cannot be read is reported, moved aside as `<key>.json.corrupt`, and rerun.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import functools
import hashlib
import inspect
import json
import os
import platform
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mup
import torch

import mupcheck
from mupcheck.errors import StoreError
from mupcheck.grid import Grid, RunConfig
from mupcheck.models import model_source_hash

__all__ = ["Store", "RunContext", "default_store_root", "CorruptRecordWarning", "STORE_ENV", "git_commit"]

STORE_ENV = "MUPCHECK_STORE"
_STATUSES = ("ok", "diverged")


class CorruptRecordWarning(UserWarning):
    """A stored record could not be read; it was moved aside and its run will be trained again."""


# Every corrupt record deserves its own line, not just the first one from this call site.
warnings.simplefilter("always", CorruptRecordWarning)


def default_store_root(explicit: str | os.PathLike | None = None) -> Path:
    """--store DIR, else $MUPCHECK_STORE, else .mupcheck/ under the working directory."""
    return Path(explicit or os.environ.get(STORE_ENV) or ".mupcheck")


def _engine_source_hash() -> str:
    """The training code itself: a change to it must not reuse results of the old code."""
    from mupcheck import data, fused, schedules, train  # local: train imports this module's neighbours

    h = hashlib.sha256()
    for module in (data, schedules, train, fused):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class RunContext:
    """What besides the run config can change a result; hashed into every key."""

    data_fingerprint: str
    model_source: str
    engine_source: str
    device_type: str
    mupcheck_version: str

    @classmethod
    def for_grid(cls, grid: Grid, data_fingerprint: str, device: torch.device) -> RunContext:
        return cls(data_fingerprint, model_source_hash(grid.model), _engine_source_hash(),
                   device.type, mupcheck.__version__)

    def key_material(self, cfg: RunConfig) -> dict[str, Any]:
        return {"config": cfg.to_dict(), **asdict(self)}

    def key(self, cfg: RunConfig) -> str:
        blob = json.dumps(self.key_material(cfg), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


class Store:
    """A directory of run records; safe for several processes at once."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.locks_dir = self.root / "locks"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.locks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the result store at {self.root}: {e}") from None

    @classmethod
    def open(cls, explicit: str | os.PathLike | None = None) -> Store:
        return cls(default_store_root(explicit))

    def path(self, key: str) -> Path:
        return self.runs_dir / f"{key}.json"

    # --- reading -----------------------------------------------------------------------------

    def load(self, key: str) -> dict[str, Any] | None:
        """The record for `key`, or None if absent. A corrupt record is moved aside with a warning."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._quarantine(path, f"unreadable: {e}")
            return None
        try:
            record = json.loads(blob.decode("utf-8"))
            problem = _validate_record(record, key)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problem = f"not valid JSON: {e}"
        if problem:
            self._quarantine(path, problem)
            return None
        return record

    def _quarantine(self, path: Path, problem: str) -> None:  # returns None: the caller's "no record"
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        warnings.warn(f"corrupt run record {path} ({problem}); {where}, and the run will be trained again",
                      CorruptRecordWarning, stacklevel=3)
        return None

    # --- writing -----------------------------------------------------------------------------

    def save(self, record: dict[str, Any]) -> Path:
        """Write a record atomically: a reader sees the old file, the new file, or none."""
        path = self.path(record["key"])
        fd, tmp = tempfile.mkstemp(dir=self.runs_dir, prefix=f".{record['key']}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are meant to be read by people
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @contextmanager
    def claim(self, key: str, block: bool) -> Iterator[bool]:
        """Hold the run's lock while inside; yields False when another process holds it (block=False)."""
        with open(self.locks_dir / f"{key}.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get_or_train(self, cfg: RunConfig, ctx: RunContext, train: Callable[[], dict[str, Any]],
                     block: bool = True) -> tuple[dict[str, Any] | None, bool]:
        """(record, trained_now). With block=False, returns (None, False) if another process holds the run."""
        key = ctx.key(cfg)
        record = self.load(key)
        if record is not None:
            return record, False
        with self.claim(key, block) as mine:
            if not mine:
                return None, False
            record = self.load(key)  # another process may have finished it while we waited
            if record is not None:
                return record, False
            return self.save_result(cfg, ctx, train()), True

    def save_result(self, cfg: RunConfig, ctx: RunContext, result: dict[str, Any]) -> dict[str, Any]:
        """Store a finished run's result under its key (the caller holds its claim); return the record."""
        record = make_record(ctx.key(cfg), ctx, cfg, result)
        self.save(record)
        return record

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record in the store (corrupt ones are reported and skipped)."""
        for path in sorted(self.runs_dir.glob("*.json")):
            record = self.load(path.stem)
            if record is not None:
                yield record


def make_record(key: str, ctx: RunContext, cfg: RunConfig, result: dict[str, Any]) -> dict[str, Any]:
    """A run record: the key, what it was computed from, the result, and the provenance."""
    return {
        "key": key,
        "key_material": ctx.key_material(cfg),
        "result": result,
        "provenance": {
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "mup": _mup_version(),
            "mupcheck": mupcheck.__version__,
            "mupcheck_commit": _source_commit(),
        },
    }


@functools.lru_cache(maxsize=16)
def git_commit(path: Path) -> str:
    """'abc1234' of the git checkout holding `path`, '+dirty' if mupcheck's code or `path` has uncommitted
    changes; '' outside git."""
    try:
        cwd = path.resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        # Only the code and the file itself count: reports being rewritten do not make a run "dirty".
        package = Path(mupcheck.__file__).resolve().parent
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", str(package),
                                str(path.resolve())], cwd=cwd, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}{'+dirty' if dirty else ''}" if sha else ""


def _source_commit() -> str | None:
    """The git commit of the mupcheck source that trained a run, when it runs from a checkout."""
    return git_commit(Path(mupcheck.__file__)) or None


def _mup_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mup")
    except PackageNotFoundError:  # pragma: no cover - mup imported from a source tree
        return getattr(mup, "__version__", "unknown")


def _validate_record(record: Any, key: str) -> str | None:
    """What is wrong with a record, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("key") != key:
        return f"its key {record.get('key')!r} does not match its file name"
    result = record.get("result")
    if not isinstance(result, dict):
        return "no `result` object"
    if result.get("status") not in _STATUSES:
        return f"`result.status` is {result.get('status')!r}, not one of {_STATUSES}"
    loss = result.get("loss")
    if result["status"] == "ok" and not isinstance(loss, (int, float)):
        return f"`result.loss` is {loss!r} for a run with status ok"
    if not isinstance(record.get("key_material", {}).get("config"), dict):
        return "no `key_material.config` object"
    return None
