"""Where a result came from: package versions, the git commit of the code, host and date.

Torch-free on purpose (versions are read from package metadata), so that the store and the reports
can say how a run was produced without importing the engine. Where torch is already loaded (the process
that trained the run), its own version string is used: it names the build.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mupcheck

__all__ = ["engine_source_hash", "git_commit", "package_version", "run_provenance", "torch_version", "utc_now"]

_PACKAGE_DIR = Path(mupcheck.__file__).resolve().parent


def utc_now() -> str:
    """The current time, ISO 8601 in UTC to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def package_version(name: str) -> str:
    """The installed version of a distribution, or 'unknown'."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def torch_version() -> str:
    """torch's version with its build where torch is loaded: '2.11.0+cu130'. The metadata of torch's CUDA
    wheels on PyPI says only '2.11.0', which does not tell a CUDA build from a CPU one."""
    loaded = sys.modules.get("torch")
    return str(getattr(loaded, "__version__", "")) or package_version("torch")


@functools.lru_cache(maxsize=16)
def git_commit(path: Path = _PACKAGE_DIR) -> str:
    """'abc1234' of the git checkout holding `path`, '+dirty' if mupcheck's code or `path` has uncommitted
    changes; '' outside git. $MUPCHECK_COMMIT overrides it, for a copy of a checkout whose `.git` is not
    the one its code came from (seen on a borrowed GPU machine)."""
    if os.environ.get("MUPCHECK_COMMIT"):
        return os.environ["MUPCHECK_COMMIT"]
    try:
        cwd = path.resolve() if path.is_dir() else path.resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
        # Only the code and the file itself count: reports being rewritten do not make a run "dirty".
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", str(_PACKAGE_DIR),
                                str(path.resolve())], cwd=cwd, capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}{'+dirty' if dirty else ''}" if sha else ""


@functools.lru_cache(maxsize=1)
def engine_source_hash() -> str:
    """A hash of the training code (every module of `mupcheck/engine/`): which code trained a run. The store
    key uses ENGINE_VERSION instead (mupcheck/engine/__init__.py), so refactorings keep records valid."""
    h = hashlib.sha256()
    for path in sorted((_PACKAGE_DIR / "engine").glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def run_provenance() -> dict[str, Any]:
    """What a run record says about how it was produced."""
    return {
        "date": utc_now(),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch_version(),
        "mup": package_version("mup"),
        "mupcheck": mupcheck.__version__,
        "mupcheck_commit": git_commit() or None,
        "engine_source": engine_source_hash(),
    }
