"""Sizing to the SLO (`kvscale.scaling.sizing`) through the decision: tables for each rule, and
the safety property that latency the learner cannot use (none, or from pods' warm-up) never
makes the SLO mode keep fewer pods than the CR's own targets would."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvscale import histogram
from kvscale.scaling import account, capacity, decision, demand, sizing
from kvscale.scaling import settings as scaling_settings
from kvscale.twin import buckets

BLOCKS = 1001  # 1000 usable blocks: used blocks / 1000 is the occupancy
SLO = sizing.Settings(capacity.Objective(ttft=((0.9, 2.0),)))
FAST = capacity.Settings(warmup_seconds=0.0, sample_interval_seconds=0.0, trust_evidence=1.0)


STARTED_IN_100_S = tuple(
    demand.Observation(f"old{n}", demand.Phase.TERMINATING, None, created_at=0.0, ready_since=100.0)
    for n in range(3)
)
"""Three pods on their way out that took 100 s from creation to Ready (their own timestamps):
the sizer's measured lead time is 100 s."""


def _ttft(seconds: float, count: int = 200) -> histogram.Histogram:
    return histogram.Histogram.of(buckets.TIME_TO_FIRST_TOKEN, [seconds] * count)


def _pod(
    name: str,
    at: float,
    occupancy: float,
    tokens: float | None,
    ttft: histogram.Histogram | None = None,
    *,
    ready_since: float | None = 0.0,
    waiting: int = 0,
    waiting_blocks: int | None = None,
    phase: demand.Phase = demand.Phase.READY,
) -> demand.Observation:
    sample = demand.Sample(
        time=at,
        num_gpu_blocks=BLOCKS,
        num_used_blocks=round(occupancy * (BLOCKS - 1)),
        num_requests_running=4,
        num_requests_waiting=waiting,
        num_waiting_blocks=waiting_blocks,
        tokens_per_second=tokens,
        ttft=ttft,
        latency_since=None if ttft is None else at - 30.0,
    )
    if phase is not demand.Phase.READY:
        return demand.Observation(name, phase, None, created_at=at - 10.0)
    return demand.Observation(name, phase, sample, ready_since=ready_since, created_at=0.0)


def _config(**changes: object) -> scaling_settings.ScalingSettings:
    base = scaling_settings.ScalingSettings(min_replicas=1, max_replicas=20)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _sizer(config: scaling_settings.ScalingSettings, **changes: object) -> sizing.Sizer:
    return sizing.Sizer(dataclasses.replace(SLO, learning=FAST, **changes), config)  # type: ignore[arg-type]


# --- the safety property ------------------------------------------------------------------

_tick = st.tuples(
    st.integers(1, 6),  # current
    st.lists(
        st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 60_000.0), st.booleans()),
        min_size=1,
        max_size=5,
    ),  # (occupancy, tokens/s, reported) per ready pod
)


@settings(max_examples=60, deadline=None)
@given(
    ticks=st.lists(_tick, min_size=1, max_size=40),
    warmup_latency=st.booleans(),
    tokens_target=st.sampled_from([None, 15_000.0]),
)
def test_latency_the_learner_cannot_use_never_keeps_fewer_pods_than_the_crs_targets(
    ticks: list[tuple[int, list[tuple[float, float, bool]]]],
    warmup_latency: bool,
    tokens_target: float | None,
) -> None:
    # No latency at all, or latency only from the pods' first minutes (a bad p90 of 30 s
    # then): the learner is taught nothing, so the SLO mode decides on the CR's targets, and
    # its own rules (guard, starting pods, pods ahead) can only keep more. The one rule that
    # asks fewer, a burst inside the headroom waiting to be held, waits for a learned capacity
    # (its own tests follow).
    config = _config(scale_down_delay_seconds=0.0, target_tokens_per_second=tokens_target)
    base = decision.Autoscaler(config)
    slo = decision.Autoscaler(config, SLO)
    for index, (current, pods) in enumerate(ticks):
        now = 100.0 + 5.0 * index
        latency = _ttft(30.0) if warmup_latency else None
        observed = [
            _pod(f"p{n}", now, occupancy, tokens, latency, ready_since=now - 1.0)
            if reported
            else demand.Observation(f"p{n}", demand.Phase.READY, None)
            for n, (occupancy, tokens, reported) in enumerate(pods)
        ]
        plain = base.step(now, observed, current)
        sized = slo.step(now, observed, current)
        assert sized.desired >= plain.desired, (plain.message, sized.message)
        assert sized.sized is not None
        assert all(e.source is not capacity.Source.LEARNED for e in sized.sized.estimates)


# --- targets from what was learned --------------------------------------------------------


def test_a_violation_sets_the_compute_target_below_the_load_that_broke_the_slo() -> None:
    config = _config()
    sizer = _sizer(config)
    assert sizer.targets(0.0).target_tokens_per_second is None  # nothing learned, none set
    # 20k tokens/s met the SLO, then 30k broke it (p90 TTFT 5 s against 2 s).
    for at in (100.0, 115.0, 130.0):
        sizer.learn(at, [_pod("a", at, 0.2, 20_000.0, _ttft(0.5))])
    for at in (145.0, 160.0):
        sizer.learn(at, [_pod("a", at, 0.2, 30_000.0, _ttft(5.0))])
    estimate = sizer.learner.estimate(capacity.Resource.COMPUTE, 160.0)
    assert estimate is not None
    assert 20_000.0 <= estimate.capacity < 30_000.0
    target = sizer.targets(160.0).target_tokens_per_second
    # The edge is known: the headroom (20%) is kept below it.
    assert target is not None
    assert abs(target - 0.8 * estimate.capacity) < 1e-6
    # The edge is forgotten after `edge_seconds`: the target is the estimate itself, without
    # headroom, to explore above it; compute keeps a target (it has broken the SLO before, so
    # it binds), and KV alone never sizes this fleet again.
    later = 160.0 + SLO.edge_seconds + 1.0
    assert sizer.targets(later).target_tokens_per_second == estimate.capacity
    stated = _sizer(_config(target_tokens_per_second=16_000.0))
    for at in (100.0, 115.0, 130.0):
        stated.learn(at, [_pod("a", at, 0.2, 25_000.0, _ttft(0.5))])
    learned = stated.learner.estimate(capacity.Resource.COMPUTE, 130.0)
    assert learned is not None
    assert learned.source is capacity.Source.LEARNED
    assert stated.targets(130.0).target_tokens_per_second == learned.capacity


def test_bursty_kv_demand_teaches_the_windows_mean_and_blames_its_peak() -> None:
    """Long-context traffic: a pod's cache swings between 0.4 full and full within each latency
    window (mean 0.64, below the 0.875 prior). The SLO breaks in every window. Pinned on the
    window's peak (1.0, above the estimate) the violations agreed with the prior and nothing
    was learned; the mean is below it, so the KV capacity comes down, and the peak (a full
    cache) puts the blame on the KV cache, not on compute."""
    config = _config()
    sizer = _sizer(config)
    before = sizer.learner.estimate(capacity.Resource.KV, 0.0)
    assert before is not None
    assert abs(before.capacity - 0.875) < 1e-9  # the CR's 0.7 over the headroom's share
    for second in range(1, 121):
        at = float(second)
        swing = 1.0 if second % 10 < 4 else 0.4  # 0.4 of the time full, 0.6 of it light
        broke = _ttft(8.0) if second % 15 == 0 else None  # a latency window every 15 s
        sizer.learn(at, [_pod("a", at, swing, 5_000.0, broke)])
    after = sizer.learner.estimate(capacity.Resource.KV, 120.0)
    assert after is not None
    assert after.capacity < 0.875
    assert after.capacity >= 0.64  # toward the window's mean, never past it
    assert sizer.learner.estimate(capacity.Resource.COMPUTE, 120.0) is None  # not blamed
    assert sizer.targets(120.0).target_occupancy < 0.7  # headroom below what broke


def test_the_decision_names_compute_as_what_binds_and_scales_up_for_it() -> None:
    slo = decision.Autoscaler(_config(), dataclasses.replace(SLO, learning=FAST))
    for at in (100.0, 115.0):
        slo.step(at, [_pod("a", at, 0.1, 20_000.0, _ttft(0.5))], 1)
    made = slo.step(130.0, [_pod("a", 130.0, 0.1, 26_000.0, _ttft(6.0))], 1)
    assert made.desired > 1
    assert made.reason is decision.Reason.SCALE_UP_THROUGHPUT
    assert made.sized is not None
    assert made.sized.binding is capacity.Resource.COMPUTE
    assert "compute binds" in made.message


def test_warm_up_latency_teaches_nothing() -> None:
    sizer = sizing.Sizer(SLO, _config())  # the default 60 s warm-up
    for at in (10.0, 30.0, 50.0):
        sizer.learn(at, [_pod("a", at, 0.5, 20_000.0, _ttft(9.0), ready_since=0.0)])
    found = sizer.learner.estimates(50.0)
    assert capacity.Resource.COMPUTE not in found
    assert found[capacity.Resource.KV].source is capacity.Source.TARGET
    # A pod whose Ready time is unknown cannot be told out of its warm-up: it teaches nothing.
    sizer.learn(200.0, [_pod("b", 200.0, 0.5, 20_000.0, _ttft(9.0), ready_since=None)])
    assert capacity.Resource.COMPUTE not in sizer.learner.estimates(200.0)


# --- safe scale-down ----------------------------------------------------------------------


def _taught(config: scaling_settings.ScalingSettings) -> sizing.Sizer:
    """A sizer whose compute capacity was proven at 10k tokens/s (met, never broken)."""
    sizer = _sizer(config)
    for index in range(12):
        at = 100.0 + 15.0 * index
        sizer.learn(at, [_pod("a", at, 0.1, 10_000.0, _ttft(0.5))])
    return sizer


def test_survivors_must_carry_the_removed_pods_load_within_the_proven_capacity() -> None:
    sizer = _taught(_config())
    estimate = sizer.learner.estimate(capacity.Resource.COMPUTE, 300.0)
    assert estimate is not None
    assert estimate.use is capacity.Use.TRUSTED
    now = 300.0
    # The survivors keep the headroom (20%): each may carry 8k of the 10k proven.
    # Three pods at 5k: 15k fits in 2 pods of 8k; the scale-down stands.
    sizer.learn(now, [_pod(p, now, 0.1, 5_000.0) for p in "abc"])
    assert sizer.guard(now, wanted=2, current=3) is None
    # Three pods at 6k each: 18k needs 3 pods of 8k; the decision's 2 is cut back to 3.
    sizer.learn(now + 1, [_pod(p, now + 1, 0.1, 6_000.0) for p in "abc"])
    assert sizer.guard(now + 1, wanted=2, current=3) == account.Guarded(2, 3, "compute", 0.2)
    # A quieter tick does not buy it: the survivors must carry the highest fleet load of the
    # stable window (60 s), not one moment's.
    sizer.learn(now + 2, [_pod(p, now + 2, 0.1, 5_000.0) for p in "abc"])
    assert sizer.guard(now + 2, wanted=2, current=3) == account.Guarded(2, 3, "compute", 0.2)
    # A window later, two pods at 3.5k: the last would run at 7k, within 8k; it stands.
    later = now + 63
    sizer.learn(later, [_pod(p, later, 0.1, 3_500.0) for p in "ab"])
    assert sizer.guard(later, wanted=1, current=2) is None
    # 2 -> 1 at 5k each would run the last pod at 10k: at what was proven, with no headroom
    # left for the next burst: refused.
    sizer.learn(later + 1, [_pod(p, later + 1, 0.1, 5_000.0) for p in "ab"])
    assert sizer.guard(later + 1, wanted=1, current=2) == account.Guarded(1, 2, "compute", 0.2)
    estimate = sizer.learner.estimate(capacity.Resource.COMPUTE, later + 1)
    assert estimate is not None
    assert estimate.use is capacity.Use.TRUSTED


@pytest.mark.parametrize(
    ("per_pod", "allowed"),
    [
        (5_000.0, None),  # 15k on 2 pods: 7.5k each, within the CR's 8k; it stands
        (5_400.0, 3),  # 16.2k on 2 pods: 8.1k each, past the CR's 8k; cut back to 3
    ],
)
def test_before_anything_is_proven_the_survivors_are_held_to_the_crs_target(
    per_pod: float, allowed: int | None
) -> None:
    # The CR's target is a running point: the headroom is already in it, and is not taken
    # off it twice (a capacity of 8k / 0.8 = 10k, less the headroom: 8k again).
    sizer = _sizer(_config(target_tokens_per_second=8_000.0))
    estimate = sizer.learner.estimate(capacity.Resource.COMPUTE, 100.0)
    assert estimate is not None
    assert estimate.use is not capacity.Use.TRUSTED
    sizer.learn(100.0, [_pod(p, 100.0, 0.05, per_pod) for p in "abc"])
    guarded = sizer.guard(100.0, wanted=2, current=3)
    assert guarded == (None if allowed is None else account.Guarded(2, allowed, "compute", 0.2))


@pytest.mark.parametrize("target", [1e9, 1e-6, 1_000.0])
@pytest.mark.parametrize(("carried", "allowed"), [(0.95, None), (1.05, 2)])
def test_the_survivors_capacity_from_the_cr_is_the_learners_prior(
    target: float, carried: float, allowed: int | None
) -> None:
    # One conversion of the CR's target into a capacity serves the prior and the guard: at
    # the ends of the CR's range the prior is held to the learner's bounds, and the survivors
    # are held to that same capacity less the headroom (before, 1e9 / 0.8 let them run past
    # the learner's highest capacity).
    sizer = _sizer(_config(target_tokens_per_second=target))
    prior = sizer.learner.estimate(capacity.Resource.COMPUTE, 100.0)
    assert prior is not None
    per_pod = prior.capacity * 0.8 * carried / 2  # 2 -> 1 puts the load of both on one
    sizer.learn(100.0, [_pod(p, 100.0, 0.05, per_pod) for p in "ab"])
    guarded = sizer.guard(100.0, wanted=1, current=2)
    assert guarded == (None if allowed is None else account.Guarded(1, allowed, "compute", 0.2))


@pytest.mark.parametrize(
    ("guarded", "words"),
    [
        (
            account.Guarded(1, 3, "compute", 0.2),
            "scale-down to 1 limited to 3: the pods that stay must carry the fleet's highest "
            "compute load of the stable window with 20% of their capacity to spare",
        ),
        (
            account.Guarded(2, 4, None, 0.2),
            "scale-down to 2 refused: no load has been proven to meet the SLO yet, so 4 stay",
        ),
    ],
)
def test_a_cut_scale_down_says_what_the_survivors_must_carry(
    guarded: account.Guarded, words: str
) -> None:
    assert guarded.words() == words


def test_a_capacity_lowered_by_violations_and_never_proven_buys_no_scale_down() -> None:
    sizer = _sizer(_config())
    for at in (100.0, 115.0, 130.0):
        sizer.learn(at, [_pod("a", at, 0.1, 30_000.0, _ttft(6.0))])
    estimate = sizer.learner.estimate(capacity.Resource.COMPUTE, 130.0)
    assert estimate is not None
    assert estimate.proven is None
    sizer.learn(131.0, [_pod(p, 131.0, 0.1, 1_000.0) for p in "abcd"])
    assert sizer.guard(131.0, wanted=1, current=4) == account.Guarded(1, 4, None, 0.2)


def test_successive_scale_downs_wait_for_the_stable_window_to_see_the_smaller_fleet() -> None:
    config = _config(scale_down_delay_seconds=0.0, stable_window_seconds=60.0)
    autoscaler = decision.Autoscaler(config, SLO)

    def tick(now: float, count: int) -> decision.Decision:
        return autoscaler.step(now, [_pod(f"p{n}", now, 0.05, None) for n in range(count)], count)

    first = tick(100.0, 8)
    assert (first.desired, first.reason) == (4, decision.Reason.LIMITED_BY_RATE)
    held = tick(101.0, 4)  # the plain decision would halve again at once
    assert (held.desired, held.reason) == (4, decision.Reason.HOLD_SCALE_DOWN_PACED)
    assert any(isinstance(step, account.Paced) for step in held.steps)
    assert tick(159.0, 4).desired == 4
    assert tick(160.0, 4).desired == 2
    # Scaling up is never paced.
    busy = autoscaler.step(161.0, [_pod(f"p{n}", 161.0, 0.95, None) for n in range(2)], 2)
    assert busy.desired > 2


def test_a_scale_down_not_applied_is_not_paced_so_advice_stays_steady() -> None:
    # Advisory mode: someone else owns the count, which stays at 8. Each tick advises the
    # same scale-down; pacing it (the fleet never shrank) would flip the advice every minute.
    config = _config(scale_down_delay_seconds=0.0, stable_window_seconds=60.0)
    autoscaler = decision.Autoscaler(config, SLO)
    for now in (100.0, 101.0, 130.0, 161.0):
        made = autoscaler.step(now, [_pod(f"p{n}", now, 0.05, None) for n in range(8)], 8)
        assert (made.desired, made.reason) == (4, decision.Reason.LIMITED_BY_RATE)


def test_starting_pods_stay_while_the_ready_ones_run_above_target() -> None:
    config = _config(scale_down_delay_seconds=0.0, stable_window_seconds=6.0)
    observed = [
        _pod("a", 100.0, 0.8, None),
        _pod("b", 100.0, 0.8, None),
        _pod("c", 100.0, 0.0, None, phase=demand.Phase.STARTING),
        _pod("d", 100.0, 0.0, None, phase=demand.Phase.STARTING),
    ]
    plain = decision.Autoscaler(config).step(100.0, observed, 4)
    assert plain.desired == 3  # 1.6 pods' worth at 0.7 wants 3: a starting pod would go
    sized = decision.Autoscaler(config, SLO).step(100.0, observed, 4)
    assert sized.desired == 4
    assert sized.reason is decision.Reason.HOLD_PODS_STARTING
    assert any(isinstance(step, account.StartingNeeded) for step in sized.steps)


# --- pressure -----------------------------------------------------------------------------


def test_a_pod_under_pressure_counts_just_over_its_target_not_as_a_full_cache() -> None:
    config = _config(target_occupancy=0.3)
    floor = sizing.pressure_floor(config)
    assert 0.33 < floor < 0.34
    queued = [_pod("a", 100.0, 0.1, None, waiting=8), _pod("b", 100.0, 0.3, None)]
    assert demand.measure(100.0, queued, config).demand == 1.3  # full cache: 1.0 + 0.3
    measured = demand.measure(100.0, queued, config, floor)
    assert measured.demand is not None
    assert abs(measured.demand - (floor + 0.3)) < 1e-9
    # One short queue at a low target: the CR alone asks 5 pods; in the SLO mode the queued
    # pod reads just over its target, and the two pods' mean is within the tolerance band.
    assert decision.Autoscaler(config).step(100.0, queued, 2).desired == 5
    sized = decision.Autoscaler(config, SLO).step(100.0, queued, 2)
    assert sized.desired == 2
    # And pressure never buys a scale-down.
    calm = _config(target_occupancy=0.9, scale_down_delay_seconds=0.0)
    held = decision.Autoscaler(calm, SLO).step(100.0, queued, 4)
    assert held.desired == 4
    assert held.reason is decision.Reason.HOLD_PRESSURE


# --- ahead of a ramp ----------------------------------------------------------------------


def test_on_a_ramp_pods_are_asked_for_one_measured_start_up_time_ahead() -> None:
    config = _config(stable_window_seconds=6.0, panic_window_seconds=6.0)
    slo = decision.Autoscaler(config, SLO)
    # Pods took 100 s from creation to Ready (their own timestamps).
    started = STARTED_IN_100_S
    made = None
    for second in range(0, 61, 5):
        now = 1000.0 + second
        occupancy = 0.5 + 0.005 * second  # the demand grows 0.005 per pod per second
        made = slo.step(
            now, [*started, _pod("a", now, occupancy, None), _pod("b", now, occupancy, None)], 2
        )
    assert made is not None
    assert made.desired > 2
    ahead = [step for step in made.steps if isinstance(step, account.Ahead)]
    assert ahead
    assert ahead[0].lead_seconds == 100.0
    # Two pods growing 0.005/s each = 0.01 pods' worth of cache per second over 100 s is
    # 1 pod's worth at 0.7: one pod ahead of what this tick's demand asks.
    assert made.sized is not None
    assert made.sized.lead_seconds == 100.0
    plain = decision.Autoscaler(config)
    for second in range(0, 61, 5):
        now = 1000.0 + second
        occupancy = 0.5 + 0.005 * second
        last = plain.step(
            now, [_pod("a", now, occupancy, None), _pod("b", now, occupancy, None)], 2
        )
    assert made.desired == last.desired + ahead[0].pods


@pytest.mark.parametrize(
    ("slope", "desired", "reason"),
    [
        # 0.70 -> 0.76 a pod over 60 s, inside the band (0.63-0.77) all the way; at that
        # growth, 100 s from now the two pods would hold 2.46 pods' worth, above 2 x 1.1.
        (0.001, 3, decision.Reason.SCALE_UP_AHEAD_OF_RAMP),
        (0.0, 2, decision.Reason.WITHIN_TOLERANCE),  # as high, flat: the band holds
        (-0.001, 2, decision.Reason.WITHIN_TOLERANCE),  # falling
    ],
)
def test_a_ramp_inside_the_band_scales_up_one_start_up_time_ahead(
    slope: float, desired: int, reason: decision.Reason
) -> None:
    config = _config(stable_window_seconds=6.0, panic_window_seconds=6.0)
    slo = decision.Autoscaler(config, SLO)
    plain = decision.Autoscaler(config)
    started = STARTED_IN_100_S
    made = last = None
    for second in range(61):
        now = 1000.0 + second
        occupancy = 0.76 + slope * (second - 60)
        pods = [_pod("a", now, occupancy, None), _pod("b", now, occupancy, None)]
        made = slo.step(now, [*started, *pods], 2)
        last = plain.step(now, pods, 2)
    assert made is not None
    assert last is not None
    assert last.desired == 2  # without spec.slo the band holds, whatever the slope
    assert (made.desired, made.reason) == (desired, reason)
    ahead = [step for step in made.steps if isinstance(step, account.Ahead)]
    assert bool(ahead) == (desired > 2)
    if ahead:
        assert ahead[0].lead_seconds == 100.0
        assert "ahead of the ramp" in made.message


def test_a_fleets_first_load_is_not_read_as_a_ramp() -> None:
    # The first 20 s of a fleet: idle, then at 0.76 a pod (inside the band). A slope over them
    # is a steep ramp; the growth is not read until its history spans the growth window.
    config = _config(stable_window_seconds=6.0, panic_window_seconds=6.0)
    slo = decision.Autoscaler(config, SLO)
    started = STARTED_IN_100_S
    for second in range(21):
        now = 1000.0 + second
        occupancy = 0.0 if second < 10 else 0.76
        pods = [_pod("a", now, occupancy, None), _pod("b", now, occupancy, None)]
        made = slo.step(now, [*started, *pods], 2)
        assert made.desired == 2, made.message


@pytest.mark.parametrize(
    ("burst_seconds", "pods_ahead"),
    [
        (0, None),  # flat: nothing ahead
        (10, None),  # the last 10 s of the 60 s window: a burst, not a ramp
        (60, 12),  # the whole window: a ramp of 0.2 pods/s x 60 s
    ],
)
def test_the_growth_is_read_over_the_whole_window_not_its_last_ticks(
    burst_seconds: int, pods_ahead: int | None
) -> None:
    # One tick a second; the demand is 10 pods' worth, rising 0.2 pods/s in its last
    # `burst_seconds`. Reading the last 24 ticks only (as before) took a 10 s burst for a ramp
    # of 0.2 pods/s and asked 12 pods ahead of it.
    sizer = _sizer(_config(), lead_prior_seconds=60.0)
    found = None
    for second in range(61):
        rising = max(0, second - (60 - burst_seconds))
        found = sizer.ahead(1000.0 + second, 10.0 + 0.2 * rising, ready=20)
    if pods_ahead is None:
        assert found is None
    else:
        assert found is not None
        assert found.pods == pods_ahead
        assert found.growth_per_second == pytest.approx(0.2)


# --- a burst inside the headroom ---------------------------------------------------------

LEARNS_FAST = dataclasses.replace(SLO, learning=FAST)


def _learned_then(
    autoscaler: decision.Autoscaler, occupancy: float, seconds: int, waiting: int = 0
) -> list[decision.Decision]:
    """Four pods breaking the SLO at 0.8 for a minute (p90 TTFT 5 s against 2 s: a KV
    capacity of 0.8 learned, a target of 0.64 with the headroom), meeting it at 0.5 for two,
    then at `occupancy` for `seconds` ticks, the first pod with `waiting` requests queued
    (needing no blocks beyond its occupancy). The ticks of the burst's decisions."""
    made = []
    for second in range(180 + seconds):
        now = 1000.0 + second
        burst = second >= 180
        level, ttft = (0.8, 5.0) if second < 60 else (occupancy, 0.5) if burst else (0.5, 0.5)
        queued = waiting if burst else 0
        pods = [_pod("p0", now, level, None, _ttft(ttft), waiting=queued, waiting_blocks=0)]
        pods += [_pod(f"p{n}", now, level, None, _ttft(ttft)) for n in range(1, 4)]
        made.append(autoscaler.step(now, pods, 4))
    return made[180:]


def _tick_ups(made: decision.Decision) -> list[account.TickUp]:
    return [step for step in made.steps if isinstance(step, account.TickUp)]


def test_a_burst_inside_the_headroom_scales_up_only_once_the_demand_held() -> None:
    # 0.75 a pod is outside the band of the learned target (0.64 x 1.1 = 0.704) but under the
    # learned capacity (0.8): a burst the headroom is kept for.
    autoscaler = decision.Autoscaler(_config(), LEARNS_FAST)
    sized = _learned_then(autoscaler, 0.75, 15)
    assert autoscaler.sizer is not None
    assert autoscaler.sizer.capacity_learned(1194.0)
    assert autoscaler.config.target_occupancy == pytest.approx(0.64)
    assert LEARNS_FAST.held_seconds == 15.0
    assert [made.desired for made in sized[:14]] == [4] * 14  # a burst shorter than 15 s
    (held,) = _tick_ups(sized[14])  # the 15th tick: the level held
    assert held.wanted == 5  # 4 x 0.75 = 3 pods' worth at 0.64
    assert held.held_seconds == 15.0
    assert sized[14].desired >= 5
    assert "occupancy held over the last 15 s" in sized[14].message
    # With a window of one tick (the rule off) the same burst scales up at its first tick.
    at_once = _learned_then(
        decision.Autoscaler(_config(), dataclasses.replace(LEARNS_FAST, held_seconds=1.0)),
        0.75,
        1,
    )
    assert at_once[0].desired >= 5


def test_a_burst_inside_the_headroom_with_a_queue_scales_up_at_once() -> None:
    # The same burst with one pod queueing (5 requests: pressure): users wait now.
    queued = _learned_then(decision.Autoscaler(_config(), LEARNS_FAST), 0.75, 1, waiting=5)
    (tick,) = _tick_ups(queued[0])
    assert tick.level.pressured == 1
    assert tick.wanted == 5
    assert tick.held_seconds is None
    assert "this tick's occupancy" in queued[0].message


def test_a_burst_above_the_learned_capacity_scales_up_at_once() -> None:
    sized = _learned_then(decision.Autoscaler(_config(), LEARNS_FAST), 0.9, 1)
    (tick,) = _tick_ups(sized[0])
    assert tick.wanted == 6  # 4 x 0.9 = 3.6 pods' worth at 0.64
    assert tick.held_seconds is None
    assert "this tick's occupancy" in sized[0].message


def test_before_the_capacity_is_learned_a_burst_scales_up_at_once() -> None:
    # No latency reported: the targets are the CR's (0.7), the line above them a guess.
    def burst(autoscaler: decision.Autoscaler) -> decision.Decision:
        for second in range(61):
            now = 1000.0 + second
            level = 0.6 if second < 60 else 0.84  # 1.2 x the target: under 0.7 / 0.8
            made = autoscaler.step(now, [_pod(f"p{n}", now, level, None) for n in range(4)], 4)
        return made

    plain = burst(decision.Autoscaler(_config()))
    sized = burst(decision.Autoscaler(_config(), SLO))
    assert plain.desired == 5
    assert sized.desired >= plain.desired
    (tick,) = _tick_ups(sized)
    assert tick.held_seconds is None


def test_held_seconds_must_be_positive() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="held_seconds"):
            dataclasses.replace(SLO, held_seconds=bad)


def test_pods_asked_ahead_are_not_taken_back_at_the_next_tick() -> None:
    config = _config(stable_window_seconds=6.0, panic_window_seconds=6.0)
    slo = decision.Autoscaler(config, SLO)
    started = STARTED_IN_100_S
    current = 2
    made = None
    for second in range(0, 61, 5):
        now = 1000.0 + second
        occupancy = 0.5 + 0.005 * second
        made = slo.step(
            now,
            [*started, _pod("a", now, occupancy, None), _pod("b", now, occupancy, None)],
            current,
        )
    assert made is not None
    asked = made.desired
    assert any(isinstance(step, account.Ahead) for step in made.steps)
    # The ramp stops; the demand alone wants fewer than were asked, but the scale-down delay
    # saw the pods asked ahead: they stay.
    now = 1062.0
    flat = [*started, _pod("a", now, 0.8, None), _pod("b", now, 0.8, None)]
    after = slo.step(now, flat, asked)
    assert after.desired == asked


def test_a_tokens_target_anywhere_in_the_crs_range_makes_a_sizer() -> None:
    # targetTokensPerSecond is (0, 1e9] in the CRD; over the headroom's share it left the
    # learner's [1, 1e9], and the learner refused the prior on every tick (chaos scenario 9).
    low, high = FAST.bounds[capacity.Resource.COMPUTE]
    for target, prior in ((1e9, high), (5e-324, low), (1e-6, low), (1000.0, 1000.0 / 0.8)):
        sizer = _sizer(_config(target_tokens_per_second=target), headroom=0.2)
        estimate = sizer.learner.estimate(capacity.Resource.COMPUTE, 0.0)
        assert estimate is not None
        assert estimate.capacity == prior
