"""Observations of a fleet of engine pods, built for the decision's unit tests. Pure.

The decision's tests describe load as a deployment's total demand in KV-cache blocks; `spread`
turns that into the per-pod observations the decision reads, one fresh sample per ready pod.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvscale.scaling import demand

CAPACITY = 100
"""Usable KV-cache blocks per pod in these tests (each reports CAPACITY + 1: vLLM's null block)."""


def spread(
    now: float, total_blocks: int, pods: int | Sequence[str], capacity: int = CAPACITY
) -> list[demand.Observation]:
    """Ready pods sharing `total_blocks` of demand as evenly as blocks allow, sampled at `now`.

    `pods` is a count (pods named p0, p1, ...) or the pods' names. A pod's share beyond its
    capacity waits: it is reported as waiting blocks, so occupancy can exceed 1.
    """
    names = [f"p{index}" for index in range(pods)] if isinstance(pods, int) else list(pods)
    if not names:
        return []
    share, extra = divmod(total_blocks, len(names))
    observations = []
    for index, name in enumerate(names):
        blocks = share + (1 if index < extra else 0)
        used = min(blocks, capacity)
        sample = demand.Sample(
            time=now,
            num_gpu_blocks=capacity + 1,
            num_used_blocks=used,
            num_waiting_blocks=blocks - used,
        )
        observations.append(demand.Observation(name, demand.Phase.READY, sample))
    return observations
