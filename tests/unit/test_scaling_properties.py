"""Properties of the decision over random settings and random pods, ticks and reports.

- bounds are always respected: max(1, minReplicas) <= desired <= maxReplicas;
- missing data never produces a scale-down;
- a decision never goes beyond the rate limits;
- constant load never flaps: over long runs of a small fleet model (pods start after a delay,
  demand is shared by the ready pods), the desired count only ever moves one way.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support import fleet

from kvscale.scaling import decision, demand
from kvscale.scaling import settings as scaling_settings

CAPACITY = fleet.CAPACITY


@st.composite
def configs(draw: st.DrawFn) -> scaling_settings.ScalingSettings:
    max_replicas = draw(st.integers(min_value=1, max_value=30))
    stable = draw(st.integers(min_value=1, max_value=30))
    return scaling_settings.ScalingSettings(
        min_replicas=draw(st.integers(min_value=0, max_value=max_replicas)),
        max_replicas=max_replicas,
        target_occupancy=draw(st.floats(min_value=0.2, max_value=1.0)),
        tolerance=draw(st.floats(min_value=0.0, max_value=0.3)),
        stable_window_seconds=float(stable),
        panic_window_seconds=float(draw(st.integers(min_value=1, max_value=stable))),
        panic_threshold=draw(st.floats(min_value=1.1, max_value=5.0)),
        max_scale_up_rate=draw(st.floats(min_value=1.1, max_value=10.0)),
        max_scale_down_rate=draw(st.floats(min_value=1.1, max_value=10.0)),
        scale_down_delay_seconds=float(draw(st.integers(min_value=0, max_value=40))),
    )


class Report(enum.Enum):
    """What a pod's report looks like this tick."""

    FRESH = "fresh"
    PRESSURED = "pressured"
    MISSING = "missing"
    STALE = "stale"
    UNHEALTHY = "unhealthy"
    INVALID = "invalid"
    UNPOLLED = "unpolled"


UNREPORTED = (Report.MISSING, Report.STALE, Report.UNHEALTHY, Report.INVALID)


@dataclasses.dataclass(frozen=True)
class PodSpec:
    phase: demand.Phase
    report: Report
    blocks: int  # blocks

    def observe(self, name: str, now: float, stale_after: float) -> demand.Observation:
        if self.report is Report.MISSING:
            return demand.Observation(name, self.phase, None)
        if self.report is Report.UNPOLLED:
            return demand.Observation(name, self.phase, None, polled=False)
        used = min(self.blocks, CAPACITY)
        sample = demand.Sample(
            time=now - (stale_after + 1 if self.report is Report.STALE else 0),
            num_gpu_blocks=CAPACITY + 1 if self.report is not Report.INVALID else 0,
            num_used_blocks=used,
            num_waiting_blocks=self.blocks - used,
            num_requests_waiting=6 if self.report is Report.PRESSURED else 0,
            preemptions_per_second=2.0 if self.report is Report.PRESSURED else 0.0,
            healthy=self.report is not Report.UNHEALTHY,
        )
        return demand.Observation(name, self.phase, sample)


pod_specs = st.builds(
    PodSpec,
    phase=st.sampled_from(demand.Phase),
    report=st.sampled_from(Report),
    blocks=st.integers(min_value=0, max_value=500),
)
ticks = st.lists(
    st.tuples(
        st.lists(pod_specs, max_size=12),
        st.integers(min_value=0, max_value=40),  # current
        st.integers(min_value=1, max_value=30),  # seconds to the next tick
    ),
    min_size=1,
    max_size=40,
)


def observe(pods: list[PodSpec], now: float, stale_after: float) -> list[demand.Observation]:
    return [spec.observe(f"p{index}", now, stale_after) for index, spec in enumerate(pods)]


def floor_of(config: scaling_settings.ScalingSettings) -> int:
    return max(1, config.min_replicas)


@settings(max_examples=150, deadline=None)
@given(config=configs(), steps=ticks)
def test_bounds_are_always_respected(
    config: scaling_settings.ScalingSettings, steps: list[tuple[list[PodSpec], int, int]]
) -> None:
    autoscaler, now = decision.Autoscaler(config), 0.0
    for pods, current, gap in steps:
        now += gap
        result = autoscaler.step(now, observe(pods, now, config.stale_after_seconds), current)
        assert floor_of(config) <= result.desired <= config.max_replicas, result.message


unreported_ready = st.builds(
    PodSpec,
    phase=st.just(demand.Phase.READY),
    report=st.sampled_from(UNREPORTED),
    blocks=st.integers(min_value=0, max_value=500),
)


@settings(max_examples=150, deadline=None)
@given(config=configs(), steps=ticks, silent=st.lists(unreported_ready, min_size=40, max_size=40))
def test_missing_data_never_scales_down(
    config: scaling_settings.ScalingSettings,
    steps: list[tuple[list[PodSpec], int, int]],
    silent: list[PodSpec],
) -> None:
    autoscaler, now = decision.Autoscaler(config), 0.0
    for (pods, current, gap), one_silent in zip(steps, silent, strict=False):
        now += gap
        current = min(max(current, floor_of(config)), config.max_replicas)
        observations = observe([*pods, one_silent], now, config.stale_after_seconds)
        result = autoscaler.step(now, observations, current)
        assert result.desired >= current, result.message


@settings(max_examples=150, deadline=None)
@given(config=configs(), steps=ticks)
def test_decisions_stay_within_the_rate_limits(
    config: scaling_settings.ScalingSettings, steps: list[tuple[list[PodSpec], int, int]]
) -> None:
    autoscaler, now = decision.Autoscaler(config), 0.0
    for pods, current, gap in steps:
        now += gap
        current = min(max(current, floor_of(config)), config.max_replicas)
        result = autoscaler.step(now, observe(pods, now, config.stale_after_seconds), current)
        ready = result.ready
        highest = max(current, math.ceil(config.max_scale_up_rate * ready))
        lowest = min(current, math.floor(ready / config.max_scale_down_rate))
        assert result.desired <= highest, result.message
        assert result.desired >= lowest, result.message


def simulate(
    config: scaling_settings.ScalingSettings,
    total_blocks: int,
    start: int,
    startup_ticks: int,
    num_ticks: int,
) -> list[int]:
    """A fleet under constant demand: new pods pend for `startup_ticks`, then serve.

    Scale-down removes pods still starting first, then the youngest (as a ReplicaSet would
    among equally ready pods). Returns the desired count at every tick.
    """
    autoscaler = decision.Autoscaler(config)
    ages = [startup_ticks] * start  # ticks since each pod was asked for
    current, history = start, []
    for tick in range(num_ticks):
        names = [f"p{index}" for index, age in enumerate(ages) if age >= startup_ticks]
        waiting = [
            demand.Observation(f"p{index}", demand.Phase.PENDING)
            for index, age in enumerate(ages)
            if age < startup_ticks
        ]
        result = autoscaler.step(
            float(tick), fleet.spread(tick, total_blocks, names) + waiting, current
        )
        history.append(result.desired)
        if result.desired > len(ages):
            ages += [0] * (result.desired - len(ages))
        else:
            ages = sorted(ages, reverse=True)[: result.desired]
        ages = [age + 1 for age in ages]
        current = result.desired
    return history


@settings(max_examples=80, deadline=None)
@given(
    config=configs(),
    total_blocks=st.integers(min_value=0, max_value=2500),
    start=st.integers(min_value=1, max_value=30),
    startup_ticks=st.integers(min_value=0, max_value=20),
)
def test_constant_load_never_flaps(
    config: scaling_settings.ScalingSettings, total_blocks: int, start: int, startup_ticks: int
) -> None:
    start = min(max(start, floor_of(config)), config.max_replicas)
    # Long enough to settle: each rate-limited step moves at least one pod and, going up,
    # waits for the new pods to start; the windows and the delay are paid once.
    steps = max(config.max_replicas, start)
    windows = int(config.scale_down_delay_seconds + 2 * config.stable_window_seconds)
    num_ticks = steps * (startup_ticks + 2) + windows + 30
    history = simulate(config, total_blocks, start, startup_ticks, num_ticks)
    pairs = itertools.pairwise([start, *history])
    moves = [after - before for before, after in pairs if after != before]
    assert all(move > 0 for move in moves) or all(move < 0 for move in moves), history
    # And it settles: the last stretch, longer than any window or delay, does not move.
    settled = int(config.scale_down_delay_seconds + config.stable_window_seconds) + 1
    assert len(set(history[-settled:])) == 1, history


@settings(max_examples=120, deadline=None)
@given(
    config=configs(),
    ready=st.integers(min_value=1, max_value=10),
    calm_ticks=st.integers(min_value=1, max_value=60),
    overload=st.floats(min_value=0.01, max_value=3.0),
)
def test_a_step_above_the_band_scales_up_at_the_next_tick(
    config: scaling_settings.ScalingSettings, ready: int, calm_ticks: int, overload: float
) -> None:
    # `ready` pods at the target for a while, then demand above the band by `overload` of the
    # target: whatever the windows hold, the first tick that sees the step asks for more pods
    # (unless the fleet is already at maxReplicas).
    ready = max(ready, floor_of(config))
    if ready >= config.max_replicas:
        ready = config.max_replicas
    target_blocks = config.target_occupancy * CAPACITY
    calm = math.floor(ready * target_blocks)  # at or just under the target
    stepped = math.ceil(ready * target_blocks * (1 + config.tolerance) * (1 + overload)) + 1
    names = [f"p{index}" for index in range(ready)]
    autoscaler = decision.Autoscaler(config)
    for tick in range(calm_ticks):
        calm_result = autoscaler.step(float(tick), fleet.spread(tick, calm, names), ready)
        assert calm_result.desired == ready, calm_result.message
    result = autoscaler.step(float(calm_ticks), fleet.spread(calm_ticks, stepped, names), ready)
    if ready < config.max_replicas:
        assert result.desired > ready, result.message
    else:
        assert result.desired == ready, result.message
