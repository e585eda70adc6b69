"""A histogram's change over a window: deltas of cumulative snapshots, safe across restarts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvscale import histogram

BOUNDS = (0.1, 0.5, 1.0, 5.0)


def _of(*values: float) -> histogram.Histogram:
    return histogram.Histogram.of(BOUNDS, values)


def _same(a: histogram.Histogram, b: histogram.Histogram) -> bool:
    """Equal counts; sums equal up to float rounding of the subtraction."""
    return (a.bounds, a.cumulative, a.count) == (b.bounds, b.cumulative, b.count) and (
        a.total == pytest.approx(b.total)
    )


def test_one_snapshot_is_no_change_yet() -> None:
    window = histogram.Window(30.0)
    window.observe(100.0, _of(0.2))
    assert window.change() is None


def test_change_counts_only_observations_after_the_first_snapshot() -> None:
    window = histogram.Window(30.0)
    window.observe(100.0, _of(0.2, 3.0))
    window.observe(110.0, _of(0.2, 3.0, 0.05, 0.7))
    change = window.change()
    assert change is not None
    assert change.window_seconds == 10.0
    assert _same(change.histogram, _of(0.05, 0.7))


def test_old_snapshots_fall_out_of_the_window() -> None:
    window = histogram.Window(30.0)
    window.observe(0.0, _of())
    window.observe(10.0, _of(4.0))  # before the window of the last snapshot
    window.observe(45.0, _of(4.0, 0.3))
    window.observe(50.0, _of(4.0, 0.3, 0.3))
    change = window.change()
    assert change is not None
    # The window starts at the oldest snapshot within 30 s of t = 50: the one at t = 45.
    assert change.window_seconds == 5.0
    assert _same(change.histogram, _of(0.3))


RESETS = [
    pytest.param(_of(0.2), False, id="count-fell"),
    pytest.param(_of(0.2, 0.2, 0.2, 0.2, 0.2), True, id="restart-flag-without-a-fall"),
    pytest.param(histogram.Histogram.of((0.1, 0.5), [0.2] * 9), False, id="new-bounds"),
]


@pytest.mark.parametrize(("after", "restarted"), RESETS)
def test_a_restart_starts_the_window_again(after: histogram.Histogram, restarted: bool) -> None:
    window = histogram.Window(30.0)
    window.observe(0.0, _of(0.2, 0.2, 3.0))
    window.observe(1.0, _of(0.2, 0.2, 3.0, 3.0))
    window.observe(2.0, after, restarted=restarted)
    assert window.change() is None  # the new process has one snapshot: nothing to subtract
    grown = histogram.Histogram.of(after.bounds, [0.2] * round(after.count) + [0.05])
    window.observe(3.0, grown)
    change = window.change()
    assert change is not None
    assert change.histogram.count == 1
    assert change.window_seconds == 1.0


def test_a_clock_that_steps_back_starts_again() -> None:
    window = histogram.Window(30.0)
    window.observe(10.0, _of())
    window.observe(5.0, _of(0.2))
    assert window.change() is None


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_seconds = 0"):
        histogram.Window(0)


# A run of engine snapshots: each step either adds observations or restarts the engine.
_step = st.tuples(
    st.booleans(),  # restart before this step's observations
    st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), max_size=8),
    st.floats(min_value=0.1, max_value=20.0),  # seconds since the previous snapshot
)


@given(steps=st.lists(_step, min_size=1, max_size=30))
def test_change_is_never_negative_and_is_what_the_current_process_saw_in_the_window(
    steps: list[tuple[bool, list[float], float]],
) -> None:
    window = histogram.Window(30.0)
    now = 0.0
    process: list[list[float]] = []  # observations per snapshot of the current process
    times: list[float] = []
    for restart, values, gap in steps:
        now += gap
        if restart:
            process, times = [], []
        process.append(values)
        times.append(now)
        cumulative = [v for batch in process for v in batch]
        # A restart is told only by the flag (counts may not have fallen).
        window.observe(now, histogram.Histogram.of(BOUNDS, cumulative), restarted=restart)
        change = window.change()
        # The window starts at the oldest snapshot of this process within 30 s (or the last).
        first = next(i for i, t in enumerate(times) if t >= now - 30.0 or i == len(times) - 1)
        if first == len(times) - 1:
            assert change is None
            continue
        assert change is not None
        expected = [v for batch in process[first + 1 :] for v in batch]
        assert change.histogram.cumulative == histogram.Histogram.of(BOUNDS, expected).cumulative
        assert change.histogram.count == len(expected) >= 0
        assert all(c >= 0 for c in change.histogram.cumulative)
        assert 0 < change.window_seconds <= 30.0
