"""Pods on the way are capacity: no cascade of scale-ups while they start, no veto either.

`current` is the Deployment's spec.replicas, so it counts pods that are pending, starting or
not even created yet. Pods have 100 usable blocks.
"""

from __future__ import annotations

import dataclasses

from kvscale.scaling import decision, demand, settings

CAPACITY = 100
CONFIG = settings.ScalingSettings(
    max_replicas=20,
    stable_window_seconds=10,
    panic_window_seconds=2,
    scale_down_delay_seconds=0,
    max_scale_down_rate=1000,
)


def pod(
    name: str, now: float, blocks: int, phase: demand.Phase = demand.Phase.READY
) -> demand.Observation:
    used = min(blocks, CAPACITY)
    sample = demand.Sample(
        time=now,
        num_gpu_blocks=CAPACITY + 1,
        num_used_blocks=used,
        num_waiting_blocks=blocks - used,
    )
    return demand.Observation(name, phase, sample)


def bare(name: str, phase: demand.Phase) -> demand.Observation:
    return demand.Observation(name, phase)


def test_a_pending_pod_stops_a_cascade_of_scale_ups() -> None:
    # Two full pods want 2.0 / 0.7 = 2.86 -> 3; the third stays pending for 100 s while the
    # two keep reporting full. Nothing more is asked for.
    autoscaler = decision.Autoscaler(CONFIG)
    first = autoscaler.step(0.0, [pod("a", 0, 100), pod("b", 0, 100)], 2)
    assert first.desired == 3
    for tick in range(1, 100):
        observations = [pod("a", tick, 100), pod("b", tick, 100), bare("c", demand.Phase.PENDING)]
        result = autoscaler.step(float(tick), observations, first.desired)
        assert (result.desired, result.reason) == (3, decision.Reason.HOLD_PODS_STARTING)
        assert (result.ready, result.pending) == (2, 1)


def test_pods_the_replicaset_has_not_created_yet_count_too() -> None:
    # spec.replicas is 3, only the two ready pods exist so far.
    result = decision.Autoscaler(CONFIG).step(0.0, [pod("a", 0, 100), pod("b", 0, 100)], 3)
    assert (result.desired, result.reason) == (3, decision.Reason.HOLD_PODS_STARTING)


def test_demand_beyond_the_pods_on_the_way_scales_up_again() -> None:
    autoscaler = decision.Autoscaler(CONFIG)
    autoscaler.step(0.0, [pod("a", 0, 100), pod("b", 0, 100)], 2)
    # The queue grows to twice the cache on both: 4.0 / 0.7 = 5.7 pods, more than the 3 asked.
    observations = [pod("a", 1, 200), pod("b", 1, 200), bare("c", demand.Phase.STARTING)]
    result = autoscaler.step(1.0, observations, 3)
    assert result.desired > 3


def test_no_ready_pod_yet_holds_and_says_pods_are_starting() -> None:
    observations = [bare(f"s{i}", demand.Phase.STARTING) for i in range(2)]
    observations.append(bare("p", demand.Phase.PENDING))
    result = decision.Autoscaler(CONFIG).step(0.0, observations, 3)
    assert (result.desired, result.mode) == (3, decision.Mode.HOLD)
    assert result.reason is decision.Reason.HOLD_PODS_STARTING
    assert "3 pods starting or pending" in result.message


def test_a_starting_pod_does_not_hold_a_scale_down() -> None:
    observations = [pod(name, 0, 5) for name in "abc"] + [bare("s", demand.Phase.STARTING)]
    result = decision.Autoscaler(CONFIG).step(0.0, observations, 4)
    assert (result.desired, result.reason) == (1, decision.Reason.SCALE_DOWN)


def test_starting_and_terminating_pods_carry_no_load_and_no_veto() -> None:
    # A starting engine already reporting a full cache (warm-up) and terminating pods without
    # reports change nothing: two ready pods at the target stay two.
    observations = [
        pod("a", 0, 70),
        pod("b", 0, 70),
        pod("warming", 0, 100, phase=demand.Phase.STARTING),
        bare("old-1", demand.Phase.TERMINATING),
        dataclasses.replace(bare("old-2", demand.Phase.TERMINATING), polled=True),
    ]
    result = decision.Autoscaler(CONFIG).step(0.0, observations, 3)
    assert result.unreported == ()
    assert result.occupancy == 0.7
    assert (result.ready, result.starting) == (2, 1)
    assert result.desired == 3
    assert result.reason is decision.Reason.WITHIN_TOLERANCE
