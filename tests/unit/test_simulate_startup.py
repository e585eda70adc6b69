"""Pods serve only after their start-up delay; requests wait at the gateway meanwhile."""

from __future__ import annotations

import pytest

from kvscale import trace
from kvscale.simulate import fleet, policy, simulation
from kvscale.twin import engine, profile

PROFILE = profile.get("h100-sxm", "llama-3-8b")
CONFIG = engine.EngineConfig(
    block_size=4,
    num_gpu_blocks_override=101,
    max_model_len=200,
    max_num_batched_tokens=256,
    max_num_seqs=16,
)


class ScaleTo:
    """A policy that asks for `pods` at its first tick and keeps them."""

    name = "scale-to"
    tick_s = 1.0

    def __init__(self, pods: int) -> None:
        self.pods = pods

    def decide(self, view: policy.View) -> policy.Scale:
        return policy.Scale(self.pods)


def test_a_new_pod_is_ready_exactly_startup_delay_after_it_was_asked_for() -> None:
    made = fleet.Fleet(fleet.Settings(PROFILE, CONFIG, startup_delay_s=45.0))
    pod = made.add(10.0)
    assert pod.state(54.9) is fleet.State.STARTING
    assert pod.state(55.0) is fleet.State.READY
    assert made.ready(54.9) == []


def test_the_simulated_fleet_waits_for_its_pods() -> None:
    settings = simulation.Settings(
        fleet.Settings(PROFILE, CONFIG, startup_delay_s=30.0),
        min_replicas=1,
        max_replicas=3,
        timeline_interval_s=5.0,
    )
    requests = [trace.TraceRequest(float(t), 8, 4) for t in range(0, 60, 2)]
    result = simulation.simulate(requests, settings, ScaleTo(3))
    ready_by_time = {point.time: point.ready for point in result.timeline}
    assert ready_by_time[25.0] == 1
    assert ready_by_time[30.0] == 3  # asked for at t = 0, ready at t = 30
    assert result.max_replicas == 3


def test_requests_wait_at_the_gateway_until_a_pod_is_ready() -> None:
    settings = simulation.Settings(
        fleet.Settings(PROFILE, CONFIG, startup_delay_s=30.0),
        min_replicas=1,
        max_replicas=1,
        initial_replicas=0,  # a cold start: the one pod is asked for at t = 0
    )
    requests = [trace.TraceRequest(0.0, 8, 2), trace.TraceRequest(40.0, 8, 2)]
    result = simulation.simulate(requests, settings, policy.Static())
    prefill = PROFILE.step_time(8, 1, 36, 8)
    # The first waits 30 s for the pod, then its prefill; the second finds it ready.
    assert result.latency.ttft_p50_s == pytest.approx(prefill)
    assert result.latency.ttft_p99_s == pytest.approx(30.0 + prefill)
