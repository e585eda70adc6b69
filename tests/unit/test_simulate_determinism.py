"""Same trace, settings, policy and seed: the same result, to the last number."""

from __future__ import annotations

import random

import pytest

from kvscale import trace
from kvscale.simulate import fleet, policy, simulation
from kvscale.twin import engine, profile

CONFIG = engine.EngineConfig(
    block_size=16, num_gpu_blocks_override=400, max_model_len=2048, max_num_batched_tokens=2048
)


def synthetic(count: int, seed: int) -> list[trace.TraceRequest]:
    rng = random.Random(seed)
    arrival = 0.0
    requests = []
    for _ in range(count):
        arrival += rng.expovariate(4.0)
        requests.append(trace.TraceRequest(arrival, rng.randint(16, 900), rng.randint(1, 200)))
    return requests


@pytest.mark.parametrize("name", ["kvscale", "hpa-cpu", "keda-waiting", "knative-concurrency"])
def test_same_inputs_give_the_same_result(name: str) -> None:
    settings = simulation.Settings(
        fleet.Settings(profile.get("h100-sxm", "llama-3-8b"), CONFIG, startup_delay_s=20.0),
        min_replicas=1,
        max_replicas=4,
    )
    requests = synthetic(300, seed=7)
    faults = policy.Faults(missing=0.1, stale=0.1, seed=3)

    def once() -> simulation.Result:
        made = policy.build(name, min_replicas=1, max_replicas=4, faults=faults)
        return simulation.simulate(requests, settings, made)

    first, second = once(), once()
    assert first == second
    assert first.latency.num_requests == len(requests)


def test_unsorted_requests_are_refused() -> None:
    settings = simulation.Settings(fleet.Settings(profile.get("h100-sxm", "llama-3-8b"), CONFIG))
    requests = [trace.TraceRequest(1.0, 10, 1), trace.TraceRequest(0.5, 10, 1)]
    with pytest.raises(ValueError, match="sorted by arrival_s"):
        simulation.simulate(requests, settings, policy.Static())
