"""The result store: one human-readable JSON record per run, under a key that names what can change it.

    store = Store.open()                      # --store DIR, else $MUPCHECK_STORE, else ./.mupcheck
    record, trained = store.get_or_train(key, key_material, train=lambda: train_run(cfg, data))
    with store.claim_missing(keys) as claim:  # a whole group: records found, runs claimed, runs held
        ...

Layout under the root: `runs/<key>.json` (the records) and `locks/<key>.lock` (advisory locks).
The caller computes keys (`mupcheck.plan`); the store knows nothing of training and imports no torch.
Opening a store creates nothing: reading it (a report, a prediction, a sweep with nothing missing) works
on a read-only copy, such as committed records on a read-only checkout. Folders are created, and locks
taken, only when a run must be written.
Writes go to a temporary file and are renamed into place, so a record is whole or absent. A run is
trained under an exclusive `flock` on its lock file: other processes skip it and come back later, and
the kernel drops the lock when its holder dies (even by kill -9), so an interrupted run is simply
trained again. A record that cannot be read is reported, moved aside as `<key>.json.corrupt`, and rerun.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mupcheck.errors import StoreError
from mupcheck.provenance import run_provenance
from mupcheck.result import RunRecord, RunResult

__all__ = ["STORE_ENV", "Claim", "CorruptRecordWarning", "Store", "default_store_root"]

STORE_ENV = "MUPCHECK_STORE"


class CorruptRecordWarning(UserWarning):
    """A stored record could not be read; it was moved aside and its run will be trained again."""


# Every corrupt record deserves its own line, not just the first one from this call site.
warnings.simplefilter("always", CorruptRecordWarning)


def default_store_root(explicit: str | os.PathLike | None = None) -> Path:
    """--store DIR, else $MUPCHECK_STORE, else .mupcheck/ under the working directory."""
    return Path(explicit or os.environ.get(STORE_ENV) or ".mupcheck")


@dataclass
class Claim:
    """What `Store.claim_missing` found for a set of keys."""

    found: dict[str, RunRecord] = field(default_factory=dict)  # stored already
    mine: list[str] = field(default_factory=list)  # locked by this process until the claim ends
    held: list[str] = field(default_factory=list)  # being trained by another process


class Store:
    """A directory of run records; safe for several processes at once."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.locks_dir = self.root / "locks"
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the result store {self.root} is a file, not a folder; choose a folder (--store DIR, "
                             f"--mupcheck-store DIR or ${STORE_ENV})")

    def _folder(self, folder: Path) -> Path:
        """`folder`, created if it is not there yet: only a writer needs it."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unwritable(folder, e) from None
        return folder

    @classmethod
    def open(cls, explicit: str | os.PathLike | None = None) -> Store:
        return cls(default_store_root(explicit))

    def path(self, key: str) -> Path:
        return self.runs_dir / f"{key}.json"

    def check_writable(self) -> None:
        """Raise StoreError now, before anything trains, if runs or locks cannot be written here."""
        for folder in (self.runs_dir, self.locks_dir):
            try:
                with tempfile.TemporaryFile(dir=self._folder(folder)):
                    pass
            except OSError as e:
                raise self._unwritable(folder, e) from None

    def _unwritable(self, path: Path, error: OSError) -> StoreError:
        return StoreError(f"cannot write to the result store at {path}: {error.strerror or error}; use a store "
                          f"you can write (--store DIR, --mupcheck-store DIR or ${STORE_ENV})")

    # --- reading -----------------------------------------------------------------------------

    def load(self, key: str) -> RunRecord | None:
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
            return RunRecord.from_dict(json.loads(blob.decode("utf-8")), key)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problem = f"not valid JSON: {e}"
        except ValueError as e:
            problem = str(e)
        self._quarantine(path, problem)
        return None

    def _quarantine(self, path: Path, problem: str) -> None:
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        warnings.warn(f"corrupt run record {path} ({problem}); {where}, and the run will be trained again",
                      CorruptRecordWarning, stacklevel=3)

    def records(self) -> Iterator[RunRecord]:
        """Every readable record in the store (corrupt ones are reported and skipped)."""
        if not self.runs_dir.is_dir():
            return
        for path in sorted(self.runs_dir.glob("*.json")):
            record = self.load(path.stem)
            if record is not None:
                yield record

    # --- writing -----------------------------------------------------------------------------

    def save(self, record: RunRecord) -> Path:
        """Write a record atomically: a reader sees the old file, the new file, or none."""
        path = self.path(record.key)
        try:
            fd, tmp = tempfile.mkstemp(dir=self._folder(self.runs_dir), prefix=f".{record.key}.", suffix=".tmp")
        except OSError as e:
            raise self._unwritable(self.runs_dir, e) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record.to_dict(), f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are meant to be read by people
            os.replace(tmp, path)
        except OSError as e:  # a full disk, a quota: no partial record is left, and the message says why
            Path(tmp).unlink(missing_ok=True)
            raise self._unwritable(self.runs_dir, e) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def save_result(self, key: str, key_material: dict[str, Any], result: RunResult) -> RunRecord:
        """Store a finished run's result under its key (the caller holds its claim); return the record."""
        record = RunRecord(key, key_material, result, run_provenance())
        self.save(record)
        return record

    def record_failure(self, key: str, failure: dict[str, Any]) -> Path:
        """Keep why a run could not be trained (`failures/<key>.json`); its run stays missing."""
        folder = self.root / "failures"
        try:
            folder.mkdir(exist_ok=True)
            path = folder / f"{key}.json"
            path.write_text(json.dumps(failure, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except OSError as e:
            raise self._unwritable(folder, e) from None
        return path

    # --- claiming ----------------------------------------------------------------------------

    @contextmanager
    def claim(self, key: str, block: bool) -> Iterator[bool]:
        """Hold the run's lock while inside; yields False when another process holds it (block=False)."""
        try:
            lock = open(self._folder(self.locks_dir) / f"{key}.lock", "a+")  # noqa: SIM115  # closed below
        except OSError as e:
            raise self._unwritable(self.locks_dir, e) from None
        with lock as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def held(self, key: str) -> bool:
        """Whether another process holds the run's claim now (it is training it)."""
        with self.claim(key, block=False) as mine:
            return not mine

    @contextmanager
    def claim_missing(self, keys: Iterable[str], block: bool = False) -> Iterator[Claim]:
        """Sort `keys` into records already stored, runs this process now holds (until the block ends),
        and runs another process holds. A run is reloaded after its claim, since another process may
        have finished it in between: no run is trained twice."""
        claim = Claim()
        with ExitStack() as locks:
            for key in keys:
                record = self.load(key)
                if record is None and locks.enter_context(self.claim(key, block)):
                    record = self.load(key)
                    if record is None:
                        claim.mine.append(key)
                        continue
                if record is None:
                    claim.held.append(key)
                else:
                    claim.found[key] = record
            yield claim

    def get_or_train(self, key: str, key_material: dict[str, Any], train: Callable[[], RunResult],
                     block: bool = True) -> tuple[RunRecord | None, bool]:
        """(record, trained_now). With block=False, returns (None, False) if another process holds the run."""
        with self.claim_missing([key], block) as claim:
            if key in claim.found:
                return claim.found[key], False
            if claim.held:
                return None, False
            return self.save_result(key, key_material, train()), True
