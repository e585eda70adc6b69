"""Which ready pods the collector asks each tick when a deployment has many. Pure.

Asking every sidecar every tick costs one request per pod per tick; with hundreds of pods
that is most of the loop's time for little gain, since the deployment's mean occupancy is
known well from a sample. The size is Knative's: every pod while there are at most three,
else n = ceil(N * X / (N + X - 1)) with X = 15.4 (the sample size for an infinite population
at Knative's confidence and error bounds, corrected for the finite N). It grows slowly: 4 of
4, 8 of 15, 14 of 100, 16 of 2,000.

The choice rotates: pods are put in a stable order (by name) and each tick takes the next `n`
of them, wrapping around, so every pod is asked at least every ceil(N / n) ticks and a silent
sidecar is noticed within a few ticks, never hidden for long by the luck of the draw. Pods the
collector did not ask are assumed, by the decision, to carry the asked pods' mean occupancy
(`kvscale.scaling.demand`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

POPULATION_FACTOR = 15.4
"""Knative's X: the sample size an infinitely large deployment would need."""
SAMPLE_ALL_UP_TO = 3
"""Deployments this small are always asked in full."""


def sample_size(num_pods: int, factor: float = POPULATION_FACTOR) -> int:
    """How many of `num_pods` pods to ask: all up to three, else Knative's formula."""
    if isinstance(num_pods, bool) or not isinstance(num_pods, int) or num_pods < 0:
        raise ValueError(f"num_pods = {num_pods!r}, must be an integer, at least 0")
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"factor = {factor!r}, must be a finite number, at least 1")
    if num_pods <= SAMPLE_ALL_UP_TO:
        return num_pods
    size = math.ceil(num_pods * factor / (num_pods + factor - 1))
    return max(1, min(num_pods, size))


def choose(pods: Iterable[str], tick: int, size: int) -> tuple[str, ...]:
    """The `size` pods to ask at tick number `tick`: a window that moves by `size` a tick.

    `pods` are names (any order, duplicates ignored); the answer is in the stable order.
    """
    ordered = sorted(set(pods))
    count = len(ordered)
    if size >= count:
        return tuple(ordered)
    if size <= 0:
        return ()
    start = (tick * size) % count
    window = ordered[start : start + size]
    if len(window) < size:
        window += ordered[: size - len(window)]
    return tuple(window)
