"""Every policy's target from one load test, and what `--calibrate` sets on kvscale."""

from __future__ import annotations

import pytest

from kvscale.simulate import calibrate


def reading(rate: float, tokens: float, inflight: float, demand: float) -> calibrate.Reading:
    return calibrate.Reading(
        rate_per_s=rate,
        attainment=1.0,
        tokens_per_s=tokens,
        inflight=inflight,
        occupancy=demand,
        demand=demand,
        waiting=0.0,
    )


FOUND = calibrate.Capacity(
    at_capacity=reading(18.78, 24074.0, 115.6, 0.329),
    at_target=reading(13.15, 17409.0, 37.5, 0.1043),
    utilization=0.7,
)


def test_every_target_from_the_load_test() -> None:
    assert calibrate.targets(FOUND) == {
        "targetOccupancy": "0.1043",  # the KV demand read at 70% load
        "targetTokensPerSecond": "16852",  # 70% of the tokens/s at capacity
        "hpa.maxTokensPerSecond": "24074",
        "hpa.targetUtilization": "70",
        "knative.target": "37.5",  # in flight read at 70% load
        "dynamo.targetKvLoad": "0.1043",  # KV demand read at 70% load
    }


def test_a_sweep_moves_only_the_throughput_targets() -> None:
    swept = calibrate.targets(FOUND, utilization=0.9)
    assert swept["targetTokensPerSecond"] == "21667"
    assert swept["hpa.targetUtilization"] == "90"
    assert swept["targetOccupancy"] == "0.1043"
    assert swept["knative.target"] == "37.5"


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_a_share_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="utilization"):
        calibrate.targets(FOUND, utilization=bad)


def test_kvscale_gets_the_throughput_target_and_keeps_its_default_occupancy_target() -> None:
    assert calibrate.recommended(FOUND) == {"targetTokensPerSecond": "16852"}
    assert calibrate.baseline_targets(FOUND) == {
        "hpa.maxTokensPerSecond": "24074",
        "hpa.targetUtilization": "70",
        "knative.target": "37.5",
        "dynamo.targetKvLoad": "0.1043",
    }


def test_a_load_test_that_never_meets_the_slo_says_so() -> None:
    assert FOUND.reachable
    missed = calibrate.Capacity(
        at_capacity=calibrate.Reading(0.25, 0.77, 2750.0, 0.3, 0.01, 0.01, 0.0),
        at_target=reading(0.17, 1925.0, 0.2, 0.008),
        utilization=0.7,
    )
    assert not missed.reachable
