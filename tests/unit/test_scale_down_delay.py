"""Scale-down waits for the delay: only to the most wanted within `scale_down_delay_seconds`.

The stable and panic windows are 1 s here, so the count wanted follows the load at once and
what holds a scale-down is the delay alone. Pods have 100 usable blocks; the deployment's
demand is given in blocks and spread over its pods.
"""

from __future__ import annotations

import dataclasses
import math

from tests.support import fleet

from kvscale.scaling import decision, settings

CAPACITY = fleet.CAPACITY
DELAY = 30
CONFIG = settings.ScalingSettings(
    max_replicas=20,
    stable_window_seconds=1,
    panic_window_seconds=1,
    scale_down_delay_seconds=DELAY,
    max_scale_down_rate=1000,
)


def wants(total_blocks: int) -> int:
    """What the demand alone asks for: ceil(demand in pods' worth / target)."""
    return math.ceil(total_blocks / CAPACITY / CONFIG.target_occupancy)


def run(
    autoscaler: decision.Autoscaler, current: int, load: list[int], start: int = 0
) -> list[decision.Decision]:
    """One tick per second; every pod asked for is ready at the next tick."""
    decisions = []
    for offset, total_blocks in enumerate(load):
        result = autoscaler.step(
            float(start + offset), fleet.spread(start + offset, total_blocks, current), current
        )
        decisions.append(result)
        current = result.desired
    return decisions


HIGH, LOW = 400, 100  # 4.0 and 1.0 pods' worth: 6 pods wanted, then 2


def test_scale_down_comes_exactly_one_delay_after_the_last_tick_that_wanted_more() -> None:
    high_ticks = 50
    decisions = run(decision.Autoscaler(CONFIG), wants(HIGH), [HIGH] * high_ticks + [LOW] * 40)
    last_high = high_ticks - 1
    desired = [d.desired for d in decisions]
    assert desired[: last_high + DELAY] == [wants(HIGH)] * (last_high + DELAY)
    assert desired[last_high + DELAY] == wants(LOW)
    held = decisions[high_ticks : last_high + DELAY]
    assert {d.reason for d in held} == {decision.Reason.SCALE_DOWN_DELAYED}
    assert decisions[last_high + DELAY].reason is decision.Reason.SCALE_DOWN


def test_scale_down_goes_to_the_most_wanted_within_the_delay_not_to_current() -> None:
    # Start at 10 with load that wants 6, then load that wants 2: 10 holds one delay after the
    # first tick (the seed), 6 holds one delay after the last tick that wanted 6.
    decisions = run(decision.Autoscaler(CONFIG), 10, [HIGH] * 40 + [LOW] * 40)
    desired = [d.desired for d in decisions]
    assert desired[:DELAY] == [10] * DELAY
    assert desired[DELAY : 39 + DELAY] == [wants(HIGH)] * (39 - 0)
    assert desired[39 + DELAY :] == [wants(LOW)] * (80 - 39 - DELAY)


def test_a_fresh_autoscaler_does_not_scale_down_before_one_delay() -> None:
    # An operator restart forgets the history; the first tick's size stands in for it.
    decisions = run(decision.Autoscaler(CONFIG), 8, [LOW] * (DELAY + 1))
    assert [d.desired for d in decisions] == [8] * DELAY + [wants(LOW)]


def test_no_delay_scales_down_at_the_first_low_tick() -> None:
    config = settings.ScalingSettings(
        max_replicas=20,
        stable_window_seconds=1,
        panic_window_seconds=1,
        scale_down_delay_seconds=0,
        max_scale_down_rate=1000,
    )
    decisions = run(decision.Autoscaler(config), wants(HIGH), [HIGH] * 5 + [LOW])
    assert [d.desired for d in decisions] == [wants(HIGH)] * 5 + [wants(LOW)]


def test_a_brief_lull_inside_the_delay_never_scales_down() -> None:
    # Load dips for 20 s, shorter than the delay, and comes back: the size never moves.
    load = [HIGH] * 10 + [LOW] * 20 + [HIGH] * 10 + [LOW] * 20 + [HIGH] * 10
    decisions = run(decision.Autoscaler(CONFIG), wants(HIGH), load)
    assert {d.desired for d in decisions} == {wants(HIGH)}


def test_a_long_scale_down_waits_one_delay_then_goes_at_the_rate() -> None:
    # 40 pods, load for 2: the delay is paid once; then each tick halves (maxScaleDownRate 2)
    # instead of paying the delay again at every step.
    config = dataclasses.replace(CONFIG, max_replicas=40, max_scale_down_rate=2)
    decisions = run(decision.Autoscaler(config), 40, [LOW] * (DELAY + 6))
    desired = [d.desired for d in decisions]
    assert desired[:DELAY] == [40] * DELAY
    assert desired[DELAY:] == [20, 10, 5, 2, 2, 2]
    assert [d.reason for d in decisions[DELAY : DELAY + 3]] == [decision.Reason.LIMITED_BY_RATE] * 3
