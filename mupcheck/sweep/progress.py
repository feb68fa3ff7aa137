"""What a sweep reports while it runs and when it ends: runs done/total with an ETA, and a summary.

Workers send events; the process that shows progress turns them into a bar on a terminal.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from mupcheck.fmt import format_duration

__all__ = ["Event", "ProgressBar", "SweepSummary"]

# ("start", worker, label) | ("step", worker, step, steps) | ("done", worker, key, trained, status)
Event = tuple


@dataclass
class SweepSummary:
    """What a sweep did: for each run key, whether this sweep trained it and its status."""

    total: int
    outcomes: dict[str, tuple[bool, str]] = field(default_factory=dict)  # key -> (trained now, status)
    failed: dict[str, str] = field(default_factory=dict)  # key -> why it could not be trained
    wall_time_s: float = 0.0
    interrupted: bool = False

    def record(self, key: str, trained: bool, status: str) -> bool:
        """Note a finished run; True if it was not known yet. A 'trained' report wins over 'found'."""
        new = key not in self.outcomes
        if new or trained:
            self.outcomes[key] = (trained or self.outcomes.get(key, (False, ""))[0], status)
        return new

    @property
    def trained(self) -> int:
        return sum(t for t, _ in self.outcomes.values())

    @property
    def reused(self) -> int:
        return len(self.outcomes) - self.trained

    @property
    def diverged(self) -> int:
        return sum(s == "diverged" for _, s in self.outcomes.values())

    def line(self) -> str:
        verb = "interrupted after" if self.interrupted else "done:"
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return (f"{verb} {len(self.outcomes)}/{self.total} runs ({self.trained} trained, {self.reused} reused, "
                f"{self.diverged} diverged{failed}) in {format_duration(self.wall_time_s)}")


class ProgressBar:
    """Runs done/total with ETA, and what each worker is training now: a bar on a terminal, and plain
    lines (one every PLAIN_EVERY seconds, and the last) when stderr is a file or a CI log, where a bar
    would write thousands of frames onto one line."""

    PLAIN_EVERY = 30.0

    def __init__(self, summary: SweepSummary, enabled: bool, stream: Any = None):
        self.summary = summary
        self.stream = stream or sys.stderr
        self.current: dict[int, tuple[str, str]] = {}  # worker -> (what it trains, its step)
        self.last_refresh = 0.0
        self.plain = enabled and not _is_terminal(self.stream)
        self.started, self.first_done = time.monotonic(), len(summary.outcomes)
        self.last_line = -math.inf
        self.bar = tqdm(total=summary.total, initial=len(summary.outcomes), unit="run", desc="runs",
                        disable=not enabled or self.plain, file=self.stream, dynamic_ncols=True)

    def handle(self, event: Event) -> None:
        kind, worker = event[0], event[1]
        if kind == "start":
            self.current[worker] = (event[2], "")
            self._refresh(force=True)
        elif kind == "step":
            label = self.current.get(worker, ("", ""))[0]
            self.current[worker] = (label, f" [{event[2]}/{event[3]}]")
            self._refresh()
        elif kind == "failed":
            self.summary.failed[event[2]] = event[3]
            self._refresh(force=True)
        elif kind == "done":
            _, _, key, trained, status = event
            if self.summary.record(key, trained, status):
                self.bar.update(1)
            if trained:
                self.current.pop(worker, None)
            self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.plain:
            done = len(self.summary.outcomes)
            if now - self.last_line >= self.PLAIN_EVERY or (done == self.summary.total and force):
                self.last_line = now
                print(self._line(now), file=self.stream, flush=True)
            return
        if force or now - self.last_refresh > 0.5:
            self.last_refresh = now
            self.bar.set_postfix_str(" | ".join("".join(self.current[w]) for w in sorted(self.current)), refresh=True)

    def _line(self, now: float) -> str:
        done, total = len(self.summary.outcomes), self.summary.total
        rate = (done - self.first_done) / max(now - self.started, 1e-9)
        eta = f", ETA {format_duration((total - done) / rate)}" if rate > 0 and done < total else ""
        training = " | ".join("".join(self.current[w]) for w in sorted(self.current))
        return f"mupcheck: runs {done}/{total}{eta}" + (f"; training {training}" if training else "")

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def refresh(self) -> None:
        self.bar.n = len(self.summary.outcomes)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
