"""Manual replicas go through the decision: the count a person set, measured, learned from never."""

from __future__ import annotations

import pytest

from kvscale.scaling import decision, demand, settings

CONFIG = settings.ScalingSettings(
    max_replicas=4, stable_window_seconds=10, panic_window_seconds=2, scale_down_delay_seconds=0
)


def full(name: str, now: float) -> demand.Observation:
    sample = demand.Sample(time=now, num_gpu_blocks=101, num_used_blocks=100)
    return demand.Observation(name, demand.Phase.READY, sample)


def test_the_decision_is_the_count_unclamped_with_this_ticks_readings() -> None:
    stale = demand.Observation(
        "b", demand.Phase.READY, demand.Sample(time=0.0, num_gpu_blocks=101, num_used_blocks=1)
    )
    made = decision.Autoscaler(CONFIG).step(100.0, [full("a", 100.0), stale], 2, manual=9)
    assert (made.desired, made.mode, made.reason) == (
        9,
        decision.Mode.MANUAL,
        decision.Reason.MANUAL,
    )
    assert made.message == "spec.replicas is 9"
    assert (made.ready, made.occupancy) == (2, 1.0)
    assert [(reading.pod, reading.freshness) for reading in made.missing] == [
        ("b", demand.Freshness.STALE)
    ]
    assert made.unreported == ("b",)


def test_manual_ticks_leave_the_windows_empty() -> None:
    autoscaler = decision.Autoscaler(CONFIG)
    for now in range(100, 110):
        autoscaler.step(float(now), [full("a", float(now))], 1, manual=1)
    fresh = decision.Autoscaler(CONFIG)
    observed = [full("a", 110.0)]
    assert autoscaler.step(110.0, observed, 1) == fresh.step(110.0, observed, 1)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_manual_count_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match="manual = "):
        decision.Autoscaler(CONFIG).step(1.0, [], 1, manual=bad)  # type: ignore[arg-type]
