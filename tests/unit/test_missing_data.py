"""Missing, stale, unhealthy and invalid reports never count as idle.

With no fresh report at all the deployment holds its size and says why; with some, the pods
without one count as full for scale-up and veto any scale-down. Pods have 100 usable blocks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kvscale.scaling import decision, demand, settings

CAPACITY = 100
STALE_AFTER = 5.0
CONFIG = settings.ScalingSettings(
    max_replicas=20,
    stable_window_seconds=10,
    panic_window_seconds=2,
    scale_down_delay_seconds=0,
    max_scale_down_rate=1000,
    stale_after_seconds=STALE_AFTER,
)
NOW = 100.0


def sample(now: float, blocks: int, **fields: Any) -> demand.Sample:
    used = min(blocks, CAPACITY)
    base = demand.Sample(
        time=now,
        num_gpu_blocks=CAPACITY + 1,
        num_used_blocks=used,
        num_waiting_blocks=blocks - used,
    )
    return dataclasses.replace(base, **fields)


def pod(name: str, now: float, blocks: int, **fields: Any) -> demand.Observation:
    return demand.Observation(name, demand.Phase.READY, sample(now, blocks, **fields))


def missing(name: str) -> demand.Observation:
    return demand.Observation(name, demand.Phase.READY, None)


def stale(name: str, now: float) -> demand.Observation:
    return pod(name, now - STALE_AFTER - 0.5, 0)


def unpolled(name: str) -> demand.Observation:
    return demand.Observation(name, demand.Phase.READY, None, polled=False)


NO_DATA, STALE_DATA = decision.Reason.HOLD_NO_DATA, decision.Reason.HOLD_STALE_DATA
HOLDS = [
    pytest.param([missing(f"p{i}") for i in range(4)], NO_DATA, "no report", id="all-missing"),
    pytest.param(
        [stale(f"p{i}", NOW) for i in range(4)],
        STALE_DATA,
        "stale: sampled 5.5 s ago",
        id="all-stale",
    ),
    pytest.param(
        [pod(f"p{i}", NOW, 0, healthy=False) for i in range(4)],
        STALE_DATA,
        "engine unhealthy",
        id="all-unhealthy",
    ),
    pytest.param(
        [pod("p0", NOW, 0, num_gpu_blocks=1)],
        STALE_DATA,
        "num_gpu_blocks = 1, must be at least 2",
        id="invalid",
    ),
    pytest.param([missing("p0"), stale("p1", NOW)], STALE_DATA, "p1: stale", id="missing-stale"),
    pytest.param(
        [unpolled("p0"), unpolled("p1")], NO_DATA, "no ready pod was polled", id="unpolled"
    ),
    pytest.param([], NO_DATA, "no ready pod", id="no-pods"),
    pytest.param(
        [demand.Observation("t0", demand.Phase.TERMINATING, sample(NOW, 0))],
        decision.Reason.HOLD_NO_DATA,
        "no ready pod",
        id="only-terminating",
    ),
]


@pytest.mark.parametrize(("observations", "reason", "says"), HOLDS)
def test_no_fresh_report_holds_the_size_and_says_why(
    observations: list[demand.Observation], reason: decision.Reason, says: str
) -> None:
    result = decision.Autoscaler(CONFIG).step(NOW, observations, 4)
    assert (result.desired, result.mode, result.reason) == (4, decision.Mode.HOLD, reason)
    assert says in result.message


def test_bounds_apply_even_without_data() -> None:
    too_many = decision.Autoscaler(CONFIG).step(NOW, [missing("p0")], 30)
    assert (too_many.desired, too_many.reason) == (20, decision.Reason.LIMITED_BY_MAX)
    none = decision.Autoscaler(CONFIG).step(NOW, [], 0)
    assert (none.desired, none.reason) == (1, decision.Reason.LIMITED_BY_MIN)


def test_one_pod_without_a_report_vetoes_a_scale_down_for_as_long_as_it_lasts() -> None:
    autoscaler = decision.Autoscaler(CONFIG)
    for tick in range(50):
        now = NOW + tick
        observations = [pod("a", now, 0), pod("b", now, 0), pod("c", now, 0), missing("d")]
        result = autoscaler.step(now, observations, 4)
        assert (result.desired, result.reason) == (4, decision.Reason.HOLD_MISSING_DATA)
        assert result.unreported == ("d",)
        assert "d: no report" in result.message


def test_pods_without_reports_count_as_full_for_scale_up() -> None:
    # 2 x 0.7 fresh + 2 x 1.0 for the unreported = 3.4 / 0.7 = 4.86 -> 5.
    observations = [pod("a", NOW, 70), pod("b", NOW, 70), missing("c"), stale("d", NOW)]
    result = decision.Autoscaler(CONFIG).step(NOW, observations, 4)
    assert (result.desired, result.reason) == (5, decision.Reason.SCALE_UP_PRESSURE)


def test_pods_without_reports_count_at_least_as_loaded_as_the_others() -> None:
    # The fresh pod has a queue three caches deep: the silent one is assumed no better off.
    observations = [pod("a", NOW, 300), missing("b")]
    measured = demand.measure(NOW, observations, CONFIG)
    assert measured.demand == pytest.approx(6.0)


def test_unpolled_pods_count_at_the_fresh_mean_and_do_not_veto() -> None:
    # Sampling: only two of four were asked, both nearly idle; the other two are assumed alike.
    observations = [pod("a", NOW, 10), pod("b", NOW, 10), unpolled("c"), unpolled("d")]
    result = decision.Autoscaler(CONFIG).step(NOW, observations, 4)
    assert (result.desired, result.reason) == (1, decision.Reason.SCALE_DOWN)
    assert result.unreported == ()


@pytest.mark.parametrize(
    ("age", "freshness"),
    [
        (0.0, demand.Freshness.FRESH),
        (STALE_AFTER, demand.Freshness.FRESH),
        (STALE_AFTER + 0.1, demand.Freshness.STALE),
        (-1.0, demand.Freshness.FRESH),  # a little clock skew
        (-STALE_AFTER - 0.1, demand.Freshness.INVALID),  # from the future: not believable
    ],
)
def test_staleness_is_judged_on_the_decision_clock(age: float, freshness: demand.Freshness) -> None:
    reading = demand.read(NOW, pod("a", NOW - age, 50), CONFIG)
    assert reading.freshness is freshness


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"num_gpu_blocks": 0}, "num_gpu_blocks = 0, must be at least 2 (one block is vLLM's"),
        ({"num_gpu_blocks": 1}, "num_gpu_blocks = 1, must be at least 2"),
        ({"num_used_blocks": 101}, "num_used_blocks = 101, must be at most num_gpu_blocks - 1"),
        ({"num_used_blocks": -3}, "num_used_blocks = -3, must be at least 0"),
        ({"block_size": 0}, "block_size = 0, must be at least 1"),
        ({"num_requests_waiting": 2.5}, "num_requests_waiting = 2.5, must be an integer"),
        ({"num_waiting_tokens": -1}, "num_waiting_tokens = -1, must be at least 0"),
        (
            {"preemptions_per_second": float("nan")},
            "preemptions_per_second = nan, must be a finite number, at least 0",
        ),
        (
            {"preemptions_per_second": -1.0},
            "preemptions_per_second = -1.0, must be a finite number, at least 0",
        ),
        ({"time": float("inf")}, "time = inf, must be a finite number"),
        ({"healthy": "yes"}, "healthy = 'yes', must be true or false"),
    ],
)
def test_impossible_samples_are_named_and_never_used(fields: dict[str, Any], problem: str) -> None:
    bad = sample(NOW, 50, **fields)
    found = demand.problem(bad)
    assert found is not None
    assert found.startswith(problem)
    reading = demand.read(NOW, demand.Observation("a", demand.Phase.READY, bad), CONFIG)
    assert reading.freshness is demand.Freshness.INVALID
    assert reading.occupancy is None


def test_after_an_outage_a_scale_down_still_waits_a_full_delay() -> None:
    delay = 30
    config = dataclasses.replace(CONFIG, scale_down_delay_seconds=delay)
    autoscaler = decision.Autoscaler(config)
    desired = []
    outage = range(10)
    for tick in range(10 + delay + 1):
        now = NOW + tick
        names = ("a", "b", "c", "d")
        observations = (
            [missing(name) for name in names]
            if tick in outage
            else [pod(name, now, 5) for name in names]
        )
        desired.append(autoscaler.step(now, observations, 4).desired)
    last_hold = outage[-1]
    assert desired[: last_hold + delay] == [4] * (last_hold + delay)
    assert desired[last_hold + delay] == 1


def test_garbage_inputs_get_clear_errors() -> None:
    autoscaler = decision.Autoscaler(CONFIG)
    with pytest.raises(ValueError, match=r"pod 'x': phase = 'running', must be one of ready"):
        autoscaler.step(NOW, [demand.Observation("x", "running")], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"now = nan, must be a finite number"):
        autoscaler.step(float("nan"), [], 1)
    with pytest.raises(ValueError, match=r"current = -1, must be an integer, at least 0"):
        autoscaler.step(NOW, [], -1)
