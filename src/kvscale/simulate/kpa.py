"""Knative's Pod Autoscaler (KPA) on a concurrency target, as a simulation baseline. Pure.

Written from Knative Serving's documented autoscaling behavior (knative.dev, "Configuring
the autoscaler", "Configuring scale bounds") and its documented defaults:

- the metric (in-flight requests of the ready pods) is scraped every second into 1 s buckets;
- every tick (2 s): stable = average over the stable window (60 s), panic = average over the
  panic window (10% of it, 6 s); desired = ceil(value / target) for each, each clamped to
  [floor(ready / max down rate), ceil(max up rate x ready)];
- panic starts (or is extended) when ceil(panic / target) / ready >= the panic threshold
  (200%); while panicking the count is the larger of the two windows' and never goes down
  (the highest count of this panic wins); panic ends once a stable window passes without a
  trigger;
- scale-down delay 0 (Knative's default): the stable window alone decides a scale-down;
- then min/max scale.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from kvscale.scaling import arith


@dataclasses.dataclass(frozen=True)
class Settings:
    """A KPA's settings; defaults are Knative's config-autoscaler defaults."""

    target: float
    """Concurrency per pod to aim for (the `autoscaling.knative.dev/target` annotation, times
    the target utilization)."""
    min_replicas: int = 1
    max_replicas: int = 4
    tick_s: float = 2.0
    stable_window_s: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0

    def __post_init__(self) -> None:
        if not (self.target > 0 and math.isfinite(self.target)):
            raise ValueError(f"target = {self.target!r}, must be a finite number > 0")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"min_replicas = {self.min_replicas}, max_replicas = {self.max_replicas}: "
                "must be 1 <= min_replicas <= max_replicas"
            )
        if not 1 <= self.panic_window_percentage <= 100:
            raise ValueError(
                f"panic_window_percentage = {self.panic_window_percentage!r}, must be in [1, 100]"
            )
        for name in ("max_scale_up_rate", "max_scale_down_rate"):
            if not getattr(self, name) > 1:
                raise ValueError(f"{name} = {getattr(self, name)!r}, must be greater than 1.0")

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_percentage / 100


class Kpa:
    """One revision's autoscaler: its metric buckets and its panic state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._buckets: collections.deque[tuple[int, float]] = collections.deque()
        self._panic_since: float | None = None  # the last time the panic threshold was crossed
        self._max_panic_pods = 0

    @property
    def panicking(self) -> bool:
        return self._panic_since is not None

    def record(self, now: float, total_concurrency: float) -> None:
        """One scrape: the ready pods' in-flight requests, summed (the last in a second wins)."""
        second = math.floor(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets.pop()
        self._buckets.append((second, total_concurrency))
        horizon = second - self.settings.stable_window_s
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()

    def _average(self, now: float, window_s: float) -> float | None:
        cutoff = math.floor(now) - window_s
        values = [value for second, value in self._buckets if second > cutoff]
        return math.fsum(values) / len(values) if values else None

    def decide(self, now: float, current: int, num_ready: int) -> int:
        """Desired replicas at `now` (a tick); `current` is kept while there is no data."""
        s = self.settings
        stable = self._average(now, s.stable_window_s)
        panic = self._average(now, s.panic_window_s)
        if stable is None or panic is None:
            return min(max(current, s.min_replicas), s.max_replicas)
        ready = float(max(1, num_ready))
        max_up = math.ceil(s.max_scale_up_rate * ready - arith.EPSILON)
        max_down = math.floor(ready / s.max_scale_down_rate + arith.EPSILON)
        stable_pods = arith.ceil(stable / s.target)
        panic_pods = arith.ceil(panic / s.target)
        desired_stable = min(max(stable_pods, max_down), max_up)
        desired_panic = min(max(panic_pods, max_down), max_up)

        over = panic_pods / ready >= s.panic_threshold_percentage / 100 - arith.EPSILON
        if over:
            self._panic_since = now
        elif self._panic_since is not None and now - self._panic_since >= s.stable_window_s:
            self._panic_since = None
            self._max_panic_pods = 0

        desired = desired_stable
        if self._panic_since is not None:
            # The larger of the two windows, and never less than earlier in this panic.
            self._max_panic_pods = max(self._max_panic_pods, desired_panic, desired_stable)
            desired = self._max_panic_pods
        return min(max(desired, s.min_replicas), s.max_replicas)
