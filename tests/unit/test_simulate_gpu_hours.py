"""GPU time runs from "asked for" to "gone"; a removed pod drains first and is paid until empty."""

from __future__ import annotations

import pytest

from kvscale import trace
from kvscale.simulate import fleet, policy, simulation
from kvscale.twin import engine, profile, request

CONFIG = engine.EngineConfig(
    block_size=4,
    num_gpu_blocks_override=101,
    max_model_len=200,
    max_num_batched_tokens=256,
    max_num_seqs=16,
)


def scenario(tensor_parallel: int) -> fleet.Fleet:
    made = fleet.Fleet(
        fleet.Settings(
            profile.get("h100-sxm", "llama-3-8b", tensor_parallel), CONFIG, startup_delay_s=60.0
        )
    )
    made.add(0.0, ready_now=True)  # held 0 -> 200: 200 s
    kept = made.add(10.0)  # ready at 70, removed idle at 100: 90 s
    cancelled = made.add(20.0)  # removed at 50 while still starting: 30 s
    made.remove(cancelled, 50.0)
    made.remove(kept, 100.0)
    return made


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_gpu_hours_by_hand(tensor_parallel: int) -> None:
    made = scenario(tensor_parallel)
    assert [pod.gone_at for pod in made.pods] == [None, 100.0, 50.0]
    assert made.gpu_hours(200.0) == pytest.approx((200 + 90 + 30) * tensor_parallel / 3600)


def test_a_removed_pod_drains_and_is_paid_until_its_last_request_ends() -> None:
    made = fleet.Fleet(fleet.Settings(profile.get("h100-sxm", "llama-3-8b"), CONFIG))
    pod = made.add(0.0, ready_now=True)
    req = request.Request("r", 40, 20)
    pod.twin.add_request(req, 0.0)
    pod.num_inflight = 1
    made.remove(pod, 0.001)
    assert pod.state(0.002) is fleet.State.DRAINING
    assert made.route(0.002, num_blocks=1) is None
    pod.twin.advance_until(100.0)
    pod.num_inflight = 0
    made.settle(pod)
    assert req.finish_time is not None
    assert pod.gone_at == req.finish_time
    assert made.gpu_hours(100.0) == pytest.approx(req.finish_time / 3600)


def test_a_simulation_with_one_static_pod_costs_its_duration() -> None:
    settings = simulation.Settings(
        fleet.Settings(profile.get("h100-sxm", "llama-3-8b"), CONFIG),
        min_replicas=1,
        max_replicas=1,
    )
    requests = [trace.TraceRequest(0.0, 40, 5), trace.TraceRequest(30.0, 40, 5)]
    result = simulation.simulate(requests, settings, policy.Static())
    assert result.duration_s > 30.0
    assert result.gpu_hours == pytest.approx(result.duration_s / 3600)
    assert result.mean_replicas == pytest.approx(1.0)
