"""The simulated gateway routes each request to the least-loaded ready pod (by KV demand)."""

from __future__ import annotations

from kvscale.simulate import fleet
from kvscale.twin import engine, profile, request

PROFILE = profile.get("h100-sxm", "llama-3-8b")
CONFIG = engine.EngineConfig(
    block_size=4,
    num_gpu_blocks_override=101,
    max_model_len=200,
    max_num_batched_tokens=256,
    max_num_seqs=16,
)


def make_fleet(num_pods: int, startup_delay_s: float = 60.0) -> fleet.Fleet:
    made = fleet.Fleet(fleet.Settings(PROFILE, CONFIG, startup_delay_s=startup_delay_s))
    for _ in range(num_pods):
        made.add(0.0, ready_now=True)
    return made


def load(pod: fleet.Pod, name: str, prompt: int, now: float) -> None:
    pod.twin.add_request(request.Request(name, prompt, 30), now)
    pod.num_inflight += 1


def test_the_pod_with_the_least_kv_demand_gets_the_request() -> None:
    pods = make_fleet(3)
    load(pods.pods[0], "a", 160, 0.0)  # 40 blocks
    load(pods.pods[1], "b", 40, 0.0)  # 10 blocks
    load(pods.pods[2], "c", 80, 0.0)  # 20 blocks
    for pod in pods.pods:
        pod.twin.advance_until(0.05)  # prefills done, decoding
    pods.refresh()
    seen = [pod.seen_demand for pod in pods.pods]
    assert seen[0] > seen[2] > seen[1] > 0
    assert seen[1] == pods.pods[1].twin.metrics().kv_cache_usage  # nothing waits there
    chosen = pods.route(1.0, num_blocks=5)
    assert chosen is pods.pods[1]


def test_waiting_requests_count_as_demand() -> None:
    pods = make_fleet(2)
    load(pods.pods[0], "queued", 160, 5.0)  # arrives later than the engine's clock: waiting
    pods.refresh()
    assert pods.pods[0].seen_demand == 40 / 100
    assert pods.route(1.0, num_blocks=1) is pods.pods[1]


def test_a_burst_between_refreshes_is_spread_by_the_blocks_sent() -> None:
    pods = make_fleet(3)
    pods.refresh()
    chosen = [pods.route(1.0, num_blocks=10) for _ in range(6)]
    assert [pod.index for pod in chosen if pod is not None] == [0, 1, 2, 0, 1, 2]


def test_ties_go_to_fewer_requests_in_flight_then_the_oldest_pod() -> None:
    pods = make_fleet(3)
    pods.pods[0].num_inflight = 2
    pods.refresh()
    assert pods.route(0.0, num_blocks=0) is pods.pods[1]


def test_starting_and_draining_pods_get_nothing() -> None:
    pods = make_fleet(1, startup_delay_s=60.0)
    starting = pods.add(10.0)
    pods.remove(pods.pods[0], 20.0)
    pods.refresh()
    assert pods.route(30.0, num_blocks=1) is None  # no ready pod: the gateway holds it
    assert pods.route(70.0, num_blocks=1) is starting  # ready at 10 + 60
