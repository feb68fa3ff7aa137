"""Learning-rate schedules span the run and reach their floor at its end."""

import pytest

from mupcheck.engine.schedules import lr_multiplier


def _curve(schedule, steps=100, warmup=0.1, floor=0.1, decay=0.2):
    return [lr_multiplier(schedule, s, steps, warmup, floor, decay) for s in range(steps)]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear", "wsd"])
def test_warmup_is_linear_and_peaks_at_one(schedule):
    c = _curve(schedule)
    assert c[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert max(c) == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_decays_to_floor_at_the_last_step(schedule):
    c = _curve(schedule)
    assert c[-1] == pytest.approx(0.1)
    assert all(b <= a + 1e-12 for a, b in zip(c[10:], c[11:]))  # monotone after warmup
    assert _curve(schedule, floor=0.0)[-1] == pytest.approx(0.0)


def test_wsd_is_stable_until_decay():
    c = _curve("wsd", warmup=0.0, decay=0.2)
    assert c[:80] == [1.0] * 80 and c[80] < 1.0


def test_constant_without_warmup():
    assert _curve("constant", warmup=0.0) == [1.0] * 100
