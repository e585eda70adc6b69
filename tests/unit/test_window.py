"""Windowed average and maximum: bucketed, explicit time, checked against a naive oracle."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvscale.scaling import window

# (time, value) records, then (now, expected) queries, for a 3 s window of 1 s buckets.
AVERAGE_TABLE = [
    pytest.param([], [(0.0, None), (100.0, None)], id="empty"),
    pytest.param(
        [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)],
        [(2.0, 2.0), (3.0, 2.5), (4.0, 3.0), (5.0, None)],
        id="values-leave-after-the-window",
    ),
    pytest.param([(0.2, 1.0), (0.7, 3.0)], [(0.9, 2.0), (2.99, 2.0)], id="one-bucket-two-values"),
    pytest.param(
        [(0.0, 4.0), (0.5, 4.0), (1.0, 1.0)],
        [(1.0, 3.0)],
        id="mean-of-values-not-of-buckets",
    ),
    pytest.param([(0.0, 10.0), (10.0, 2.0)], [(10.0, 2.0)], id="a-gap-is-no-data-not-zero-demand"),
    pytest.param([(5.0, 1.0), (3.0, 3.0)], [(5.0, 2.0)], id="earlier-time-counts-as-newest"),
]


@pytest.mark.parametrize(("records", "queries"), AVERAGE_TABLE)
def test_average_table(
    records: list[tuple[float, float]], queries: list[tuple[float, float | None]]
) -> None:
    average = window.Average(3.0)
    for time, value in records:
        average.record(time, value)
    for now, expected in queries:
        assert average.average(now) == expected


MAXIMUM_TABLE = [
    pytest.param([], [(0.0, None)], id="empty"),
    pytest.param(
        [(0.0, 5.0), (1.0, 1.0), (2.0, 3.0)],
        [(2.0, 5.0), (3.0, 3.0), (4.0, 3.0), (5.0, None)],
        id="the-maximum-leaves-then-the-next-largest-rules",
    ),
    pytest.param(
        [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)],
        [(2.0, 3.0), (4.0, 3.0), (5.0, None)],
        id="rising-values",
    ),
    pytest.param([(0.1, 2.0), (0.9, 7.0), (0.95, 1.0)], [(0.99, 7.0), (2.9, 7.0)], id="one-bucket"),
]


@pytest.mark.parametrize(("records", "queries"), MAXIMUM_TABLE)
def test_maximum_table(
    records: list[tuple[float, float]], queries: list[tuple[float, float | None]]
) -> None:
    maximum = window.Maximum(3.0)
    for time, value in records:
        maximum.record(time, value)
    for now, expected in queries:
        assert maximum.maximum(now) == expected


@pytest.mark.parametrize(
    ("window_seconds", "granularity", "num_buckets"),
    [(60.0, 1.0, 60), (6.0, 1.0, 6), (1.5, 1.0, 2), (1.0, 0.25, 4), (0.1, 1.0, 1)],
)
def test_window_length_rounds_up_to_whole_buckets(
    window_seconds: float, granularity: float, num_buckets: int
) -> None:
    assert window.Average(window_seconds, granularity).num_buckets == num_buckets
    assert window.Maximum(window_seconds, granularity).num_buckets == num_buckets


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_a_window_needs_a_positive_length(bad: float) -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        window.Average(bad)
    with pytest.raises(ValueError, match="granularity_seconds"):
        window.Maximum(1.0, bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_times_must_be_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="time = "):
        window.Average(5.0).record(bad, 1.0)
    with pytest.raises(ValueError, match="time = "):
        window.Maximum(5.0).maximum(bad)


def test_average_does_not_drift_over_a_long_run() -> None:
    # 0.1 is not exact in binary: a running total that only adds and subtracts would wander.
    average = window.Average(60.0)
    for tick in range(200_000):
        average.record(float(tick), 0.1)
    result = average.average(199_999.0)
    assert result is not None
    assert abs(result - 0.1) < 1e-15


def _oracle(records: list[tuple[float, float]], now: float, window_seconds: float) -> list[float]:
    """The values inside the window at `now`, by the documented bucket rule, done naively."""
    newest = max([now, *(time for time, _ in records)])
    num_buckets = math.ceil(window_seconds - 1e-9)
    inside = []
    clamped = -math.inf
    for time, value in records:
        clamped = max(clamped, time)
        # The same float-noise allowance as the windows: 2.9999999999 s is in bucket 3.
        if math.floor(newest + 1e-9) - math.floor(clamped + 1e-9) < num_buckets:
            inside.append(value)
    return inside


def test_minimum_is_the_lowest_value_inside_the_window() -> None:
    minimum = window.Minimum(3.0)
    assert minimum.window_seconds == 3.0
    assert minimum.minimum(0.0) is None
    for time, value in [(0.0, 5.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]:
        minimum.record(time, value)
    assert minimum.minimum(3.0) == 2.0  # 1, 2 and 3 s are inside; 0 s left
    assert minimum.minimum(4.0) == 4.0  # 1 s left too
    assert minimum.minimum(6.0) is None


@settings(max_examples=200, deadline=None)
@given(
    window_seconds=st.integers(min_value=1, max_value=10).map(float),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=3.0),
            st.floats(min_value=-100.0, max_value=100.0),
        ),
        max_size=60,
    ),
    lag=st.floats(min_value=0.0, max_value=12.0),
)
def test_windows_match_a_naive_oracle(
    window_seconds: float, steps: list[tuple[float, float]], lag: float
) -> None:
    average, maximum = window.Average(window_seconds), window.Maximum(window_seconds)
    minimum = window.Minimum(window_seconds)
    records: list[tuple[float, float]] = []
    now = 0.0
    for gap, value in steps:
        now += gap
        average.record(now, value)
        maximum.record(now, value)
        minimum.record(now, value)
        records.append((now, value))
        inside = _oracle(records, now, window_seconds)
        assert average.average(now) == pytest.approx(sum(inside) / len(inside), abs=1e-9)
        assert maximum.maximum(now) == max(inside)
        assert minimum.minimum(now) == min(inside)
    later = now + lag
    inside = _oracle(records, later, window_seconds)
    expected_average = sum(inside) / len(inside) if inside else None
    assert average.average(later) == pytest.approx(expected_average, abs=1e-9)
    assert maximum.maximum(later) == (max(inside) if inside else None)
    assert minimum.minimum(later) == (min(inside) if inside else None)
