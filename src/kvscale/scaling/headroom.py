"""Pods asked for ahead of a ramp: start-up time from the cluster's own pods, and the rule
"pods to ask now = demand growth rate x start-up time". Pure.

A pod asked for now serves only after its start-up time (scheduling, image pull, weights,
compile, CUDA graphs: 80 s to 12 minutes for the models people run, docs/simulation.md). An
autoscaler that asks for pods when the load arrives is a start-up time late on every ramp. So:

- `LeadTime` keeps the recent start-up times of this deployment's pods (from their own
  timestamps: created, then Ready) and says how long the next one will likely take: a high
  quantile (`quantile`, 0.8 by default) of the recent ones, so most pods are ready in time,
  after dropping outliers (a pod that waited an hour for a node says nothing about the next);
  until `min_samples` pods were seen, a stated prior counts as one of them.
- `growth_rate` is the demand's slope over a recent window (Theil-Sen: the median of pairwise
  slopes, so one burst does not read as a ramp), through at most 24 points spread over it.
- `pods_ahead` turns both into pods: the load the fleet will gain during one start-up time,
  over a pod's capacity. Only growth asks ahead; a falling demand asks for nothing here
  (scale-down has its own, slower rules).

Time is an argument; nothing here reads a clock.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Sequence


class LeadTime:
    """How long this deployment's pods take from being created to Ready. Fields:
    - `prior_seconds`: the guess before pods were seen (e.g. from the model's size);
    - `_seconds`: the start-up times of the last `max_samples` pods, oldest first.
    """

    def __init__(
        self,
        prior_seconds: float,
        *,
        quantile: float = 0.8,
        max_samples: int = 20,
        min_samples: int = 3,
        outlier_factor: float = 4.0,
    ) -> None:
        if not (math.isfinite(prior_seconds) and prior_seconds >= 0):
            raise ValueError(f"prior_seconds = {prior_seconds!r}, must be >= 0")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile = {quantile!r}, must be in (0, 1]")
        if not 1 <= min_samples <= max_samples:
            raise ValueError(
                f"min_samples = {min_samples}, max_samples = {max_samples}: need "
                "1 <= min_samples <= max_samples"
            )
        if not outlier_factor > 1.0:
            raise ValueError(f"outlier_factor = {outlier_factor!r}, must be > 1")
        self.prior_seconds = prior_seconds
        self.quantile = quantile
        self.min_samples = min_samples
        self.outlier_factor = outlier_factor
        self._seconds: collections.deque[float] = collections.deque(maxlen=max_samples)

    def observe(self, created_at: float, ready_at: float) -> None:
        """One pod's start: created (asked for) at `created_at`, Ready at `ready_at`."""
        took = ready_at - created_at
        if not (math.isfinite(took) and took >= 0):
            raise ValueError(
                f"ready_at - created_at = {took!r}: a pod is Ready after it was created"
            )
        self._seconds.append(took)

    @property
    def num_samples(self) -> int:
        return len(self._seconds)

    def seconds(self) -> float:
        """The start-up time to plan with: a high quantile of the recent ones, outliers out."""
        values = list(self._seconds)
        if len(values) < self.min_samples:
            values.append(self.prior_seconds)
        middle = statistics.median(values)
        if middle > 0:
            values = [v for v in values if v <= self.outlier_factor * middle]
        ordered = sorted(values)
        # Nearest rank: the smallest value with at least `quantile` of them at or below it.
        return ordered[max(0, math.ceil(self.quantile * len(ordered)) - 1)]


def growth_rate(points: Sequence[tuple[float, float]], most: int = 24) -> float | None:
    """The demand's slope (load per second) through `(time, load)` points, oldest first; None
    under two times.

    Theil-Sen: the median of the slopes between every pair of points at different times. Up to
    29% of the points can be anything (a burst, a missing pod's zero) without moving it far.
    It is quadratic, so at most `most` points count, spread evenly from the first to the last:
    the last `most` ticks would be only the window's end, where one burst reads as a ramp
    (conv on an L4: 19 pods asked ahead of 38 wanted, at 0.31 pods/s).
    """
    points = _spread(points, most)
    slopes = [
        (load_b - load_a) / (time_b - time_a)
        for index, (time_a, load_a) in enumerate(points)
        for time_b, load_b in points[index + 1 :]
        if time_b != time_a
    ]
    return statistics.median(slopes) if slopes else None


def _spread(points: Sequence[tuple[float, float]], most: int) -> Sequence[tuple[float, float]]:
    """At most `most` of `points`, evenly spaced from the first to the last."""
    if most < 2:
        raise ValueError(f"most = {most!r}, must be >= 2: a slope needs two points")
    if len(points) <= most:
        return points
    step = (len(points) - 1) / (most - 1)
    return [points[round(index * step)] for index in range(most)]


def pods_ahead(growth_per_second: float | None, lead_seconds: float, capacity: float) -> int:
    """Pods to ask for now so that they are Ready when the growing demand needs them:
    ceil(growth x lead time / capacity per pod); 0 when the demand is not growing."""
    if not (math.isfinite(lead_seconds) and lead_seconds >= 0):
        raise ValueError(f"lead_seconds = {lead_seconds!r}, must be >= 0")
    if not (math.isfinite(capacity) and capacity > 0):
        raise ValueError(f"capacity = {capacity!r}, must be > 0")
    if growth_per_second is None or not growth_per_second > 0:
        return 0
    return math.ceil(round(growth_per_second * lead_seconds / capacity, 9))
