"""Windowed average, maximum and minimum over time buckets, with an explicit `now`. Pure.

The windows cut time into buckets of `granularity_seconds` (bucket index = floor(t / g)) and
keep the last `ceil(window_seconds / g)` buckets, the bucket holding `now` included. A value
recorded at time r is therefore inside the window at `now` while
floor(now / g) - floor(r / g) < ceil(window / g): with whole-second ticks and g = 1 s, a value
counts for exactly `window_seconds` seconds. Buckets bound the memory to window / g entries
however often values are recorded.

Time never goes backwards here: a record or query earlier than the newest record is treated as
happening at the newest record's time (the caller is expected to use a monotonic clock; this
keeps a misbehaving caller from corrupting the window rather than crashing it).

Unlike Knative's buckets, the average is over the values recorded, not over elapsed time: a
tick with no data (the decision holds instead) leaves no bucket and does not count as zero, so
missing data can never drag the average towards idle.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from kvscale.scaling import arith

# Float noise in bucket arithmetic must not move a value across a bucket boundary: each bucket
# index and count below adds or takes arith.EPSILON (absolute: times grow large, bucket widths
# do not) before it rounds.


def _bucket_count(window_seconds: float, granularity_seconds: float) -> int:
    if not (math.isfinite(window_seconds) and window_seconds > 0):
        raise ValueError(f"window_seconds = {window_seconds!r}, must be a positive number")
    if not (math.isfinite(granularity_seconds) and granularity_seconds > 0):
        raise ValueError(
            f"granularity_seconds = {granularity_seconds!r}, must be a positive number"
        )
    return max(1, math.ceil(window_seconds / granularity_seconds - arith.EPSILON))


def _check_time(time: float) -> None:
    if not math.isfinite(time):
        raise ValueError(f"time = {time!r}, must be a finite number of seconds")


@dataclasses.dataclass
class _SumBucket:
    """One bucket of the average: the values recorded in it, summed and counted."""

    index: int
    total: float
    count: int


class Average:
    """The mean of the values recorded within the last `window_seconds`.

    O(1) amortized per call: a running total and count are updated as buckets enter and leave.
    So that float error cannot build up over long runs, the running total is recomputed exactly
    from the buckets (math.fsum) once per `num_buckets` evictions.
    """

    def __init__(self, window_seconds: float, granularity_seconds: float = 1.0) -> None:
        self.window_seconds = window_seconds
        """How long a recorded value counts, rounded up to whole buckets."""
        self.granularity_seconds = granularity_seconds
        """Width of one bucket."""
        self.num_buckets = _bucket_count(window_seconds, granularity_seconds)
        """Buckets in the window, the one holding `now` included."""
        self._buckets: collections.deque[_SumBucket] = collections.deque()
        """Buckets with at least one value, oldest first; never more than `num_buckets`."""
        self._total = 0.0
        """Sum of every value in `_buckets`."""
        self._count = 0
        """Number of values in `_buckets`."""
        self._newest_time = -math.inf
        """The latest time seen; earlier times are moved up to it."""
        self._evictions = 0
        """Buckets evicted since `_total` was last recomputed exactly."""

    def record(self, time: float, value: float) -> None:
        """Add `value` at `time`."""
        index = self._advance(time)
        if self._buckets and self._buckets[-1].index == index:
            bucket = self._buckets[-1]
            bucket.total += value
            bucket.count += 1
        else:
            self._buckets.append(_SumBucket(index, value, 1))
        self._total += value
        self._count += 1

    def average(self, now: float) -> float | None:
        """The mean of the values inside the window at `now`; None when there are none."""
        self._advance(now)
        if self._count == 0:
            return None
        return self._total / self._count

    def _advance(self, time: float) -> int:
        """Move the window to `time`; return the bucket index of (clamped) `time`."""
        _check_time(time)
        self._newest_time = max(self._newest_time, time)
        index = math.floor(self._newest_time / self.granularity_seconds + arith.EPSILON)
        oldest_kept = index - self.num_buckets + 1
        while self._buckets and self._buckets[0].index < oldest_kept:
            bucket = self._buckets.popleft()
            self._total -= bucket.total
            self._count -= bucket.count
            self._evictions += 1
        if self._evictions >= self.num_buckets or not self._buckets:
            self._total = math.fsum(bucket.total for bucket in self._buckets)
            self._evictions = 0
        return index


@dataclasses.dataclass
class _MaxBucket:
    """One bucket of the maximum: the largest value recorded in it."""

    index: int
    value: float


class Maximum:
    """The largest value recorded within the last `window_seconds`.

    A monotonic deque: buckets whose value is at most a newer bucket's can never be the maximum
    again, so they are dropped as soon as the newer value arrives. The front is the maximum.
    O(1) amortized per call.
    """

    def __init__(self, window_seconds: float, granularity_seconds: float = 1.0) -> None:
        self.window_seconds = window_seconds
        """How long a recorded value counts, rounded up to whole buckets."""
        self.granularity_seconds = granularity_seconds
        """Width of one bucket."""
        self.num_buckets = _bucket_count(window_seconds, granularity_seconds)
        """Buckets in the window, the one holding `now` included."""
        self._buckets: collections.deque[_MaxBucket] = collections.deque()
        """Candidate maxima, oldest first, values strictly decreasing."""
        self._newest_time = -math.inf
        """The latest time seen; earlier times are moved up to it."""

    def record(self, time: float, value: float) -> None:
        """Add `value` at `time`."""
        index = self._advance(time)
        if self._buckets and self._buckets[-1].index == index:
            value = max(value, self._buckets.pop().value)
        while self._buckets and self._buckets[-1].value <= value:
            self._buckets.pop()
        self._buckets.append(_MaxBucket(index, value))

    def maximum(self, now: float) -> float | None:
        """The largest value inside the window at `now`; None when there is none."""
        self._advance(now)
        return self._buckets[0].value if self._buckets else None

    def _advance(self, time: float) -> int:
        """Move the window to `time`; return the bucket index of (clamped) `time`."""
        _check_time(time)
        self._newest_time = max(self._newest_time, time)
        index = math.floor(self._newest_time / self.granularity_seconds + arith.EPSILON)
        oldest_kept = index - self.num_buckets + 1
        while self._buckets and self._buckets[0].index < oldest_kept:
            self._buckets.popleft()
        return index


class Minimum:
    """The smallest value recorded within the last `window_seconds`: a `Maximum` of the
    values negated (same buckets, same window, same cost)."""

    def __init__(self, window_seconds: float, granularity_seconds: float = 1.0) -> None:
        self._negated = Maximum(window_seconds, granularity_seconds)

    @property
    def window_seconds(self) -> float:
        return self._negated.window_seconds

    def record(self, time: float, value: float) -> None:
        """Add `value` at `time`."""
        self._negated.record(time, -value)

    def minimum(self, now: float) -> float | None:
        """The smallest value inside the window at `now`; None when there is none."""
        found = self._negated.maximum(now)
        return None if found is None else -found
