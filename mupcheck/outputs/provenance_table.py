"""How a report was produced, as the table at its end: the grid file, the data or results files, the device,
the versions, when the runs were trained and how long they took, the command.

Read off the runs' own records (each record carries its provenance), never off the machine that writes the
report: a report regenerated elsewhere still says where its runs were trained.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

import mupcheck
from mupcheck.fmt import plural
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.plan import Plan
from mupcheck.provenance import git_commit
from mupcheck.spec import Grid

__all__ = ["provenance_for"]


def _unique(values: Any) -> str:
    vals = sorted({str(v) for v in values if v is not None and v == v})
    return ", ".join(vals) if vals else "unknown"


def _engine_summary(engines: pd.Series) -> str:
    """'solo: 12 runs; fused x8: 64 runs' -- how the runs were trained."""
    counts = engines.fillna("solo").value_counts()
    return "; ".join(f"{engine}: {n} runs" for engine, n in sorted(counts.items()))


def _shown_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def provenance_for(suite: GridSuite, extra: dict[str, str]) -> dict[str, str]:
    """How the report was produced: for a grid this package trained, from each run's record; for a results
    grid, the files it read and their hashes."""
    if suite.grid.imported:
        return _results_provenance(suite.grid, suite.df, extra)
    assert suite.plan is not None
    return _trained_provenance(suite.plan, suite.df, extra)


def _results_provenance(grid: Grid, df: pd.DataFrame, extra: dict[str, str]) -> dict[str, str]:
    grid_path = Path(grid.path)
    assert grid.results is not None
    files = grid.results.inputs  # what was read when the grid was parsed: (name, sha256, rows)
    averaged = int(df["key"].astype(str).str.contains(" + ", regex=False).sum())
    info = {
        "grid file": f"`{_shown_path(grid_path)}` (sha256 {hashlib.sha256(grid_path.read_bytes()).hexdigest()[:12]})",
        "results": "; ".join(_input_text(grid.results.source, name, sha, rows) for name, sha, rows in files),
        "runs": f"{len(df)} runs read, trained elsewhere (nothing was trained by mupcheck)"
                + (f"; {averaged} of them averaged over reruns (duplicates = \"mean\")" if averaged else ""),
        "mupcheck": mupcheck.__version__,
        "grid repository": (f"commit {git_commit(grid_path)} when the report was written" if git_commit(grid_path)
                            else "not a git repository"),
    }
    info.update(extra)
    return info


def _input_text(source: str, name: str, sha256: str, rows: int) -> str:
    """One input of a results grid: a file with its hash and rows, or a tracking system's runs with the hash of
    the table read from them."""
    if source == "table":
        return f"`{_shown_path(Path(name))}` (sha256 {sha256}, {rows} rows)"
    return f"{name} ({plural(rows, 'run')}; sha256 {sha256} of the runs read)"


def _trained_provenance(plan: Plan, df: pd.DataFrame, extra: dict[str, str]) -> dict[str, str]:
    """Command, grid hash, device, versions, dates, times, from the collected frame, which carries each
    run's provenance."""
    grid_path = Path(plan.grid.path)
    ends = pd.to_datetime(df["date"])  # a record is dated when its run finished
    starts = ends - pd.to_timedelta(df["wall_time_s"].fillna(0.0), unit="s")
    span = (ends.max() - starts.min()).total_seconds()
    commits = _unique(df["mupcheck_commit"])
    info = {
        "grid file": f"`{_shown_path(grid_path)}` (sha256 {hashlib.sha256(grid_path.read_bytes()).hexdigest()[:12]})",
        "data": f"{plan.data.description} (fingerprint {plan.data.fingerprint})",
        "device": _unique(df["device"]),
        "engine": _engine_summary(df["engine"]),
        "torch": _unique(df["torch"]),
        "mup": _unique(df["mup"]),
        "mupcheck": _unique(df["mupcheck"])
        + (f"; runs trained by mupcheck at commit {commits}" if commits != "unknown" else ""),
        "grid repository": (f"commit {git_commit(grid_path)} when the report was written" if git_commit(grid_path)
                            else "not a git repository"),
        "runs trained": f"{df['date'].min()} .. {df['date'].max()} (finished)",
        "training span": f"{span / 60:.1f} min from the first run's start to the last run's end",
        # A fused run's wall_time_s is its share of its group's time, so the sum is the device time.
        "compute": f"{df['wall_time_s'].sum() / 60:.1f} min summed over {len(df)} runs",
    }
    shared = df["shared"].dropna() if "shared" in df else pd.Series(dtype=object)
    if len(shared):
        trunks = int((shared == "trunk").sum())
        info["shared runs"] = (f"{len(shared)} of the {len(df)} runs trained as {trunks} shared run(s), one per rate "
                               f"and seed to its longest budget ({int((shared == 'prefix').sum())} read off one, "
                               f"{int((shared == 'branch').sum())} decays branched off one: mupcheck.engine.shared)")
        if (df["engine"] == "solo").any():  # one at a time, a budget's wall time counts the steps it shared
            info["compute"] = (f"{df['device_time_s'].sum() / 60:.1f} min of device time over {len(df)} runs "
                               f"({df['wall_time_s'].sum() / 60:.1f} min had every budget trained alone)")
    info.update(extra)
    return info
