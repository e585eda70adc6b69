"""Quantiles of Prometheus histograms, as `histogram_quantile` computes them, and merging."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvscale import histogram

# vLLM 0.32's TTFT buckets (vllm/v1/metrics/buckets.py).
TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip


def _hist(
    bounds: tuple[float, ...], cumulative: tuple[float, ...], count: float
) -> histogram.Histogram:
    return histogram.Histogram(bounds, cumulative, count, 0.0)


# Worked by hand with Prometheus' bucketQuantile (promql/quantile.go).
QUANTILES = [
    # 10 observations in (0, 1], 10 in (1, 2]: the median is the top of the first bucket.
    pytest.param((1.0, 2.0), (10.0, 20.0), 20.0, 0.5, 1.0, id="median-on-a-bound"),
    # rank 18 of 20: 8 of the 10 into (1, 2].
    pytest.param((1.0, 2.0), (10.0, 20.0), 20.0, 0.9, 1.8, id="interpolated"),
    # The first bucket starts at 0.
    pytest.param((1.0, 2.0), (10.0, 20.0), 20.0, 0.25, 0.5, id="first-bucket-from-zero"),
    # rank 19 of 20 is in +Inf: the highest finite bound, a lower bound on the truth.
    pytest.param((1.0, 2.0), (10.0, 10.0), 20.0, 0.95, 2.0, id="in-the-inf-bucket"),
    # Empty buckets are skipped: rank 5 of 10 lands in (2, 4].
    pytest.param((1.0, 2.0, 4.0), (0.0, 0.0, 10.0), 10.0, 0.5, 3.0, id="skips-empty-buckets"),
    pytest.param((1.0, 2.0), (1.0, 1.0), 1.0, 1.0, 1.0, id="q-1-one-observation"),
]


@pytest.mark.parametrize(("bounds", "cumulative", "count", "q", "expected"), QUANTILES)
def test_quantile_table(
    bounds: tuple[float, ...],
    cumulative: tuple[float, ...],
    count: float,
    q: float,
    expected: float,
) -> None:
    assert histogram.quantile(q, _hist(bounds, cumulative, count)) == pytest.approx(expected)


def test_no_observations_is_no_quantile_not_zero() -> None:
    assert histogram.quantile(0.9, histogram.Histogram.empty(TTFT)) is None


@pytest.mark.parametrize("q", [0.0, -0.1, 1.01, math.nan])
def test_quantile_outside_0_1_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="q = "):
        histogram.quantile(q, histogram.Histogram.of(TTFT, [0.3]))


BAD = [
    pytest.param(((), (), 0.0, 0.0), "bounds: empty", id="no-bounds"),
    pytest.param(((2.0, 1.0), (0.0, 0.0), 0.0, 0.0), "strictly increasing", id="unsorted"),
    pytest.param(((1.0, math.inf), (0.0, 0.0), 0.0, 0.0), "must be finite", id="inf-bound"),
    pytest.param(((1.0, 2.0), (0.0,), 0.0, 0.0), "one per bound", id="short-counts"),
    pytest.param(((1.0, 2.0), (3.0, 2.0), 3.0, 0.0), "never decrease", id="not-cumulative"),
    pytest.param(((1.0, 2.0), (1.0, 2.0), 1.0, 0.0), "never decrease", id="count-below-bucket"),
    pytest.param(((1.0,), (-1.0,), 0.0, 0.0), "finite and >= 0", id="negative"),
]


@pytest.mark.parametrize(("fields", "says"), BAD)
def test_malformed_histograms_are_refused(fields: tuple[object, ...], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        histogram.Histogram(*fields)  # type: ignore[arg-type]


_latency = st.floats(min_value=0.0, max_value=5000.0, allow_nan=False)
_quantile = st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0])


@given(
    before=st.lists(_latency, max_size=60),
    during=st.lists(_latency, min_size=1, max_size=200),
    q=_quantile,
)
def test_quantile_of_a_change_is_within_the_bucket_of_the_true_quantile(
    before: list[float], during: list[float], q: float
) -> None:
    # The engine's cumulative histogram before and after a window; the window's observations
    # are `during` only. The quantile of the difference must land in the bucket that holds
    # the true quantile of `during` (bucket resolution is all a histogram can give).
    earlier = histogram.Histogram.of(TTFT, before)
    later = histogram.Histogram.of(TTFT, before + during)
    estimate = histogram.quantile(q, histogram.subtract(later, earlier))
    assert estimate is not None
    ordered = sorted(during)
    true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    lower, upper = histogram.bucket_of(true, TTFT)
    if math.isinf(upper):
        assert estimate == TTFT[-1]  # past the last bound: "at least" the last bound
    else:
        assert lower <= estimate <= upper


@given(pods=st.lists(st.lists(_latency, max_size=40), min_size=1, max_size=5), q=_quantile)
def test_merged_pods_read_like_one_histogram_of_all_their_observations(
    pods: list[list[float]], q: float
) -> None:
    merged = histogram.merge(histogram.Histogram.of(TTFT, values) for values in pods)
    together = histogram.Histogram.of(TTFT, [v for values in pods for v in values])
    assert merged is not None
    assert merged.cumulative == together.cumulative
    assert merged.count == together.count
    assert histogram.quantile(q, merged) == histogram.quantile(q, together)


def test_merge_of_nothing_is_none_and_other_bounds_are_refused() -> None:
    assert histogram.merge([]) is None
    with pytest.raises(ValueError, match="bounds differ"):
        histogram.merge([histogram.Histogram.empty((1.0,)), histogram.Histogram.empty((2.0,))])


SHARES = [
    # (values, limit, (at least, at most))
    pytest.param([0.5, 1.5, 3.0, 7.0], 2.0, (0.25, 0.5), id="inside-a-bucket-a-range"),
    pytest.param([0.5, 1.5, 3.0, 7.0], 1.0, (0.25, 0.25), id="on-a-bound-exact"),
    pytest.param([0.5, 1.5, 3.0, 7.0], 0.5, (0.0, 0.25), id="inside-the-first-bucket"),
    pytest.param([0.5, 1.5, 3.0, 7.0], 9.0, (0.75, 1.0), id="past-the-last-bound"),
]


@pytest.mark.parametrize(("values", "limit", "expected"), SHARES)
def test_share_within_is_what_the_buckets_can_tell(
    values: list[float], limit: float, expected: tuple[float, float]
) -> None:
    found = histogram.share_within(histogram.Histogram.of((1.0, 2.5, 5.0), values), limit)
    assert found == expected


def test_share_within_an_empty_histogram_is_unknown() -> None:
    assert histogram.share_within(histogram.Histogram.empty((1.0, 2.5)), 2.0) is None


@given(
    values=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=50),
    limit=st.floats(0.0, 12.0),
)
def test_the_true_share_is_always_within_the_bounds(values: list[float], limit: float) -> None:
    low, high = histogram.share_within(histogram.Histogram.of((1.0, 2.5, 5.0), values), limit) or (
        math.nan,
        math.nan,
    )
    true = sum(value <= limit for value in values) / len(values)
    assert low <= true <= high
