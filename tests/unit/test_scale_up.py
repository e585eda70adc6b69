"""Scale-up: occupancy above the band, pressure before occupancy, and no delay beyond the windows.

Pods here have 100 usable KV blocks (num_gpu_blocks 101: vLLM counts its reserved null block),
so a pod's demand in blocks reads as its occupancy in percent.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from kvscale.scaling import decision, demand, settings

CAPACITY = 100
BLOCKS = CAPACITY + 1
CONFIG = settings.ScalingSettings(max_replicas=50, scale_down_delay_seconds=0)
TARGET = CONFIG.target_occupancy
STEADY = 65  # blocks per pod: 0.65 / 0.7 = 0.93, inside the band, so four pods stay four


def pod(name: str, now: float, blocks: int, **fields: Any) -> demand.Observation:
    """A ready pod wanting `demand` blocks: used up to its capacity, the rest waiting."""
    used = min(blocks, CAPACITY)
    sample = demand.Sample(
        time=now, num_gpu_blocks=BLOCKS, num_used_blocks=used, num_waiting_blocks=blocks - used
    )
    return demand.Observation(name, demand.Phase.READY, dataclasses.replace(sample, **fields))


def missing(name: str) -> demand.Observation:
    return demand.Observation(name, demand.Phase.READY, None)


ONE_TICK = [
    pytest.param(
        [pod("a", 0, 70), pod("b", 0, 70)], 2, decision.Reason.WITHIN_TOLERANCE, id="at-target"
    ),
    # 1.54 / 0.7 = 2.2 pods; the ratio 1.1 is the edge of the band, still inside.
    pytest.param(
        [pod("a", 0, 77), pod("b", 0, 77)], 2, decision.Reason.WITHIN_TOLERANCE, id="band-edge"
    ),
    # 1.8 / 0.7 = 2.57 -> 3.
    pytest.param(
        [pod("a", 0, 90), pod("b", 0, 90)], 3, decision.Reason.SCALE_UP_OCCUPANCY, id="above-band"
    ),
    # Waiting requests' blocks are demand: 60 used by 6 running = 10 per request, 3 waiting
    # need 30 more, so each pod wants 90 blocks: as above.
    pytest.param(
        [
            pod(
                "a", 0, 60, num_waiting_blocks=None, num_requests_running=6, num_requests_waiting=3
            ),
            pod(
                "b", 0, 60, num_waiting_blocks=None, num_requests_running=6, num_requests_waiting=3
            ),
        ],
        3,
        decision.Reason.SCALE_UP_OCCUPANCY,
        id="waiting-demand-estimated",
    ),
    # Preempting at half occupancy: both count as full, 2.0 / 0.7 = 2.86 -> 3.
    pytest.param(
        [pod("a", 0, 50, preemptions_per_second=0.5), pod("b", 0, 50, preemptions_per_second=0.5)],
        3,
        decision.Reason.SCALE_UP_PRESSURE,
        id="preemption-pressure",
    ),
    # A queue of 5 (the pressure limit) at 50 used: 5 x 5 blocks estimated waiting -> 0.75 each,
    # inside the band by occupancy (1.07), but the queue says full: 3.
    pytest.param(
        [
            pod(
                "a", 0, 50, num_waiting_blocks=None, num_requests_running=10, num_requests_waiting=5
            ),
            pod(
                "b", 0, 50, num_waiting_blocks=None, num_requests_running=10, num_requests_waiting=5
            ),
        ],
        3,
        decision.Reason.SCALE_UP_PRESSURE,
        id="queue-pressure",
    ),
    # A pod without a report counts as full: 0.7 + 1.0 = 1.7 / 0.7 = 2.43 -> 3.
    pytest.param(
        [pod("a", 0, 70), missing("b")],
        3,
        decision.Reason.SCALE_UP_PRESSURE,
        id="missing-counts-full",
    ),
    # A queue three caches deep: 8.0 / 0.7 = 11.4 pods wanted, panic (>= 2 x 2 ready),
    # held to ceil(4.0 x 2 ready) = 8 by the rate.
    pytest.param(
        [pod("a", 0, 400), pod("b", 0, 400)], 8, decision.Reason.LIMITED_BY_RATE, id="deep-queue"
    ),
]


@pytest.mark.parametrize(("observations", "desired", "reason"), ONE_TICK)
def test_one_tick_table(
    observations: list[demand.Observation], desired: int, reason: decision.Reason
) -> None:
    result = decision.Autoscaler(CONFIG).step(0.0, observations, 2)
    assert (result.desired, result.reason) == (desired, reason), result.message


def test_deep_queue_is_a_panic() -> None:
    result = decision.Autoscaler(CONFIG).step(0.0, [pod("a", 0, 400), pod("b", 0, 400)], 2)
    assert result.mode is decision.Mode.PANIC
    assert result.wanted == math.ceil(8.0 / TARGET)


def _run_step(before: int, after: int, ticks_before: int, ticks_after: int) -> list[int]:
    """Four pods at `before` blocks, then at `after`; the desired count at each tick."""
    autoscaler = decision.Autoscaler(CONFIG)
    current, history = 4, []
    for tick in range(ticks_before + ticks_after):
        blocks = before if tick < ticks_before else after
        observations = [pod(f"p{i}", tick, blocks) for i in range(4)]
        history.append(autoscaler.step(float(tick), observations, current).desired)
    return history


def test_a_burst_scales_up_at_the_tick_it_arrives() -> None:
    # A steady deployment inside the band (0.65 per pod), then a queue ten caches deep on every
    # pod: the panic window's average, (5 x 0.65 + 10) / 6 = 2.2 per pod, is 3x the target.
    history = _run_step(before=STEADY, after=1000, ticks_before=60, ticks_after=1)
    assert history[:60] == [4] * 60
    assert history[60] > 4


@pytest.mark.parametrize("after", [78, 80, 90, 100])
def test_a_step_above_the_band_scales_up_at_the_tick_it_arrives(after: int) -> None:
    # 0.78 / 0.7 = 1.11: just above the band. The stable window still averages 0.65 and
    # would take seconds to leave the band; the tick's own demand decides on the way up.
    history = _run_step(before=STEADY, after=after, ticks_before=60, ticks_after=60)
    assert history[:60] == [4] * 60
    assert history[60] == math.ceil(4 * after / CAPACITY / TARGET)
    assert history[60:] == [history[60]] * 60  # and no more: the new pods cover the step


@pytest.mark.parametrize("after", [70, 77])
def test_a_step_within_the_band_does_not_scale(after: int) -> None:
    history = _run_step(before=STEADY, after=after, ticks_before=60, ticks_after=120)
    assert history == [4] * 180


def test_the_tick_scales_up_but_never_scales_down() -> None:
    # A dip to nearly idle for a tick is not a scale-down: only the stable window scales down.
    autoscaler = decision.Autoscaler(CONFIG)
    for tick in range(60):
        autoscaler.step(float(tick), [pod(f"p{i}", tick, STEADY) for i in range(4)], 4)
    dip = autoscaler.step(60.0, [pod(f"p{i}", 60, 1) for i in range(4)], 4)
    assert (dip.desired, dip.reason) == (4, decision.Reason.WITHIN_TOLERANCE)


@pytest.mark.parametrize(
    ("fields", "blocks"),
    [
        ({"num_waiting_blocks": 12}, 12),  # the engine says
        ({"num_waiting_tokens": 33, "num_requests_waiting": 1}, 3),  # ceil(33 / 16)
        ({"num_waiting_tokens": 5, "num_requests_waiting": 4}, 4),  # at least 1 per request
        ({"num_requests_running": 4, "num_requests_waiting": 2}, 2 * 10),  # 40 used / 4 running
        ({"num_requests_running": 3, "num_requests_waiting": 1}, 14),  # ceil(40 / 3)
        ({"num_requests_running": 0, "num_requests_waiting": 3}, 3),  # nothing to go by: 1 each
        ({"num_requests_running": 4, "num_requests_waiting": 0}, 0),
    ],
)
def test_waiting_blocks_reported_or_estimated(fields: dict[str, Any], blocks: int) -> None:
    base = demand.Sample(time=0.0, num_gpu_blocks=BLOCKS, num_used_blocks=40)
    sample = dataclasses.replace(base, **fields)
    assert demand.waiting_blocks(sample) == blocks
