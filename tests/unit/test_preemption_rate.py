"""Counter rates over a short window: steady growth, resets on engine restart, gaps, clock steps.

Time is moved by hand; every case is a table of (time, counter value[, restarted]) samples.
"""

from __future__ import annotations

import pytest

from kvscale import rate


def _feed(window: rate.CounterWindow, samples: list[tuple[float, float, bool]]) -> None:
    for at, value, restarted in samples:
        window.observe(at, value, restarted=restarted)


CASES = [
    pytest.param(
        [(0.0, 10, False), (1.0, 20, False), (2.0, 40, False)], 30.0, 2.0, id="steady-growth"
    ),
    pytest.param([(0.0, 5, False), (0.25, 5, False), (0.5, 5, False)], 0.0, 0.5, id="flat-counter"),
    # The engine restarted between t=1 and t=2: the counter began again at 0 and reached 3.
    pytest.param(
        [(0.0, 900, False), (1.0, 1000, False), (2.0, 3, False)], 103.0, 2.0, id="reset-drop"
    ),
    # Restarted and already past the old value: the increase is the new value, not the difference.
    pytest.param(
        [(0.0, 10, False), (1.0, 12, False), (2.0, 15, True)], 17.0, 2.0, id="restart-climbed-past"
    ),
    # A restart right back to zero adds nothing, and never subtracts.
    pytest.param(
        [(0.0, 2000, False), (1.0, 2100, False), (2.0, 0, True)], 100.0, 2.0, id="restart-to-zero"
    ),
    # Samples older than the window (5 s here) fall out; the oldest kept is the starting point.
    pytest.param(
        [(0.0, 0, False), (1.0, 100, False), (7.0, 110, False), (8.0, 130, False)],
        20.0,
        1.0,
        id="old-samples-leave",
    ),
]


@pytest.mark.parametrize(("samples", "increase", "span"), CASES)
def test_rate_over_window(
    samples: list[tuple[float, float, bool]], increase: float, span: float
) -> None:
    window = rate.CounterWindow(window_seconds=5.0)
    _feed(window, samples)
    found = window.rate()
    assert found is not None
    assert found.increase == pytest.approx(increase)
    assert found.window_seconds == pytest.approx(span)
    assert found.per_second == pytest.approx(increase / span)
    assert found.per_second >= 0


def test_no_rate_before_two_samples() -> None:
    window = rate.CounterWindow(window_seconds=5.0)
    assert window.rate() is None
    window.observe(10.0, 3)
    assert window.rate() is None


def test_a_gap_longer_than_the_window_leaves_no_rate_until_the_next_sample() -> None:
    window = rate.CounterWindow(window_seconds=5.0)
    _feed(window, [(0.0, 100, False), (1.0, 200, False)])
    window.observe(60.0, 4, restarted=True)  # engine was down for a minute, then restarted
    assert window.rate() is None
    window.observe(61.0, 9)
    found = window.rate()
    assert found is not None
    assert found.per_second == pytest.approx(5.0)


def test_a_clock_step_back_starts_the_window_afresh() -> None:
    window = rate.CounterWindow(window_seconds=5.0)
    _feed(window, [(100.0, 1, False), (101.0, 2, False)])
    window.observe(50.0, 3)
    assert window.rate() is None
    window.observe(51.0, 13)
    found = window.rate()
    assert found is not None
    assert found.per_second == pytest.approx(10.0)


def test_clear_forgets_everything() -> None:
    window = rate.CounterWindow(window_seconds=5.0)
    _feed(window, [(0.0, 1, False), (1.0, 2, False)])
    window.clear()
    assert window.rate() is None
    window.observe(2.0, 0)
    window.observe(3.0, 1)
    found = window.rate()
    assert found is not None
    assert found.increase == 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_window_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        rate.CounterWindow(window_seconds=bad)
