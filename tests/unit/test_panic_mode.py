"""Panic mode: the short window scales up fast and nothing scales down until it calms.

Stable window 10 s, panic window 2 s, threshold 2, no scale-down delay (so what holds a
scale-down here is panic alone). Pods have 100 usable blocks; every pod asked for is ready at
the next tick.
"""

from __future__ import annotations

import math

import pytest
from tests.support import fleet

from kvscale.scaling import decision, demand, settings

CAPACITY = fleet.CAPACITY
STABLE, PANIC = 10, 2
CONFIG = settings.ScalingSettings(
    max_replicas=100,
    stable_window_seconds=STABLE,
    panic_window_seconds=PANIC,
    panic_threshold=2.0,
    scale_down_delay_seconds=0,
    max_scale_down_rate=1000,
)
TARGET = CONFIG.target_occupancy


def run(current: int, load: list[int]) -> list[decision.Decision]:
    autoscaler = decision.Autoscaler(CONFIG)
    decisions = []
    for tick, total_blocks in enumerate(load):
        result = autoscaler.step(float(tick), fleet.spread(tick, total_blocks, current), current)
        decisions.append(result)
        current = result.desired
    return decisions


CALM, BURST, QUIET = 130, 600, 20  # blocks: 2 pods at 0.65 each; 3 caches deep; nearly idle


def test_a_burst_enters_panic_and_scales_up_at_once() -> None:
    decisions = run(2, [CALM] * 10 + [BURST])
    assert {d.mode for d in decisions[:10]} == {decision.Mode.NORMAL}
    burst = decisions[10]
    # The oracle: the panic window holds the last two ticks' demand, and it triggers panic.
    panic_demand = (CALM + BURST) / 2 / CAPACITY
    assert panic_demand / TARGET >= CONFIG.panic_threshold * 2
    assert burst.mode is decision.Mode.PANIC
    # The scale-up follows this tick's demand (more than the panic window's average), held to
    # the scale-up rate: ceil(4 x 2 ready) = 8 < ceil(6.0 / 0.7) = 9.
    assert burst.wanted == math.ceil(BURST / CAPACITY / TARGET) == 9
    assert math.ceil(panic_demand / TARGET) < burst.wanted
    assert (burst.reason, burst.desired) == (decision.Reason.LIMITED_BY_RATE, 8)


def test_panic_scales_up_from_the_panic_window_when_it_wants_more_than_this_tick() -> None:
    # A one-tick burst: at the next tick demand is back to calm, but the panic window still
    # holds the burst, so panic keeps the pods it asked for (and here asks for no fewer).
    decisions = run(2, [CALM] * 10 + [BURST, CALM])
    after = decisions[11]
    assert after.mode is decision.Mode.PANIC
    assert after.desired == decisions[10].desired
    assert after.reason in (decision.Reason.HOLD_PANIC, decision.Reason.HOLD_PODS_STARTING)


def test_no_scale_down_while_panicking_and_panic_ends_a_stable_window_after_the_trigger() -> None:
    decisions = run(2, [CALM] * 10 + [BURST] + [QUIET] * 20)
    burst_tick = 10
    peak = decisions[burst_tick].desired
    panicking = decisions[burst_tick : burst_tick + STABLE]
    assert {d.mode for d in panicking} == {decision.Mode.PANIC}
    assert [d.desired for d in panicking] == [peak] * STABLE
    assert {d.reason for d in panicking[1:]} == {decision.Reason.HOLD_PANIC}
    calm = decisions[burst_tick + STABLE]
    assert calm.mode is decision.Mode.NORMAL
    assert calm.reason is decision.Reason.SCALE_DOWN
    assert calm.desired == math.ceil(QUIET / CAPACITY / TARGET)


def test_a_new_trigger_extends_panic() -> None:
    # A second burst at 15 s, big enough for the six pods by then, restarts the panic clock;
    # so does every later tick whose panic window still holds it.
    second = 6 * 1500
    decisions = run(2, [CALM] * 10 + [BURST] + [QUIET] * 4 + [second] + [QUIET] * 20)
    triggers = [
        tick
        for tick, d in enumerate(decisions)
        if d.panic_occupancy is not None
        and d.panic_occupancy / TARGET >= CONFIG.panic_threshold * (1 - 1e-9)
    ]
    last = triggers[-1]
    assert last >= 15  # the first burst alone would have ended panic at 20 s
    assert {d.mode for d in decisions[10 : last + STABLE]} == {decision.Mode.PANIC}
    assert decisions[last + STABLE].mode is decision.Mode.NORMAL
    desired = [d.desired for d in decisions[10 : last + STABLE]]
    assert desired == sorted(desired)  # never down while panicking


@pytest.mark.parametrize(
    ("blocks_per_pod", "mode"),
    [
        # 2 pods x 1.40 = 2.8 / 0.7 = 4 pods = exactly 2x the 2 ready: panic.
        (140, decision.Mode.PANIC),
        # 2 x 1.39 / 0.7 = 3.97 pods: under 2x, normal (it still scales up, to 4).
        (139, decision.Mode.NORMAL),
    ],
)
def test_panic_threshold_is_inclusive(blocks_per_pod: int, mode: decision.Mode) -> None:
    result = decision.Autoscaler(CONFIG).step(0.0, fleet.spread(0, 2 * blocks_per_pod, 2), 2)
    assert result.mode is mode
    assert result.desired == 4


def test_panic_compares_with_ready_pods_and_keeps_the_ones_starting() -> None:
    # 2 ready at 1.4 (4 pods wanted, 2x the ready: panic) while 4 more are starting: the six
    # asked for already cover it; panic neither adds more nor takes starting ones away.
    observations = fleet.spread(0, 280, 2) + [
        demand.Observation(f"s{index}", demand.Phase.STARTING) for index in range(4)
    ]
    result = decision.Autoscaler(CONFIG).step(0.0, observations, 6)
    assert result.mode is decision.Mode.PANIC
    assert (result.desired, result.reason) == (6, decision.Reason.HOLD_PODS_STARTING)
