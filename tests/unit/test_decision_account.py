"""A decision's steps are values: what each step found, readable without parsing its message."""

from __future__ import annotations

from kvscale.scaling import account, decision, demand, settings

CONFIG = settings.ScalingSettings(
    max_replicas=3, stable_window_seconds=10, panic_window_seconds=2, scale_down_delay_seconds=5
)


def ready(name: str, now: float, used: int, fresh: bool = True) -> demand.Observation:
    sample = demand.Sample(
        time=now if fresh else now - 60, num_gpu_blocks=101, num_used_blocks=used
    )
    return demand.Observation(name, demand.Phase.READY, sample)


def test_a_delayed_scale_down_records_its_level_and_the_delay() -> None:
    autoscaler = decision.Autoscaler(CONFIG)
    made = autoscaler.step(100.0, [ready("a", 100.0, 10), ready("b", 100.0, 10)], 2)
    assert made.reason is decision.Reason.SCALE_DOWN_DELAYED
    level = account.Level(per_pod=0.1, target=0.7, ready=2, current=2, pressured=0)
    assert made.steps == (account.Stable(level, wanted=1), account.Delayed(held=2, delay_seconds=5))
    assert made.message == "; ".join(step.words() for step in made.steps)


def test_a_held_tick_records_why_and_the_pods_it_misses() -> None:
    made = decision.Autoscaler(CONFIG).step(100.0, [ready("a", 100.0, 10, fresh=False)], 1)
    (held,) = made.steps
    assert isinstance(held, account.Held)
    assert (held.gap, held.current) == (account.Gap.NO_FRESH_REPORT, 1)
    assert [(reading.pod, reading.freshness) for reading in held.missing] == [
        ("a", demand.Freshness.STALE)
    ]
    assert held.missing == made.missing


def test_bounds_are_steps_too() -> None:
    full = [ready(name, 100.0, 100) for name in "abc"]
    made = decision.Autoscaler(CONFIG).step(100.0, full, 3)
    assert made.reason is decision.Reason.LIMITED_BY_MAX
    assert made.steps[-1] == account.Lowered(max_replicas=3)
    assert made.message.endswith("lowered to 3 by maxReplicas")


def test_an_idle_level_left_a_float_residue_below_zero_reads_zero() -> None:
    # An idle fleet's stable window, a running sum of zeros after evictions: -1e-17 per pod.
    level = account.Level(per_pod=-1e-17, target=0.7, ready=4, current=4, pressured=0)
    assert level.words() == "0.00 per ready pod vs target 0.70 (4 pods ready of 4)"
    assert [account.hundredths(v) for v in (-0.004, 0.004, -0.005001, 0.7)] == [
        "0.00",
        "0.00",
        "-0.01",
        "0.70",
    ]
