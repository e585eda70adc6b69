"""The oracle's plan and bound by hand, and the property that makes the bound one: on random
small traces it is never above the GPU-hours of a policy that meets the SLO in the same run."""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvscale import trace
from kvscale.simulate import calibrate, fleet, latency, oracle, simulation, table
from kvscale.simulate import policy as policy_
from kvscale.twin import profile


def test_plan_needs_per_bucket_at_capacity() -> None:
    reqs = [
        trace.TraceRequest(0.0, 500, 100),  # bucket 0: 600 tokens
        trace.TraceRequest(30.0, 9000, 100),  # cut to 8092 + 100 = 8192 tokens
        trace.TraceRequest(61.0, 100, 100),  # bucket 1: 200 tokens
        trace.TraceRequest(185.0, 1000, 200),  # bucket 3: 1200 tokens
    ]
    made = oracle.plan(
        reqs, tokens_per_second=50.0, max_model_len=8192, min_replicas=1, max_replicas=3
    )
    # 50 tok/s x 60 s = 3000 tokens per pod per bucket.
    # bucket 0: 8792 -> 3 pods; 1: 200 -> 1; 2: nothing -> min; 3: 1200 -> 1.
    assert made.needs == (3, 1, 1, 1)
    assert made.peak == 3
    assert made.need(-5.0) == 1
    assert made.need(1e6) == 1
    capped = oracle.plan(
        reqs, tokens_per_second=1.0, max_model_len=8192, min_replicas=2, max_replicas=4
    )
    assert capped.needs == (4, 4, 2, 4)


def test_the_oracle_asks_one_startup_delay_ahead_and_keeps_the_current_bucket() -> None:
    made = oracle.Oracle(oracle.Plan(60.0, (1, 1, 4, 1, 1), 1), startup_delay_s=60.0)
    assert [made.desired(t) for t in (0.0, 59.0, 60.0, 119.0, 120.0, 179.0, 180.0)] == [
        1,
        1,
        4,  # bucket 2 needs 4 from t = 120: asked at t = 60
        4,
        4,
        4,
        1,
    ]
    assert oracle.StaticPeak(made.plan).decide(policy_.View(0.0, 1, ())).desired == 4


def test_bad_oracle_settings_are_named() -> None:
    with pytest.raises(ValueError, match="tokensPerSecond"):
        oracle.plan([], tokens_per_second=0.0, max_model_len=10, min_replicas=1, max_replicas=2)
    with pytest.raises(ValueError, match=r"oracle\.lead: unknown key"):
        oracle.build(
            "oracle",
            [],
            tokens_per_second=1.0,
            max_model_len=10,
            min_replicas=1,
            max_replicas=2,
            startup_delay_s=60.0,
            overrides={"lead": "3"},
        )


# An L4 serves a few requests per second of this mix, so small traces need several pods.
FLEET = fleet.Settings(profile.get("l4", "llama-3-8b"), startup_delay_s=30.0)
SLO = latency.Slo()
MIX = [trace.TraceRequest(0.0, 200 + 97 * (i % 23), 20 + 13 * (i % 11)) for i in range(400)]


@functools.cache
def capacity_tokens_per_second() -> float:
    found = calibrate.capacity(MIX, FLEET, SLO, num_requests=200, iterations=7)
    return found.at_capacity.tokens_per_s


@functools.cache
def peak_tokens_per_second() -> float:
    return calibrate.peak(MIX, FLEET, SLO, num_requests=200)


@st.composite
def small_traces(draw: st.DrawFn) -> list[trace.TraceRequest]:
    count = draw(st.integers(20, 400))
    duration = draw(st.floats(60.0, 300.0))
    arrivals = sorted(draw(st.lists(st.floats(0.0, duration), min_size=count, max_size=count)))
    picks = draw(st.lists(st.integers(0, len(MIX) - 1), min_size=count, max_size=count))
    return [
        trace.TraceRequest(at, MIX[i].prompt_tokens, MIX[i].output_tokens)
        for at, i in zip(arrivals, picks, strict=True)
    ]


def test_bound_is_the_larger_of_the_floor_and_the_work_at_capacity() -> None:
    reqs = [trace.TraceRequest(10.0, 500, 100), trace.TraceRequest(370.0, 9000, 100)]
    # work: 600 + 8192 tokens; at 1 tok/s that is 8792 pod-seconds, over the 360 s floor.
    assert oracle.bound(
        reqs, tokens_per_second=1.0, max_model_len=8192, min_replicas=1
    ) == pytest.approx(8792 / 3600)
    # at 100 tok/s the work is 87.92 pod-seconds: 2 pods x 360 s of floor win, x 4 GPUs.
    assert oracle.bound(
        reqs, tokens_per_second=100.0, max_model_len=8192, min_replicas=2, gpus_per_pod=4
    ) == pytest.approx(4 * 720 / 3600)
    assert oracle.bound([], tokens_per_second=1.0, max_model_len=10, min_replicas=1) == 0.0
    with pytest.raises(ValueError, match="gpus_per_pod"):
        oracle.bound(reqs, tokens_per_second=1.0, max_model_len=10, min_replicas=1, gpus_per_pod=0)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_traces())
def test_the_bound_is_never_above_a_baseline_that_meets_the_slo(
    reqs: list[trace.TraceRequest],
) -> None:
    run = simulation.Settings(fleet=FLEET, min_replicas=1, max_replicas=4, slo=SLO)
    tps = capacity_tokens_per_second()
    low = oracle.bound(
        reqs, tokens_per_second=peak_tokens_per_second(), max_model_len=8192, min_replicas=1
    )
    made = oracle.plan(
        reqs, tokens_per_second=tps, max_model_len=8192, min_replicas=1, max_replicas=4
    )
    others: list[policy_.Policy] = [
        policy_.Static(),
        oracle.StaticPeak(made),
        oracle.Oracle(made, FLEET.startup_delay_s),
        *(policy_.build(name, min_replicas=1, max_replicas=4) for name in policy_.NAMES),
    ]
    for other in others:
        result = simulation.simulate(reqs, run, other)
        if result.latency.slo_attainment >= 0.99:
            assert low <= result.gpu_hours + 1e-9, (other.name, low, result.gpu_hours)
            assert table.over_oracle(result, low) >= 1.0 - 1e-9


def test_a_table_over_the_bound_says_so_and_divides_by_it() -> None:
    run = simulation.Settings(fleet=FLEET, min_replicas=1, max_replicas=1, slo=SLO)
    result = simulation.simulate(MIX[:5], run, policy_.Static())
    text = table.render([result], markdown=True, bound=result.gpu_hours / 2)
    assert "GPU-h / bound" in text.splitlines()[0]
    assert "| 2.00x |" in text.splitlines()[2]
    assert "GPU-h / oracle" in table.render([result]).splitlines()[0]
