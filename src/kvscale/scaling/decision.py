"""The autoscaler: from one tick's observations to desired replicas, with a reason. Pure.

`Autoscaler(config).step(now, observations, current) -> Decision`. `now` is seconds on a clock
that never goes backwards; `current` is the Deployment's spec.replicas (pods that exist or are
on the way, not only ready ones). The Autoscaler keeps only its windows and its panic state;
the operator owns one per InferenceDeployment and builds a new one when the settings change.

The algorithm, one tick (Knative's KPA with HPA's tolerance; `demand` explains the demand D):

1. Measure. Classify the pods (ready, starting, pending, terminating) and the ready pods'
   reports. D = this tick's demand of the ready pods in pods' worth of KV cache; pods under
   pressure or without a fresh report count as saturated (`demand`).
2. Hold when there is nothing to decide on: no ready pod, or no ready pod with a fresh report.
   desired = current (then the bounds, step 9); mode hold; reason hold_pods_starting (no ready
   pod yet, some on the way), hold_no_data (no reports at all) or hold_stale_data (reports,
   none fresh). The windows learn nothing from such a tick, but the scale-down delay window
   records `current`, so after an outage a scale-down still waits a full delay.
3. Windows. Record D in the stable window (`stable_window_seconds`) and the panic window
   (`panic_window_seconds`). S and P are their averages (of totals, not of per-pod means: pods
   joining or leaving move demand between pods, not the total, so the windows stay true while
   the deployment changes size).
4. Panic. A trigger is P / target >= panic_threshold x ready. A trigger starts panic or extends
   it; panic ends at the first tick a stable window after the last trigger.
5. Wanted.
   Up at once: when this tick's D / (ready x target) is above 1 + tolerance and ceil(D /
   target) > current (and more than the stable window wants), wanted = ceil(D / target):
   scale_up_occupancy or scale_up_pressure. This is HPA's default behaviour (no stabilization
   on the way up): a step in load scales at the next tick, not when a 60 s average has moved
   out of the band. The tick never scales down: that is the stable window's job, and the
   scale-down delay's.
   Normal: ratio = S / (ready x target). If |ratio - 1| <= tolerance, wanted = current
   (within_tolerance). Otherwise wanted = ceil(S / target), which is ceil(ready x observed /
   target) with observed the mean occupancy per ready pod: scale_up_occupancy (or
   scale_up_pressure when occupancy alone would not scale up), scale_down, or steady /
   hold_pods_starting when it equals current.
   Panic: wanted = max(ceil(P / target), the normal wanted, current): scale_up_panic, or
   hold_panic (never down while panicking), or hold_pods_starting.
   Because wanted is compared with current, and current counts starting and pending pods,
   pods on the way are capacity: a scale-up repeats only when demand outgrows them.
6. Scale-down delay. Record wanted in a windowed maximum over `scale_down_delay_seconds`
   (seeded with `current` at the first tick, so a restarted operator does not scale down at
   once). If wanted < current, wanted = max(wanted, min(current, that maximum));
   scale_down_delayed. The delay decides *whether* demand stayed low long enough; the rates
   then decide how fast to go. (KPA records the rate-limited count instead, which makes every
   rate-limited step of a long scale-down wait a whole delay again.)
7. Rates (relative to ready, as KPA): wanted <= max(current, ceil(max_scale_up_rate x ready))
   and wanted >= min(current, floor(ready / max_scale_down_rate)); limited_by_rate. The limits
   never push the other way than the decision goes.
8. Missing data. If wanted < current while any ready pod has no fresh report, wanted = current;
   hold_missing_data. Missing data never scales down.
9. Bounds. desired = clamp(wanted, max(1, min_replicas), max_replicas); limited_by_min or
   limited_by_max. The floor is 1 even when minReplicas is 0: with no pod, no report could ask
   for a scale-up again (scale-from-zero needs a request signal from outside the pods).

Manual replicas. `step(..., manual=N)` (the CR's spec.replicas is set) measures as step 1 and
returns N as it is (mode and reason `manual`, no bounds: a person asked for it); the windows
and the delay learn nothing from such a tick.

The reason is the last step that changed the number (or the step-5 reason when none did); the
decision records every step that mattered as a value (`Decision.steps`, the records of
`kvscale.scaling.account`), and `Decision.message` renders them into words; the arithmetic here
builds no prose.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable

from kvscale.scaling import account, arith, demand, settings, sizing, window

GRANULARITY_SECONDS = 1.0
"""Bucket width of every window (Knative's too): ticks are at least 0.25 s apart."""


class Mode(enum.StrEnum):
    """How the decision was made."""

    NORMAL = "normal"  # the stable window decides, both ways
    PANIC = "panic"  # a burst: the panic window scales up, nothing scales down
    HOLD = "hold"  # nothing to decide on (no ready pod, or no fresh report): the size stays
    MANUAL = "manual"  # spec.replicas is set: a person's count, measured but not decided


class Reason(enum.StrEnum):
    """Why `desired` is what it is: the last step of the algorithm that set it."""

    SCALE_UP_OCCUPANCY = "scale_up_occupancy"
    """The stable window's occupancy is above the tolerance band."""
    SCALE_UP_THROUGHPUT = "scale_up_throughput"
    """Above the band because of token throughput (targetTokensPerSecond), not occupancy."""
    SCALE_UP_PRESSURE = "scale_up_pressure"
    """Above the band only because pods under pressure or without reports count as full."""
    SCALE_UP_PANIC = "scale_up_panic"
    """Panicking: the panic window wants more pods."""
    SCALE_DOWN = "scale_down"
    """The stable window's occupancy is below the band."""
    WITHIN_TOLERANCE = "within_tolerance"
    """Occupancy / target is within 1 +/- tolerance: no change."""
    STEADY = "steady"
    """Outside the band, but the pods wanted are the pods there are."""
    HOLD_PANIC = "hold_panic"
    """Panicking: no scale-down until a stable window passes without a burst."""
    HOLD_PODS_STARTING = "hold_pods_starting"
    """Pods starting or pending already cover what is wanted."""
    HOLD_NO_DATA = "hold_no_data"
    """No ready pod, or no report from any ready pod: the size stays."""
    HOLD_STALE_DATA = "hold_stale_data"
    """Reports exist, but none is fresh, healthy and valid: the size stays."""
    HOLD_MISSING_DATA = "hold_missing_data"
    """A scale-down refused because some ready pods have no fresh report."""
    SCALE_DOWN_DELAYED = "scale_down_delayed"
    """A scale-down held to the most wanted within the scale-down delay."""
    LIMITED_BY_RATE = "limited_by_rate"
    """Held to the maximum scale-up or scale-down rate."""
    LIMITED_BY_MIN = "limited_by_min"
    """Raised to minReplicas (or to 1)."""
    LIMITED_BY_MAX = "limited_by_max"
    """Lowered to maxReplicas."""
    MANUAL = "manual"
    """spec.replicas is set: the count is a person's, not clamped, and the windows learn nothing."""
    LIMITED_BY_CAPACITY = "limited_by_capacity"
    """SLO mode: a scale-down cut so the pods that stay carry the load within proven capacity."""
    HOLD_PRESSURE = "hold_pressure"
    """SLO mode: no scale-down while a pod has a queue or preempts."""
    HOLD_UNPROVEN_CAPACITY = "hold_unproven_capacity"
    """SLO mode: no scale-down, because no load has been proven to meet the SLO yet."""
    HOLD_SCALE_DOWN_PACED = "hold_scale_down_paced"
    """SLO mode: no scale-down until the stable window has seen the last scale-down's fleet."""
    SCALE_UP_AHEAD_OF_RAMP = "scale_up_ahead_of_ramp"
    """SLO mode: within the band now, above it one start-up time ahead at the demand's growth."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What one tick decided, and why."""

    desired: int
    """The replicas to set."""
    current: int
    """The replicas asked for before this tick (the Deployment's spec.replicas)."""
    ready: int
    starting: int
    pending: int
    mode: Mode
    reason: Reason
    steps: tuple[account.Step, ...]
    """What each step that mattered found, in order (`message` puts it into words)."""
    wanted: int
    """What step 5 asked for, before the delay, rates, missing data and bounds."""
    occupancy: float | None
    """This tick's mean occupancy of the ready pods with fresh reports."""
    stable_occupancy: float | None
    """The stable window's demand per ready pod (pressure and missing reports counted full)."""
    panic_occupancy: float | None
    """The panic window's demand per ready pod."""
    missing: tuple[demand.Reading, ...]
    """The reading of each ready pod without a fresh report this tick (why: its freshness)."""
    removal_order: tuple[str, ...]
    """Ready pods with a known load, least loaded first (for pod-deletion-cost)."""
    sized: sizing.Sized | None = None
    """SLO mode: the learned capacities, what binds, the lead time; None without spec.slo."""

    @property
    def message(self) -> str:
        """The decision in words, for events, status and logs."""
        return "; ".join(found.words() for found in self.steps)

    @property
    def unreported(self) -> tuple[str, ...]:
        """Ready pods without a fresh report this tick."""
        return tuple(reading.pod for reading in self.missing)

    @property
    def change(self) -> int:
        """desired - current: positive to scale up, negative to scale down."""
        return self.desired - self.current


_OLD_OR_BAD = (demand.Freshness.STALE, demand.Freshness.UNHEALTHY, demand.Freshness.INVALID)
"""Reports that exist but cannot be used: the hold is hold_stale_data, not hold_no_data."""


@dataclasses.dataclass(frozen=True)
class _Demand:
    """A demand D in pods' worth of KV cache: all of it, by occupancy alone, by load."""

    total: float
    by_occupancy: float
    by_load: float


@dataclasses.dataclass(frozen=True)
class _Seen:
    """This tick's demand, the stable window's averages of it, the panic window's average, and
    in SLO mode the lowest tick of the held window."""

    tick: _Demand
    stable: _Demand
    panic: float
    held: float | None


class Autoscaler:
    """The decision for one InferenceDeployment: its windows, its panic state, its settings."""

    def __init__(
        self, config: settings.ScalingSettings, slo: sizing.Settings | None = None
    ) -> None:
        self.base = config
        """The settings as the CR states them."""
        self.config = config
        """The settings the last tick used: `base`, with the learned targets in SLO mode."""
        self.sizer = None if slo is None else sizing.Sizer(slo, config)
        """SLO mode (spec.slo set): the learned capacity sets the targets; None otherwise."""
        self._held = None if slo is None else window.Minimum(slo.held_seconds, GRANULARITY_SECONDS)
        """SLO mode: the lowest tick demand over `held_seconds` (`sizing.Settings`)."""
        self._stable = window.Average(config.stable_window_seconds, GRANULARITY_SECONDS)
        """Demand D over the stable window."""
        self._panic = window.Average(config.panic_window_seconds, GRANULARITY_SECONDS)
        """Demand D over the panic window."""
        self._stable_occupancy = window.Average(config.stable_window_seconds, GRANULARITY_SECONDS)
        """Demand by occupancy alone over the stable window: tells occupancy from the rest."""
        self._stable_load = window.Average(config.stable_window_seconds, GRANULARITY_SECONDS)
        """Demand by load (occupancy and throughput) over the stable window: tells throughput
        from pressure."""
        self._delay: window.Maximum | None = None
        """Wanted (before the rate limits) over the scale-down delay; None when it is 0."""
        if config.scale_down_delay_seconds > 0:
            self._delay = window.Maximum(config.scale_down_delay_seconds, GRANULARITY_SECONDS)
        self._last_trigger: float | None = None
        """When the panic window last crossed the threshold; None when not panicking."""
        self._seeded = False
        """Whether the delay window has been given `current` at the first tick."""
        self._scaled_down: tuple[float, int] | None = None
        """SLO mode: when the last scale-down was decided, and the count it was decided from
        (successive ones are paced once the fleet is smaller than that)."""

    @property
    def panicking(self) -> bool:
        return self._last_trigger is not None

    def step(
        self,
        now: float,
        observations: Iterable[demand.Observation],
        current: int,
        manual: int | None = None,
    ) -> Decision:
        """Decide at `now` from this tick's observations; `current` is spec.replicas.

        `manual` is a count a person set (the CR's spec.replicas): the decision is that count,
        with this tick's measurements, and the windows learn nothing from the tick.
        """
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise ValueError(f"now = {now!r}, must be a finite number of seconds")
        _check_count("current", current)
        if manual is not None:
            _check_count("manual", manual)
        observations = list(observations)
        sizer = self.sizer
        floor = demand.SATURATED
        if sizer is not None:
            sizer.learn(now, observations)
            self.config = sizer.targets(now)
            floor = sizing.pressure_floor(self.config)
        measured = demand.measure(now, observations, self.config, floor)
        if manual is not None:
            return self._manual(measured, current, manual)
        if not self._seeded and self._delay is not None:
            self._delay.record(now, current)
        self._seeded = True
        total, by_occupancy, by_load = (
            measured.demand,
            measured.occupancy_demand,
            measured.load_demand,
        )
        if total is None or by_occupancy is None or by_load is None:
            made = self._hold(now, measured, current)
        else:
            made = self._decide(now, measured, total, by_occupancy, by_load, current)
        return made if sizer is None else self._to_slo(now, sizer, measured, made)

    def _to_slo(
        self, now: float, sizer: sizing.Sizer, measured: demand.Signal, made: Decision
    ) -> Decision:
        """SLO mode, after the decision: pods ahead of a ramp on a scale-up; on a scale-down,
        starting pods kept while the ready ones run hot, and the survivors' capacity guard."""
        config = self.config
        steps = list(made.steps)
        binding = sizer.binding(config)
        desired, reason = made.desired, made.reason
        if made.mode is not Mode.HOLD and measured.demand is not None:
            ahead = sizer.ahead(now, measured.demand / config.target_occupancy, made.ready)
            if ahead is not None:
                desired, reason = self._ahead_of_ramp(now, sizer, made, ahead, steps)
        if desired < made.current:
            on_the_way = made.starting + made.pending
            per_pod = made.stable_occupancy
            if on_the_way and per_pod is not None and per_pod > config.target_occupancy:
                steps.append(account.StartingNeeded(on_the_way, per_pod, config.target_occupancy))
                desired, reason = made.current, Reason.HOLD_PODS_STARTING
            elif measured.num_pressured:
                # Pressure counts as just over the target here, not as a full cache, so it
                # buys at most about a pod; it must not buy a scale-down either.
                steps.append(account.UnderPressure(measured.num_pressured))
                desired, reason = made.current, Reason.HOLD_PRESSURE
        if desired < made.current:
            guarded = sizer.guard(now, desired, made.current)
            if guarded is not None:
                steps.append(guarded)
                desired = guarded.allowed
                reason = (
                    Reason.HOLD_UNPROVEN_CAPACITY
                    if guarded.resource is None
                    else Reason.LIMITED_BY_CAPACITY
                )
        if desired < made.current:
            # One scale-down per stable window: the demand the next one is decided on must be
            # the smaller fleet's, or a quiet minute takes the fleet from 9 pods to 1 in three
            # ticks (each halving it within the rate limit) before the survivors' latency says
            # anything (measured on the Mooncake trace: the next burst then queued for up to 55 s).
            # Only once the fleet did shrink: in Advisory mode (or when the scale was not
            # applied) the count stays, and pacing would flip the advice every window.
            pace = config.stable_window_seconds
            last = self._scaled_down
            if last is not None and now - last[0] < pace and made.current < last[1]:
                steps.append(account.Paced(desired, now - last[0], pace))
                desired, reason = made.current, Reason.HOLD_SCALE_DOWN_PACED
            else:
                self._scaled_down = (now, made.current)
        sized = sizer.sized(now, binding)
        steps.insert(0, sizer.words(now, config, binding))
        return dataclasses.replace(
            made, desired=desired, reason=reason, steps=tuple(steps), sized=sized
        )

    def _ahead_of_ramp(
        self,
        now: float,
        sizer: sizing.Sizer,
        made: Decision,
        ahead: account.Ahead,
        steps: list[account.Step],
    ) -> tuple[int, Reason]:
        """SLO mode, on a growing demand: pods Ready when the ramp arrives, not a start-up
        time after it. A scale-up asks `ahead.pods` more; a tick the band holds (no change)
        scales up when the stable window's demand plus one start-up time of growth is above
        the band of the pods there are and are coming."""
        config = self.config
        desired, reason = made.desired, made.reason
        if desired > made.current:
            raised = desired + ahead.pods
        elif (
            desired == made.current
            and not self.panicking
            and made.stable_occupancy is not None
            and sizer.growth_known(now)
        ):
            # Without this, a fleet running at its learned capacity scaled up only once the
            # demand was past the band, and the pods came a start-up time later: on the long
            # conversations on an H200 the cache filled on both ramps of the half hour (135
            # preemptions, TTFT p99 35 s, 95.3% attainment). The level is the stable
            # window's, not this tick's: a burst is in the tick and in the growth, and
            # projected from the tick it was counted twice (docs/simulation.md).
            level = made.stable_occupancy * made.ready / config.target_occupancy
            projected = level + ahead.growth_per_second * ahead.lead_seconds
            if projected <= made.current * (1 + config.tolerance):
                return desired, reason
            raised, reason = arith.ceil(projected), Reason.SCALE_UP_AHEAD_OF_RAMP
        else:
            return desired, reason
        raised = min(raised, self._up_limit(made.current, made.ready), config.max_replicas)
        if raised <= desired:
            return made.desired, made.reason
        steps.append(dataclasses.replace(ahead, pods=raised - made.desired))
        # The scale-down delay must see the pods asked ahead, or the next tick (whose demand
        # alone wants fewer) would take them back at once.
        if self._delay is not None:
            self._delay.record(now, raised)
        return raised, reason

    @staticmethod
    def _manual(measured: demand.Signal, current: int, manual: int) -> Decision:
        """A person's count: no decision, no bounds; the measurements for status and metrics."""
        steps = (account.Manual(manual),)
        return _made(measured, current, manual, Mode.MANUAL, Reason.MANUAL, steps, manual)

    def _hold(self, now: float, measured: demand.Signal, current: int) -> Decision:
        """Step 2: nothing to decide on; keep `current`, within the bounds."""
        on_the_way = measured.num_starting + measured.num_pending
        if measured.num_ready == 0 and on_the_way > 0:
            reason, gap = Reason.HOLD_PODS_STARTING, account.Gap.PODS_STARTING
        elif measured.num_ready == 0:
            reason, gap = Reason.HOLD_NO_DATA, account.Gap.NO_READY_POD
        elif any(r.freshness in _OLD_OR_BAD for r in measured.unreported):
            reason, gap = Reason.HOLD_STALE_DATA, account.Gap.NO_FRESH_REPORT
        elif measured.unreported:
            reason, gap = Reason.HOLD_NO_DATA, account.Gap.NO_REPORT
        else:
            reason, gap = Reason.HOLD_NO_DATA, account.Gap.NOT_POLLED
        if self._delay is not None:
            self._delay.record(now, current)
        steps: list[account.Step] = [account.Held(gap, current, on_the_way, measured.unreported)]
        desired, reason = self._bounds(current, reason, steps)
        ready = measured.num_ready
        return _made(
            measured,
            current,
            desired,
            Mode.HOLD,
            reason,
            tuple(steps),
            current,
            stable=self._per_ready(self._stable.average(now), ready),
            panic=self._per_ready(self._panic.average(now), ready),
        )

    def _decide(
        self,
        now: float,
        measured: demand.Signal,
        total: float,
        occupancy_demand: float,
        load_demand: float,
        current: int,
    ) -> Decision:
        """Steps 3 to 9."""
        ready = measured.num_ready
        seen = self._windows(now, _Demand(total, occupancy_demand, load_demand), ready)
        steps: list[account.Step] = []
        wanted, reason = self._wanted(measured, seen, current, steps)
        proposed, reason = self._delay_and_rates(now, wanted, current, ready, reason, steps)

        # 8. Missing data never scales down.
        if measured.unreported:
            vetoed = proposed < current
            if vetoed:
                proposed, reason = current, Reason.HOLD_MISSING_DATA
            steps.append(account.Unreported(measured.unreported, vetoed))

        # 9. Bounds.
        desired, reason = self._bounds(proposed, reason, steps)
        mode = Mode.PANIC if self.panicking else Mode.NORMAL
        return _made(
            measured,
            current,
            desired,
            mode,
            reason,
            tuple(steps),
            wanted,
            stable=seen.stable.total / ready,
            panic=seen.panic / ready,
        )

    def _windows(self, now: float, tick: _Demand, ready: int) -> _Seen:
        """Steps 3 and 4: record this tick's demand in the windows; start or end panic."""
        config = self.config
        self._stable.record(now, tick.total)
        self._panic.record(now, tick.total)
        self._stable_occupancy.record(now, tick.by_occupancy)
        self._stable_load.record(now, tick.by_load)
        held = None
        if self._held is not None and self.sizer is not None:
            self._held.record(now, tick.total)
            # Only the pods' own capacity says where the headroom is; the CR's guess does not.
            if self.sizer.capacity_learned(now):
                held = self._held.minimum(now)
        stable = self._stable.average(now)
        panic = self._panic.average(now)
        by_occupancy = self._stable_occupancy.average(now)
        by_load = self._stable_load.average(now)
        if stable is None or panic is None or by_occupancy is None or by_load is None:
            raise AssertionError("a window is empty right after a value was recorded in it")
        panic_pods = panic / config.target_occupancy
        if panic_pods >= config.panic_threshold * ready * (1 - arith.EPSILON):
            self._last_trigger = now
        elif self._last_trigger is not None and (
            now - self._last_trigger >= config.stable_window_seconds
        ):
            self._last_trigger = None
        return _Seen(tick, _Demand(stable, by_occupancy, by_load), panic, held)

    def _wanted(
        self, measured: demand.Signal, seen: _Seen, current: int, steps: list[account.Step]
    ) -> tuple[int, Reason]:
        """Step 5: the pods this tick's demand, the stable window and panic want, and why."""
        config = self.config
        ready = measured.num_ready
        target = config.target_occupancy
        pressured = measured.num_pressured
        stable, tick = seen.stable, seen.tick
        level = account.Level(stable.total / ready, target, ready, current, pressured)
        within = self._within_band(stable.total, ready)
        stable_wanted = current if within else arith.ceil(stable.total / target)
        # Up on this tick's demand (HPA's default: no stabilization on the way up), so a step
        # in load scales at the next tick; the stable window only has to agree on the way down.
        # In SLO mode, once the capacity is learned, a tick inside the headroom (at most the
        # target over the headroom's share, `Sizer.over_headroom`) with no pod queueing or
        # preempting scales only to the level the demand held (`sizing.Settings.held_seconds`):
        # the headroom is there for such a burst. Above that line, with a queue (users wait
        # now), or on the CR's targets, at once:
        # waiting on a queued pod at a fleet's start let the queue grow until panic bought
        # twice the pods (conv x8 on an H100: 4 -> 8 pods, 3.33 -> 5.06 GPU-h), and waiting on
        # the first ramp, before anything was learned, cost the long conversations on an H200
        # 1.6 points of attainment.
        up_on, held_seconds = tick.total, None
        if (
            seen.held is not None
            and self.sizer is not None
            and pressured == 0
            and tick.total <= ready * self.sizer.over_headroom(target)
        ):
            up_on, held_seconds = min(seen.held, tick.total), self.sizer.config.held_seconds
        tick_wanted = self._tick_wants(up_on, ready)
        if tick_wanted is not None and tick_wanted > max(current, stable_wanted):
            wanted = tick_wanted
            reason = self._up_reason(tick.by_occupancy, tick.by_load, ready, current)
            tick_level = account.Level(up_on / ready, target, ready, current, pressured)
            steps.append(account.TickUp(tick_level, wanted, held_seconds))
        elif within:
            wanted, reason = current, Reason.WITHIN_TOLERANCE
            steps.append(account.Within(level, config.tolerance))
        else:
            wanted = stable_wanted
            if wanted > current:
                reason = self._up_reason(stable.by_occupancy, stable.by_load, ready, current)
            elif wanted < current:
                reason = Reason.SCALE_DOWN
            elif current > ready and wanted > ready:
                reason = Reason.HOLD_PODS_STARTING
            else:
                reason = Reason.STEADY
            steps.append(account.Stable(level, wanted))
        if self.panicking:
            panic_pods = seen.panic / target
            panic_wanted = arith.ceil(panic_pods)
            steps.append(
                account.Panicking(
                    config.panic_window_seconds,
                    panic_wanted,
                    panic_pods / ready,
                    config.stable_window_seconds,
                )
            )
            normal_wanted = wanted
            wanted = max(panic_wanted, normal_wanted, current)
            if wanted > current:
                reason = Reason.SCALE_UP_PANIC
            elif current > ready and max(panic_wanted, normal_wanted) > ready:
                reason = Reason.HOLD_PODS_STARTING
            else:
                reason = Reason.HOLD_PANIC
        if reason is Reason.HOLD_PODS_STARTING:
            steps.append(account.Covered(current - ready))
        return wanted, reason

    def _delay_and_rates(
        self,
        now: float,
        wanted: int,
        current: int,
        ready: int,
        reason: Reason,
        steps: list[account.Step],
    ) -> tuple[int, Reason]:
        """Steps 6 and 7: hold a scale-down for the delay, then limit the step's size."""
        config = self.config
        proposed = wanted
        # 6. Scale-down delay: has demand stayed low for a whole delay?
        if self._delay is not None:
            self._delay.record(now, proposed)
            recent = self._delay.maximum(now)
            if recent is not None and proposed < current:
                held = min(current, int(recent))
                if held > proposed:
                    proposed, reason = held, Reason.SCALE_DOWN_DELAYED
                    steps.append(account.Delayed(held, config.scale_down_delay_seconds))

        # 7. Rates: how far one decision may go.
        up_limit = self._up_limit(current, ready)
        down_limit = min(current, arith.floor(ready / config.max_scale_down_rate))
        if proposed > up_limit:
            proposed, reason = up_limit, Reason.LIMITED_BY_RATE
            steps.append(
                account.RateLimited("maxScaleUpRate", config.max_scale_up_rate, up_limit, ready)
            )
        elif proposed < down_limit:
            proposed, reason = down_limit, Reason.LIMITED_BY_RATE
            down_rate = config.max_scale_down_rate
            steps.append(account.RateLimited("maxScaleDownRate", down_rate, down_limit, ready))
        return proposed, reason

    def _up_limit(self, current: int, ready: int) -> int:
        """Step 7's ceiling: the most one decision may scale up to (relative to ready)."""
        return max(current, arith.ceil(self.config.max_scale_up_rate * ready))

    def _within_band(self, total: float, ready: int) -> bool:
        """Is this demand of `ready` pods within 1 +/- tolerance of their target?"""
        ratio = total / (ready * self.config.target_occupancy)
        return abs(ratio - 1) <= self.config.tolerance + arith.EPSILON

    def _tick_wants(self, total: float, ready: int) -> int | None:
        """Pods this tick's demand wants when it is above the tolerance band; else None."""
        target = self.config.target_occupancy
        if total <= ready * target or self._within_band(total, ready):
            return None
        return arith.ceil(total / target)

    def _up_reason(self, by_occupancy: float, by_load: float, ready: int, current: int) -> Reason:
        """Which signal asks for the scale-up: occupancy, else throughput, else pressure."""
        if self._says_up(by_occupancy, ready, current):
            return Reason.SCALE_UP_OCCUPANCY
        if self._says_up(by_load, ready, current):
            return Reason.SCALE_UP_THROUGHPUT
        return Reason.SCALE_UP_PRESSURE

    def _says_up(self, total: float, ready: int, current: int) -> bool:
        """Would this demand alone (no pressure, missing pods like the others) scale up?"""
        outside = not self._within_band(total, ready)
        return outside and arith.ceil(total / self.config.target_occupancy) > current

    def _bounds(self, value: int, reason: Reason, steps: list[account.Step]) -> tuple[int, Reason]:
        """Step 9: clamp to [max(1, minReplicas), maxReplicas]."""
        config = self.config
        floor = max(1, config.min_replicas)
        if value < floor:
            steps.append(account.Raised(floor, config.min_replicas))
            return floor, Reason.LIMITED_BY_MIN
        if value > config.max_replicas:
            steps.append(account.Lowered(config.max_replicas))
            return config.max_replicas, Reason.LIMITED_BY_MAX
        return value, reason

    @staticmethod
    def _per_ready(total: float | None, ready: int) -> float | None:
        return None if total is None or ready == 0 else total / ready


def _made(
    measured: demand.Signal,
    current: int,
    desired: int,
    mode: Mode,
    reason: Reason,
    steps: tuple[account.Step, ...],
    wanted: int,
    *,
    stable: float | None = None,
    panic: float | None = None,
) -> Decision:
    """The decision, with what this tick measured (`stable`, `panic`: the windows per pod)."""
    return Decision(
        desired=desired,
        current=current,
        ready=measured.num_ready,
        starting=measured.num_starting,
        pending=measured.num_pending,
        mode=mode,
        reason=reason,
        steps=steps,
        wanted=wanted,
        occupancy=measured.occupancy,
        stable_occupancy=stable,
        panic_occupancy=panic,
        missing=measured.unreported,
        removal_order=measured.removal_order,
    )


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} = {value!r}, must be an integer, at least 0")
