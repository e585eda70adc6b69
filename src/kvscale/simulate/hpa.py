"""The Kubernetes HorizontalPodAutoscaler's algorithm, as the simulation's baselines use it. Pure.

Written from the HPA's documented behavior (kubernetes.io, "Horizontal Pod Autoscaling",
algorithm details and configurable scaling behavior) and the replica calculator's rules:

- Resource metrics (CPU utilization): usage ratio = mean utilization of the ready pods /
  target. Within the tolerance (0.1) nothing changes; otherwise desired = ceil(ratio x ready).
  Pods not yet ready are left out; when the ratio says "up" and some pods are not ready,
  they count as 0% and the ratio is computed again; if that flips the direction or lands in
  the tolerance, replicas stay.
- External metrics with an AverageValue target (what KEDA's scalers create): ratio = total /
  (target x current replicas); outside the tolerance, desired = ceil(total / target).
- Behavior (the defaults of autoscaling/v2): scale-up stabilization 0 s, at most
  max(+4 pods, +100%) per 15 s; scale-down stabilization 300 s (the highest recommendation of
  the last 300 s wins), at most -100% per 15 s; then min/max replicas.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from kvscale.scaling import arith


@dataclasses.dataclass(frozen=True)
class Settings:
    """One HPA's settings; defaults are Kubernetes' (kube-controller-manager and autoscaling/v2)."""

    min_replicas: int = 1
    max_replicas: int = 4
    sync_period_s: float = 15.0
    """--horizontal-pod-autoscaler-sync-period."""
    tolerance: float = 0.1
    """--horizontal-pod-autoscaler-tolerance."""
    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 300.0
    scale_up_pods: int = 4
    """Pods policy of scale-up: add at most this many per period..."""
    scale_up_percent: float = 100.0
    """...or this percent per period, whichever allows more (selectPolicy: Max)."""
    scale_up_period_s: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period_s: float = 15.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"min_replicas = {self.min_replicas}, max_replicas = {self.max_replicas}: "
                "must be 1 <= min_replicas <= max_replicas"
            )
        for name in ("sync_period_s", "scale_up_period_s", "scale_down_period_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} = {getattr(self, name)!r}, must be > 0")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance = {self.tolerance!r}, must be in [0, 1)")


def resource_replicas(
    current: int,
    ready_utilizations: Sequence[float],
    num_unready: int,
    target: float,
    tolerance: float,
) -> int:
    """Desired replicas for a resource-utilization target (CPU), before behavior and bounds."""
    if not target > 0:
        raise ValueError(f"target = {target!r}, must be > 0")
    num_ready = len(ready_utilizations)
    if num_ready == 0:
        return current  # no metrics at all: the HPA does nothing
    total = math.fsum(ready_utilizations)
    ratio = total / num_ready / target
    if num_unready == 0 or ratio <= 1:
        if abs(1 - ratio) <= tolerance + arith.EPSILON:
            return current
        return arith.ceil(ratio * num_ready)
    # Scaling up with pods not ready: they count as 0% (they will take load when ready).
    counted = num_ready + num_unready
    new_ratio = total / counted / target
    if abs(1 - new_ratio) <= tolerance + arith.EPSILON or new_ratio < 1:
        return current
    return max(current, arith.ceil(new_ratio * counted))


def external_average_replicas(current: int, total: float, target: float, tolerance: float) -> int:
    """Desired replicas for an external metric with an AverageValue target (KEDA's kind)."""
    if not target > 0:
        raise ValueError(f"target = {target!r}, must be > 0")
    if current == 0:
        return arith.ceil(total / target)
    ratio = total / (target * current)
    if abs(1 - ratio) <= tolerance + arith.EPSILON:
        return current
    return arith.ceil(total / target)


class Behavior:
    """Stabilization windows, rate policies and bounds: what turns a recommendation into a scale.

    Keeps the recommendations and scale events of the recent past, like the controller does.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._recommendations: list[tuple[float, int]] = []
        self._events: list[tuple[float, int]] = []  # (time, change in replicas)

    def apply(self, now: float, current: int, recommended: int) -> int:
        """The replicas to set at `now` for a raw `recommended` count; records both."""
        s = self.settings
        up_cutoff = now - s.scale_up_stabilization_s
        down_cutoff = now - s.scale_down_stabilization_s
        keep_after = now - max(s.scale_up_stabilization_s, s.scale_down_stabilization_s)
        self._recommendations = [(t, r) for t, r in self._recommendations if t > keep_after]
        up = down = recommended
        for at, value in self._recommendations:
            if at > up_cutoff:
                up = min(up, value)
            if at > down_cutoff:
                down = max(down, value)
        self._recommendations.append((now, recommended))
        desired = min(max(current, up), down)

        if desired > current:
            limit = max(current, self._scale_up_limit(now, current))
            desired = min(desired, limit, s.max_replicas)
        elif desired < current:
            limit = self._scale_down_limit(now, current)
            desired = max(desired, limit, s.min_replicas)
        desired = min(max(desired, s.min_replicas), s.max_replicas)
        if desired != current:
            self._events.append((now, desired - current))
        horizon = now - max(s.scale_up_period_s, s.scale_down_period_s)
        self._events = [(t, c) for t, c in self._events if t > horizon]
        return desired

    def _change_in(self, now: float, period_s: float, *, up: bool) -> int:
        cutoff = now - period_s
        return sum(c for t, c in self._events if t > cutoff and (c > 0) == up)

    def _scale_up_limit(self, now: float, current: int) -> int:
        s = self.settings
        start = current - self._change_in(now, s.scale_up_period_s, up=True)
        by_pods = start + s.scale_up_pods
        by_percent = arith.ceil(start * (1 + s.scale_up_percent / 100))
        return max(by_pods, by_percent)

    def _scale_down_limit(self, now: float, current: int) -> int:
        s = self.settings
        start = current - self._change_in(now, s.scale_down_period_s, up=False)
        return math.floor(start * (1 - s.scale_down_percent / 100) + arith.EPSILON)
