"""What a sweep reports while it runs and when it ends: runs done/total with an ETA, and a summary.

Workers send events; the process that shows progress turns them into a bar on a terminal.

The ETA weighs runs by their training FLOPs and counts the steps of the runs in flight: runs differ in
cost by orders of magnitude (width squared times tokens). Counting runs, the reference grid on an H100
said "ETA 1m20s" when its last width (three quarters of the compute) had just started, and the figure
rose while no run finished. The rate is taken over the last RATE_WINDOW seconds, since small models use
a GPU less efficiently than large ones (benchmarks/results/20261127-h100.md).
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from mupcheck.fmt import format_duration

__all__ = ["Event", "ProgressBar", "SweepSummary", "WorkMeter"]

# ("start", worker, label[, keys]) | ("step", worker, step, steps) | ("done", worker, key, trained, status)
# | ("failed", worker, key, why); a start's keys are the runs the worker now trains (one, or a group).
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


class WorkMeter:
    """Work done and left in a sweep, in training FLOPs, and the ETA that follows from them.

    `costs` maps a run key to (FLOPs, steps); a key it does not know costs the mean of those it does
    (1 each when it knows none: the ETA then counts runs). Runs in flight count for the share of their
    steps done, so a long group moves the ETA before any of its runs finishes.
    """

    RATE_WINDOW = 120.0

    def __init__(self, costs: Mapping[str, tuple[float, int]] | None = None):
        self.costs: dict[str, tuple[float, int]] = dict(costs or {})
        self.in_flight: dict[int, tuple[tuple[str, ...], int]] = {}  # worker -> (its runs' keys, its step)
        self.samples: deque[tuple[float, float]] = deque()  # (time, work done) for the windowed rate

    def add(self, costs: Mapping[str, tuple[float, int]]) -> None:
        """More runs (a sweep's refinement runs) join the plan."""
        self.costs.update(costs)

    def cost(self, key: str) -> float:
        return self.costs[key][0] if key in self.costs else self._mean_cost()

    def _mean_cost(self) -> float:
        return sum(c for c, _ in self.costs.values()) / len(self.costs) if self.costs else 1.0

    def start(self, worker: int, keys: Iterable[str]) -> None:
        self.in_flight[worker] = (tuple(keys), 0)

    def step(self, worker: int, step: int) -> None:
        if worker in self.in_flight:
            self.in_flight[worker] = (self.in_flight[worker][0], step)

    def idle(self, worker: int, finished: Container[str]) -> bool:
        """Whether every run the worker was training has finished (a group's runs finish one by one)."""
        keys, _ = self.in_flight.get(worker, ((), 0))
        return all(k in finished for k in keys)

    def done(self, finished: Iterable[str]) -> float:
        """Work done: the finished runs, and the steps taken by runs in flight that are not among them."""
        finished = set(finished)
        work = sum(self.cost(k) for k in finished)
        for keys, step in self.in_flight.values():
            for k in keys:
                if k not in finished and k in self.costs:
                    work += self.costs[k][0] * min(step, self.costs[k][1]) / max(self.costs[k][1], 1)
        return work

    def eta(self, now: float, finished: Iterable[str], total_runs: int) -> float | None:
        """Seconds left at the rate of the last RATE_WINDOW seconds; None before any work is seen."""
        finished = list(finished)
        done = self.done(finished)
        known = set(self.costs) | set(finished)
        total = sum(self.cost(k) for k in known) + max(0, total_runs - len(known)) * self._mean_cost()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.RATE_WINDOW:
            self.samples.popleft()
        t0, w0 = self.samples[0]
        rate = (done - w0) / (now - t0) if now > t0 else 0.0
        return (total - done) / rate if rate > 0 and done < total else None


class ProgressBar:
    """Runs done/total with ETA, and what each worker is training now: a bar on a terminal, and plain
    lines (one every PLAIN_EVERY seconds, and the last) when stderr is a file or a CI log, where a bar
    would write thousands of frames onto one line."""

    PLAIN_EVERY = 30.0

    def __init__(self, summary: SweepSummary, enabled: bool, stream: Any = None,
                 costs: Mapping[str, tuple[float, int]] | None = None):
        self.summary = summary
        self.work = WorkMeter(costs)
        self.stream = stream or sys.stderr
        self.current: dict[int, tuple[str, str]] = {}  # worker -> (what it trains, its step)
        self.last_refresh = 0.0
        self.plain = enabled and not _is_terminal(self.stream)
        self.last_line = -math.inf
        self.last_text = ""
        # tqdm's own ETA counts runs; ours, in the postfix, weighs them by their FLOPs.
        self.bar = tqdm(total=summary.total, initial=len(summary.outcomes), unit="run", desc="runs",
                        disable=not enabled or self.plain, file=self.stream, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def handle(self, event: Event) -> None:
        kind, worker = event[0], event[1]
        if kind == "start":
            self.current[worker] = (event[2], "")
            self.work.start(worker, event[3] if len(event) > 3 else ())
            self._refresh(force=True)
        elif kind == "step":
            label = self.current.get(worker, ("", ""))[0]
            self.current[worker] = (label, f" [{event[2]}/{event[3]}]")
            self.work.step(worker, event[2])
            self._refresh()
        elif kind == "failed":
            self.summary.failed[event[2]] = event[3]
            self._refresh(force=True)
        elif kind == "done":
            _, _, key, trained, status = event
            if self.summary.record(key, trained, status):
                self.bar.update(1)
            if trained and self.work.idle(worker, self.summary.outcomes):
                self.current.pop(worker, None)
            self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.plain:
            done = len(self.summary.outcomes)
            line = self._line(now)
            # A line every PLAIN_EVERY seconds, and the last one once: the runs a sweep finds in the store all
            # report at the end, and each used to print the same 'runs 110/110' again (58 times in one log).
            if now - self.last_line >= self.PLAIN_EVERY or (done == self.summary.total and force
                                                            and line != self.last_text):
                self.last_line, self.last_text = now, line
                print(line, file=self.stream, flush=True)
            return
        if force or now - self.last_refresh > 0.5:
            self.last_refresh = now
            seconds = self.work.eta(now, self.summary.outcomes, self.summary.total)
            training = self._training()
            eta = f"ETA {format_duration(seconds)}" if seconds is not None else ""
            self.bar.set_postfix_str(", ".join(p for p in (eta, training) if p), refresh=True)

    def _line(self, now: float) -> str:
        done, total = len(self.summary.outcomes), self.summary.total
        seconds = self.work.eta(now, self.summary.outcomes, total)
        eta = f", ETA {format_duration(seconds)}" if seconds is not None else ""
        training = self._training()
        return f"mupcheck: runs {done}/{total}{eta}" + (f"; training {training}" if training else "")

    def _training(self) -> str:
        """What each worker trains now, with its step."""
        return " | ".join("".join(self.current[w]) for w in sorted(self.current))

    def add_runs(self, costs: Mapping[str, tuple[float, int]]) -> None:
        """Runs planned after the sweep began (refinement runs) join the count and the work."""
        self.summary.total += len(costs)
        self.work.add(costs)
        self.bar.total = self.summary.total
        self.bar.refresh()

    def refresh(self) -> None:
        self.bar.n = len(self.summary.outcomes)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
