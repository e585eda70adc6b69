"""Token throughput beside KV occupancy: a pod is as loaded as the higher of the two says.

Pods here have 100 usable KV blocks, a throughput target of 1,000 tokens/s and the default
occupancy target 0.7, so a pod at 1,000 tokens/s reads as a pod at 0.7.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvscale.scaling import decision, demand, settings

CAPACITY = 100
TOKENS_TARGET = 1000.0
CONFIG = settings.ScalingSettings(
    max_replicas=50, scale_down_delay_seconds=0, target_tokens_per_second=TOKENS_TARGET
)
KV_ONLY = settings.ScalingSettings(max_replicas=50, scale_down_delay_seconds=0)
TARGET = CONFIG.target_occupancy


def sample(blocks: int, tokens_per_second: float | None, now: float = 0.0) -> demand.Sample:
    return demand.Sample(
        time=now,
        num_gpu_blocks=CAPACITY + 1,
        num_used_blocks=blocks,
        tokens_per_second=tokens_per_second,
    )


def pods(
    count: int, blocks: int, tokens_per_second: float | None, now: float = 0.0
) -> list[demand.Observation]:
    return [
        demand.Observation(f"p{i}", demand.Phase.READY, sample(blocks, tokens_per_second, now))
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("config", "blocks", "tokens", "load"),
    [
        pytest.param(KV_ONLY, 20, 5000.0, 0.2, id="no-target-kv-only"),
        pytest.param(CONFIG, 20, None, 0.2, id="no-rate-yet-kv-only"),
        pytest.param(CONFIG, 20, 1000.0, 0.7, id="at-throughput-target-reads-as-target"),
        pytest.param(CONFIG, 20, 1500.0, 1.05, id="throughput-above"),
        pytest.param(CONFIG, 90, 1000.0, 0.9, id="kv-higher-wins"),
        pytest.param(CONFIG, 0, 0.0, 0.0, id="idle"),
    ],
)
def test_load_is_the_higher_of_occupancy_and_throughput(
    config: settings.ScalingSettings, blocks: int, tokens: float | None, load: float
) -> None:
    assert demand.load(sample(blocks, tokens), config) == pytest.approx(load)
    assert demand.occupancy(sample(blocks, tokens)) == pytest.approx(blocks / CAPACITY)


def test_throughput_scales_up_while_the_kv_cache_is_nearly_empty() -> None:
    # Four pods at 10% KV but 1.5x their token target: 4 x 1.05 / 0.7 = 6 pods.
    result = decision.Autoscaler(CONFIG).step(0.0, pods(4, 10, 1500.0), 4)
    assert (result.desired, result.reason) == (6, decision.Reason.SCALE_UP_THROUGHPUT)
    assert result.occupancy == pytest.approx(0.1)  # status still shows the KV cache
    # The same pods without a throughput target: the KV cache alone says scale down.
    kv_only = decision.Autoscaler(KV_ONLY).step(0.0, pods(4, 10, 1500.0), 4)
    assert kv_only.wanted < 4


def test_occupancy_is_named_when_it_alone_would_scale_up() -> None:
    result = decision.Autoscaler(CONFIG).step(0.0, pods(2, 90, 1500.0), 2)
    assert (result.desired, result.reason) == (3, decision.Reason.SCALE_UP_OCCUPANCY)


def test_pressure_is_named_when_neither_signal_would_scale_up() -> None:
    observations = [
        demand.Observation(
            f"p{i}",
            demand.Phase.READY,
            demand.Sample(
                time=0.0,
                num_gpu_blocks=CAPACITY + 1,
                num_used_blocks=60,
                num_requests_running=6,
                num_requests_waiting=5,
                num_waiting_blocks=0,
                tokens_per_second=900.0,
            ),
        )
        for i in range(2)
    ]
    result = decision.Autoscaler(CONFIG).step(0.0, observations, 2)
    assert (result.desired, result.reason) == (3, decision.Reason.SCALE_UP_PRESSURE)


def test_throughput_within_the_band_holds() -> None:
    result = decision.Autoscaler(CONFIG).step(0.0, pods(3, 10, 1050.0), 3)
    assert (result.desired, result.reason) == (3, decision.Reason.WITHIN_TOLERANCE)


def test_the_least_loaded_pod_by_throughput_goes_first() -> None:
    observations = [
        demand.Observation("busy", demand.Phase.READY, sample(10, 900.0)),
        demand.Observation("quiet", demand.Phase.READY, sample(30, 100.0)),
    ]
    signal = demand.measure(0.0, observations, CONFIG)
    assert signal.removal_order == ("quiet", "busy")


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_an_impossible_token_rate_makes_the_report_invalid(bad: float) -> None:
    reading = demand.read(0.0, demand.Observation("a", demand.Phase.READY, sample(10, bad)), CONFIG)
    assert reading.freshness is demand.Freshness.INVALID
    assert "tokens_per_second" in reading.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"targetTokensPerSecond": 2500}, 2500.0),
        ({"targetTokensPerSecond": None}, None),
        ({}, None),
    ],
)
def test_validate_accepts_a_throughput_target(raw: dict[str, object], expected: float) -> None:
    result = settings.validate(raw)
    assert isinstance(result, settings.ScalingSettings)
    assert result.target_tokens_per_second == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "targetTokensPerSecond = 0, must be greater than 0.0"),
        (-5.0, "targetTokensPerSecond = -5.0, must be greater than 0.0"),
        ("fast", "targetTokensPerSecond = 'fast', must be a number"),
        (True, "targetTokensPerSecond = True, must be a number"),
    ],
)
def test_validate_names_a_bad_throughput_target(value: object, message: str) -> None:
    assert settings.validate({"targetTokensPerSecond": value}) == [message]


@given(
    blocks=st.integers(0, CAPACITY),
    tokens=st.floats(0, 1e6, allow_nan=False),
    more=st.floats(0, 1e6, allow_nan=False),
)
def test_load_never_reads_below_occupancy_and_grows_with_throughput(
    blocks: int, tokens: float, more: float
) -> None:
    low = demand.load(sample(blocks, tokens), CONFIG)
    high = demand.load(sample(blocks, tokens + more), CONFIG)
    assert low >= demand.occupancy(sample(blocks, tokens))
    assert high >= low
