import io

import pytest

from mupcheck.sweep.progress import ProgressBar, SweepSummary, WorkMeter


def test_eta_weighs_runs_by_their_flops_and_counts_the_steps_in_flight():
    """As on the H100: two cheap runs finish fast, then one with 48x their compute starts. Counting runs
    said 10 s left; the work left is 43.2 of 50 units at 0.34 units/s."""
    meter = WorkMeter({"a": (1.0, 100), "b": (1.0, 100), "c": (48.0, 100)})
    meter.start(0, ["a", "b"])
    assert meter.eta(0.0, [], 3) is None  # no rate yet
    meter.start(0, ["c"])
    assert meter.eta(10.0, ["a", "b"], 3) == pytest.approx(48 / 0.2)
    meter.step(0, 10)  # c is 10% through its steps: 4.8 units
    assert meter.eta(20.0, ["a", "b"], 3) == pytest.approx((50 - 6.8) / (6.8 / 20))


def test_eta_rate_is_the_recent_one():
    """Small runs use a GPU less well than large ones: the rate forgets what is older than its window."""
    meter = WorkMeter({"slow": (1.0, 10), "big": (100.0, 100)})
    meter.start(0, ["slow"])
    meter.eta(0.0, [], 2)
    meter.start(0, ["big"])
    meter.eta(100.0, ["slow"], 2)  # 1 unit in 100 s
    for t in range(1, 41):  # then 1 unit per second
        meter.step(0, t)
        eta = meter.eta(100.0 + 1.0 * t * WorkMeter.RATE_WINDOW / 40, ["slow"], 2)
    assert eta == pytest.approx(60 / (40 / WorkMeter.RATE_WINDOW), rel=0.1)


def test_without_costs_the_eta_counts_runs():
    meter = WorkMeter()
    meter.eta(0.0, [], 4)
    assert meter.eta(10.0, ["k1", "k2"], 4) == pytest.approx(10.0)
    assert meter.eta(20.0, ["k1", "k2", "k3", "k4"], 4) is None  # nothing left


def test_reused_runs_do_not_count_as_speed():
    meter = WorkMeter({k: (1.0, 10) for k in "abcd"})
    meter.eta(0.0, ["a", "b", "c"], 4)  # found in the store
    meter.start(0, ["d"])
    meter.step(0, 5)
    assert meter.eta(10.0, ["a", "b", "c"], 4) == pytest.approx(10.0)


def test_progress_line_shows_the_weighted_eta(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 10.0, 20.0, 20.0])
    monkeypatch.setattr("mupcheck.sweep.progress.time.monotonic", lambda: next(clock))
    stream = io.StringIO()
    bar = ProgressBar(SweepSummary(total=2), enabled=True, stream=stream, costs={"k1": (1.0, 10), "k2": (9.0, 10)})
    bar.PLAIN_EVERY = 0.0
    bar.handle(("start", 0, "small", ("k1",)))
    bar.handle(("done", 0, "k1", True, "ok"))
    bar.handle(("start", 0, "large", ("k2",)))
    bar.close()
    assert stream.getvalue().splitlines()[-1] == "mupcheck: runs 1/2, ETA 1m30s; training large"


def test_a_group_stays_shown_until_its_last_run_finishes():
    """A batched group's runs finish one by one (each is stored as it leaves the batch): the line keeps
    showing the group until the last one is in."""
    stream = io.StringIO()
    bar = ProgressBar(SweepSummary(total=3), enabled=True, stream=stream)
    bar.PLAIN_EVERY = 0.0
    bar.handle(("start", 0, "group x3", ("a", "b", "c")))
    bar.handle(("done", 0, "a", True, "ok"))
    bar.handle(("step", 0, 5, 10))
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("mupcheck: runs 1/3") and line.endswith("; training group x3 [5/10]")
    bar.handle(("done", 0, "b", True, "ok"))
    bar.handle(("done", 0, "c", True, "ok"))
    bar.close()
    assert stream.getvalue().splitlines()[-1] == "mupcheck: runs 3/3"


def test_the_last_line_is_printed_once_not_in_a_burst():
    """Runs found in the store report after the last one trained: each forced a copy of 'runs 3/3' into the
    log (58 identical lines in one CI log, issue 35)."""
    stream = io.StringIO()
    bar = ProgressBar(SweepSummary(total=3), enabled=True, stream=stream)
    for key in "abc":
        bar.handle(("done", 0, key, False, "ok"))
    for key in "abc":  # the same runs reported again (another worker found them too)
        bar.handle(("done", 1, key, False, "ok"))
    bar.close()
    assert stream.getvalue().splitlines().count("mupcheck: runs 3/3") == 1
