"""The baseline policies follow their documented algorithms: HPA, KEDA through the HPA, KPA."""

from __future__ import annotations

import dataclasses

import pytest

from kvscale.simulate import fleet, hpa, kpa, policy
from kvscale.twin import engine, profile

# --- HPA: replica calculation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "utilizations", "unready", "expected"),
    [
        (2, [70.0, 70.0], 0, 2),  # on target
        (2, [75.0, 76.0], 0, 2),  # ratio 1.08: within the 0.1 tolerance
        (2, [140.0, 140.0], 0, 4),  # ratio 2: ceil(2 x 2)
        (4, [20.0, 20.0, 20.0, 20.0], 0, 2),  # ratio 0.29: ceil(0.29 x 4)
        (3, [140.0, 140.0], 1, 4),  # up with 1 unready at 0%: ratio 280/210 = 1.33 -> ceil(4)
        (4, [80.0, 80.0], 2, 4),  # up, but with 2 unready at 0% the ratio flips below 1: stay
        (3, [], 3, 3),  # no metrics at all: nothing happens
    ],
)
def test_hpa_resource_replicas(
    current: int, utilizations: list[float], unready: int, expected: int
) -> None:
    assert hpa.resource_replicas(current, utilizations, unready, 70.0, 0.1) == expected


@pytest.mark.parametrize(
    ("current", "total", "expected"),
    [
        (1, 0.0, 0),  # nothing waiting: the HPA wants 0, the bounds make it minReplicas
        (2, 10.0, 2),  # 5 per pod: on target
        (2, 10.9, 2),  # ratio 1.09: within tolerance
        (2, 23.0, 5),  # ceil(23 / 5)
        (4, 6.0, 2),
    ],
)
def test_hpa_external_average_value(current: int, total: float, expected: int) -> None:
    assert hpa.external_average_replicas(current, total, 5.0, 0.1) == expected


def test_hpa_scale_up_is_limited_to_max_of_4_pods_and_100_percent_per_15_s() -> None:
    behavior = hpa.Behavior(hpa.Settings(min_replicas=1, max_replicas=100))
    assert behavior.apply(0.0, 1, 50) == 5  # +4 pods beats +100%
    assert behavior.apply(15.0, 5, 50) == 10  # +100% beats +4 pods
    assert behavior.apply(30.0, 10, 50) == 20


def test_hpa_scale_down_takes_the_highest_recommendation_of_the_last_300_s() -> None:
    behavior = hpa.Behavior(hpa.Settings(min_replicas=1, max_replicas=10))
    assert behavior.apply(0.0, 6, 6) == 6
    assert behavior.apply(15.0, 6, 2) == 6  # 6 was recommended within 300 s
    assert behavior.apply(299.0, 6, 2) == 6
    assert behavior.apply(300.0, 6, 2) == 2  # the 6 at t = 0 left the window
    assert behavior.apply(315.0, 2, 0) == 2  # 2 was recommended within 300 s
    assert behavior.apply(601.0, 2, 0) == 1  # then 0, raised to minReplicas


# --- KPA -------------------------------------------------------------------------------------


def test_kpa_stable_window_decides_and_scale_down_is_at_most_halving() -> None:
    scaler = kpa.Kpa(kpa.Settings(target=10.0, max_replicas=20))
    for second in range(60):
        scaler.record(float(second), 35.0)
    assert scaler.decide(59.0, current=1, num_ready=1) == 4  # ceil(35 / 10)
    for second in range(60, 130):
        scaler.record(float(second), 5.0)
    assert scaler.decide(129.0, current=8, num_ready=8) == 4  # wants 1, floor(8 / 2) = 4


def test_kpa_panics_on_a_burst_and_never_scales_down_while_panicking() -> None:
    scaler = kpa.Kpa(kpa.Settings(target=10.0, max_replicas=50))
    for second in range(54):
        scaler.record(float(second), 10.0)
    for second in range(54, 60):
        scaler.record(float(second), 100.0)  # panic window: 100 -> 10 pods, 10x the ready
    assert scaler.decide(59.0, current=1, num_ready=1) == 10
    assert scaler.panicking
    for second in range(60, 70):
        scaler.record(float(second), 10.0)
    assert scaler.decide(69.0, current=10, num_ready=10) == 10  # held while panicking
    for second in range(70, 125):
        scaler.record(float(second), 10.0)
    assert scaler.decide(124.0, current=10, num_ready=10) == 5  # panic over: halve at most
    assert not scaler.panicking


def test_kpa_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"max_scale_up_rate = 1\.0, must be greater than 1\.0"):
        kpa.Settings(target=1.0, max_scale_up_rate=1.0)
    with pytest.raises(ValueError, match=r"target = 0\.0"):
        kpa.Settings(target=0.0)


# --- the policies, on views -----------------------------------------------------------------

_TWIN = engine.EngineTwin(engine.EngineConfig(), profile.get("h100-sxm", "llama-3-8b"))
_IDLE = _TWIN.metrics()


def pod(name: str, state: fleet.State, **metrics: int) -> policy.PodView:
    numbers = dataclasses.replace(_IDLE, **metrics) if metrics else _IDLE
    inflight = metrics.get("num_requests_running", 0) + metrics.get("num_requests_waiting", 0)
    shown = None if state is fleet.State.STARTING else numbers
    return policy.PodView(name, state, 0.0, inflight, shown)


def test_hpa_cpu_counts_tokens_per_second_against_the_per_pod_maximum() -> None:
    made = policy.build(
        "hpa-cpu",
        min_replicas=1,
        max_replicas=10,
        overrides={"hpa.maxTokensPerSecond": "1000", "hpa.targetUtilization": "50"},
    )
    ready = fleet.State.READY
    first = policy.View(0.0, 2, (pod("a", ready), pod("b", ready)))
    assert made.decide(first).desired == 2  # a first sample: nothing to compare yet
    busy = policy.View(
        15.0,
        2,
        (
            pod("a", ready, prompt_tokens_total=15_000),  # 1000 tok/s: 100%
            pod("b", ready, generation_tokens_total=7_500),  # 500 tok/s: 50%
        ),
    )
    assert made.decide(busy).desired == 3  # mean 75% vs 50%: ceil(1.5 x 2)


def test_keda_scales_on_the_sum_of_waiting_requests_per_threshold() -> None:
    made = policy.build("keda-waiting", min_replicas=1, max_replicas=10)
    ready, starting = fleet.State.READY, fleet.State.STARTING
    view = policy.View(
        0.0,
        3,
        (
            pod("a", ready, num_requests_waiting=12),
            pod("b", ready, num_requests_waiting=9),
            pod("c", starting),
        ),
    )
    assert made.decide(view).desired == 5  # ceil(21 / 5)


def test_knative_scales_on_in_flight_requests_of_ready_pods() -> None:
    made = policy.build(
        "knative-concurrency", min_replicas=1, max_replicas=10, overrides={"knative.target": "4"}
    )
    ready = fleet.State.READY
    view = policy.View(0.0, 1, (pod("a", ready, num_requests_running=9),))
    assert made.decide(view).desired == 3  # ceil(9 / 4): both windows hold one scrape


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("hpa-cpu", {"hpa.bogus": "1"}, "hpa.bogus: unknown key"),
        ("hpa-cpu", {"hpa.targetUtilization": "x"}, "targetUtilization = 'x', must be a number"),
        ("keda-waiting", {"keda.threshold": "0"}, "threshold = 0.0, must be > 0"),
        ("kvscale", {"targetOccupancy": "2"}, "targetOccupancy = 2, must be at most 1.0"),
        ("kvscale", {"nope.x": "1"}, "nope.x: unknown prefix"),
        ("bogus", {}, "policy = 'bogus', must be one of"),
    ],
)
def test_bad_policy_settings_name_the_key(
    name: str, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        policy.build(name, min_replicas=1, max_replicas=4, overrides=overrides)
