"""Prometheus histograms: their change over a window and their quantiles. Pure.

An engine's latency histograms (vLLM's `vllm:time_to_first_token_seconds` and the like) are
cumulative since the engine started: a quantile of the whole histogram says how the engine did
since it started, not how it does now. What the autoscaler needs is the latency of the last
seconds, so this module keeps a window of snapshots and subtracts the oldest from the newest
(`Window.change`), then reads quantiles from that difference (`quantile`) exactly as
Prometheus' `histogram_quantile(q, increase(..._bucket[w]))` would. The sidecar reads engines
with it today; the operator and `kvscale simulate` can merge pods' windows (`merge`) and read a
fleet's quantile from the same code.

Resets: when the engine restarts its histograms start again from zero. A snapshot whose count
or any bucket fell below the previous one's (or that the caller knows comes from a new process)
restarts the window from that snapshot: the change is never negative and never mixes two
processes. The observations the new process made before its first snapshot are not counted.

Time is an argument (seconds); nothing here reads a clock.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A cumulative histogram, as Prometheus exposes one (`_bucket{le=...}`, `_count`, `_sum`).

    Counts are floats because Prometheus' are, but every count an engine exports is whole.
    """

    bounds: tuple[float, ...]
    """The finite upper bounds (`le`), strictly increasing; the +Inf bucket is `count`."""
    cumulative: tuple[float, ...]
    """Observations <= each bound: one per bound, never decreasing."""
    count: float
    """All observations (the +Inf bucket): at least the last cumulative count."""
    total: float
    """The sum of the observed values (`_sum`)."""

    def __post_init__(self) -> None:
        bounds = self.bounds
        if not bounds:
            raise ValueError("bounds: empty, a histogram needs at least one finite bucket")
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"bounds = {bounds!r}, must be finite (+Inf is implied)")
        if any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"bounds = {bounds!r}, must be strictly increasing")
        if len(self.cumulative) != len(bounds):
            raise ValueError(
                f"cumulative: {len(self.cumulative)} counts for {len(bounds)} bounds, "
                "must be one per bound"
            )
        counts = (*self.cumulative, self.count)
        if not all(math.isfinite(c) and c >= 0 for c in counts):
            raise ValueError(f"cumulative, count = {counts!r}, must be finite and >= 0")
        if any(a > b for a, b in itertools.pairwise(counts)):
            raise ValueError(
                f"cumulative, count = {counts!r}, must never decrease (they are cumulative)"
            )
        if not math.isfinite(self.total):
            raise ValueError(f"total = {self.total!r}, must be finite")

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> Histogram:
        """No observations yet."""
        return cls(tuple(bounds), tuple(0.0 for _ in bounds), 0.0, 0.0)

    @classmethod
    def of(cls, bounds: Sequence[float], values: Iterable[float]) -> Histogram:
        """The histogram of `values` (an observation equal to a bound falls in its bucket)."""
        per_bucket = [0] * (len(bounds) + 1)
        total = 0.0
        for value in values:
            per_bucket[bisect.bisect_left(bounds, value)] += 1
            total += value
        cumulative: list[float] = []
        running = 0
        for count in per_bucket[:-1]:
            running += count
            cumulative.append(float(running))
        return cls(tuple(bounds), tuple(cumulative), float(running + per_bucket[-1]), total)

    def is_before(self, later: Histogram) -> bool:
        """Whether `later` can follow this histogram in one process: same bounds, no count fell."""
        return (
            self.bounds == later.bounds
            and self.count <= later.count
            and all(a <= b for a, b in zip(self.cumulative, later.cumulative, strict=True))
        )


def subtract(later: Histogram, earlier: Histogram) -> Histogram:
    """The observations `later` has that `earlier` had not; ValueError across a reset."""
    if not earlier.is_before(later):
        raise ValueError(
            "earlier histogram is not a predecessor of the later one (different bounds, or a "
            "count fell: the engine restarted)"
        )
    cumulative = tuple(b - a for a, b in zip(earlier.cumulative, later.cumulative, strict=True))
    # Buckets are cumulative, so each difference is at least the one before it in exact
    # arithmetic; floats keep that for the whole counts engines export.
    return Histogram(
        later.bounds,
        cumulative,
        later.count - earlier.count,
        # The sum of non-negative observations never falls; a float rounding may.
        max(0.0, later.total - earlier.total),
    )


def merge(histograms: Iterable[Histogram]) -> Histogram | None:
    """The histogram of every observation in `histograms` (e.g. a fleet's pods); None if none.

    Quantiles of a merged histogram are the fleet's quantiles; an average of pods' quantiles
    is not (one slow pod with few requests would weigh as much as a busy fast one).
    """
    found = list(histograms)
    if not found:
        return None
    bounds = found[0].bounds
    for other in found[1:]:
        if other.bounds != bounds:
            raise ValueError(f"bounds differ: {bounds!r} and {other.bounds!r}")
    return Histogram(
        bounds,
        tuple(sum(column) for column in zip(*(h.cumulative for h in found), strict=True)),
        sum(h.count for h in found),
        sum(h.total for h in found),
    )


def quantile(q: float, histogram: Histogram) -> float | None:
    """The q-quantile as Prometheus' `histogram_quantile` computes it; None with no observations.

    The rank q x count falls in one bucket; the value is interpolated linearly between that
    bucket's lower bound (the previous bound, or 0 for the first bucket) and its upper bound.
    A rank in the +Inf bucket gives the highest finite bound: the true value is at least that.
    So the answer is always within the bucket that holds the true quantile.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q = {q!r}, must be in (0, 1]")
    if histogram.count <= 0:
        return None
    rank = q * histogram.count
    cumulative = histogram.cumulative
    index = bisect.bisect_left(cumulative, rank)
    if index == len(cumulative):
        return histogram.bounds[-1]
    upper = histogram.bounds[index]
    if index == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = histogram.bounds[index - 1], cumulative[index - 1]
    in_bucket = cumulative[index] - below
    return lower + (upper - lower) * (rank - below) / in_bucket


def share_within(histogram: Histogram, limit: float) -> tuple[float, float] | None:
    """(at least, at most): the share of the observations that were <= `limit`, as far as the
    buckets tell; None with no observations.

    A limit on a bucket bound is known exactly. A limit inside a bucket is not: the bucket's
    observations may all lie below it or all above it, so the share lies between the share up
    to the bucket's lower bound and the share up to its upper bound. (`quantile` interpolates
    inside the bucket instead, assuming its observations spread evenly; for an SLO check that
    guess decides misses that never happened, e.g. a 2 s TTFT target inside vLLM's 1-2.5 s
    bucket.)
    """
    if histogram.count <= 0:
        return None
    bounds, cumulative = histogram.bounds, histogram.cumulative
    index = bisect.bisect_left(bounds, limit)
    if index < len(bounds) and bounds[index] == limit:
        exact = cumulative[index] / histogram.count
        return exact, exact
    low = cumulative[index - 1] if index > 0 else 0.0
    high = cumulative[index] if index < len(bounds) else histogram.count
    return low / histogram.count, high / histogram.count


def bucket_of(value: float, bounds: Sequence[float]) -> tuple[float, float]:
    """The (lower, upper] bucket a value falls in; upper is inf past the last bound."""
    index = bisect.bisect_left(bounds, value)
    lower = 0.0 if index == 0 else bounds[index - 1]
    upper = bounds[index] if index < len(bounds) else math.inf
    return lower, upper


@dataclasses.dataclass(frozen=True)
class Change:
    """What a histogram gained over a window."""

    histogram: Histogram
    """The observations made between the window's first and last snapshots."""
    window_seconds: float
    """The time between those two snapshots (> 0)."""


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    at: float
    histogram: Histogram


class Window:
    """The recent snapshots of one cumulative histogram, enough to say what it gained lately.

    `window_seconds` is how far back snapshots count. The oldest snapshot kept is the window's
    starting point; its own observations are not counted, only those made after it. Fields:
    - `_snapshots`: time-ordered snapshots of one process, none older than the window (except
      the one kept as the starting point when it is the only one).
    """

    def __init__(self, window_seconds: float) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds = {window_seconds}, must be greater than 0")
        self.window_seconds = window_seconds
        self._snapshots: collections.deque[_Snapshot] = collections.deque()

    def observe(self, at: float, histogram: Histogram, *, restarted: bool = False) -> None:
        """Record the histogram as it stood at `at`.

        `restarted` says it comes from a new process even if no count fell (the new process
        may have passed the old counts before this snapshot). A restart, a count that fell,
        new bounds, or a clock that stepped back start the window again from this snapshot.
        """
        snapshots = self._snapshots
        if (
            restarted
            or not snapshots
            or at <= snapshots[-1].at
            or not snapshots[-1].histogram.is_before(histogram)
        ):
            snapshots.clear()
        snapshots.append(_Snapshot(at, histogram))
        horizon = at - self.window_seconds
        while len(snapshots) > 1 and snapshots[0].at < horizon:
            snapshots.popleft()

    def clear(self) -> None:
        """Forget every snapshot (the histogram went away)."""
        self._snapshots.clear()

    def change(self) -> Change | None:
        """What the histogram gained over the window; None until two snapshots span time."""
        if len(self._snapshots) < 2:
            return None
        first, last = self._snapshots[0], self._snapshots[-1]
        return Change(subtract(last.histogram, first.histogram), last.at - first.at)


class Recorder:
    """A histogram that only grows, as an engine keeps one: the twin server exports these and
    the simulator's sidecars read them; `snapshot` is what a scrape sees. Fields:
    - `bounds`: the finite upper bounds, strictly increasing;
    - `counts`: observations per bucket (not cumulative), the last one the +Inf bucket;
    - `total`: the sum of the observed values."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        Histogram.empty(self.bounds)  # the same checks of the bounds
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """`count` observations of `value` (one decode step gives its whole batch one gap)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> Histogram:
        cumulative = tuple(float(c) for c in itertools.accumulate(self.counts[:-1]))
        return Histogram(self.bounds, cumulative, float(self.count), self.total)
