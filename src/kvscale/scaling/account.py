"""What each step of a scaling decision found, as values, and those values in words. Pure.

`kvscale.scaling.decision` fills one record per step that mattered into `Decision.steps`; the
words a person reads (`Decision.message`, and through it Events, status and logs) are made
here, from the records, so the decision's arithmetic builds no prose and a reader of a
decision can look at its numbers without parsing a message.
"""

from __future__ import annotations

import dataclasses
import enum

from kvscale.scaling import demand


def pods(count: int) -> str:
    """ "1 pod", "2 pods"."""
    return f"{count} pod" if count == 1 else f"{count} pods"


def hundredths(value: float) -> str:
    """`value` to two decimals, where a float residue just below zero reads "0.00", not "-0.00".

    A window's running sum of zeros can end at -1e-17 after evictions (`window.Average`); a
    reason that says an idle fleet's demand is "-0.00" reads like a bug in the sign.
    """
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def _named(missing: tuple[demand.Reading, ...]) -> str:
    """The unreported ready pods and why, briefly (at most three named)."""
    named = ", ".join(f"{reading.pod}: {reading.detail}" for reading in missing[:3])
    more = len(missing) - 3
    return named + (f", and {more} more" if more > 0 else "")


class Gap(enum.StrEnum):
    """Why there is nothing to decide on (step 2)."""

    PODS_STARTING = "pods_starting"
    NO_READY_POD = "no_ready_pod"
    NO_FRESH_REPORT = "no_fresh_report"
    NO_REPORT = "no_report"
    NOT_POLLED = "not_polled"


@dataclasses.dataclass(frozen=True)
class Held:
    """Step 2: nothing to decide on, the count stays."""

    gap: Gap
    current: int
    on_the_way: int
    missing: tuple[demand.Reading, ...]

    def words(self) -> str:
        why = {
            Gap.PODS_STARTING: f"no ready pod yet, {pods(self.on_the_way)} starting or pending",
            Gap.NO_READY_POD: "no ready pod",
            Gap.NO_FRESH_REPORT: f"no fresh report: {_named(self.missing)}",
            Gap.NO_REPORT: f"no report from any ready pod: {_named(self.missing)}",
            Gap.NOT_POLLED: "no ready pod was polled this tick",
        }[self.gap]
        return f"{why}; keeping {self.current}"


@dataclasses.dataclass(frozen=True)
class Level:
    """A demand per ready pod against the target (this tick's, or the stable window's)."""

    per_pod: float
    target: float
    ready: int
    current: int
    pressured: int
    """Ready pods under pressure (queue or preemptions), counted as full."""

    def words(self) -> str:
        pressure = ""
        if self.pressured:
            pressure = (
                f", {self.pressured} under pressure from queue or preemptions, counted as full"
            )
        return (
            f"{hundredths(self.per_pod)} per ready pod vs target {self.target:.2f} "
            f"({pods(self.ready)} ready of {self.current}{pressure})"
        )


@dataclasses.dataclass(frozen=True)
class TickUp:
    """Step 5: this tick's demand is above the band and wants more pods."""

    level: Level
    wanted: int
    held_seconds: float | None = None
    """SLO mode: the level is the lowest of this many seconds of ticks (a level the demand
    held, not one tick's burst); None: this tick's own."""

    def words(self) -> str:
        if self.held_seconds is None:
            return f"this tick's occupancy {self.level.words()}: {pods(self.wanted)} wanted"
        return (
            f"occupancy held over the last {self.held_seconds:g} s {self.level.words()}: "
            f"{pods(self.wanted)} wanted"
        )


@dataclasses.dataclass(frozen=True)
class Within:
    """Step 5: the stable window is within the tolerance band."""

    level: Level
    tolerance: float

    def words(self) -> str:
        return f"stable occupancy {self.level.words()} is within {self.tolerance:.0%} of the target"


@dataclasses.dataclass(frozen=True)
class Stable:
    """Step 5: the stable window, outside the band, wants this many pods."""

    level: Level
    wanted: int

    def words(self) -> str:
        return f"stable occupancy {self.level.words()}: {pods(self.wanted)} wanted"


@dataclasses.dataclass(frozen=True)
class Panicking:
    """Step 5 in panic: what the panic window wants; no scale-down."""

    window_seconds: float
    wanted: int
    times_ready: float
    """The panic window's demand in pods, over the ready pods."""
    stable_window_seconds: float

    def words(self) -> str:
        return (
            f"panic: the {self.window_seconds:g} s window wants {pods(self.wanted)}, "
            f"{self.times_ready:.1f}x the ready; no scale-down until "
            f"{self.stable_window_seconds:g} s pass without a burst"
        )


@dataclasses.dataclass(frozen=True)
class Covered:
    """Step 5: the pods starting or pending already cover what is wanted."""

    on_the_way: int

    def words(self) -> str:
        return f"already covered by the {pods(self.on_the_way)} on the way"


@dataclasses.dataclass(frozen=True)
class Delayed:
    """Step 6: a scale-down held to the most wanted within the delay."""

    held: int
    delay_seconds: float

    def words(self) -> str:
        return f"scale-down delayed: {self.held} wanted within the last {self.delay_seconds:g} s"


@dataclasses.dataclass(frozen=True)
class RateLimited:
    """Step 7: held to the maximum scale-up or scale-down rate."""

    setting: str
    """maxScaleUpRate or maxScaleDownRate."""
    rate: float
    limit: int
    ready: int

    def words(self) -> str:
        return f"limited by {self.setting} {self.rate:g} to {self.limit} ({pods(self.ready)} ready)"


@dataclasses.dataclass(frozen=True)
class Unreported:
    """Step 8: ready pods without a fresh report; `vetoed` when they stopped a scale-down."""

    missing: tuple[demand.Reading, ...]
    vetoed: bool

    def words(self) -> str:
        if self.vetoed:
            return f"no scale-down while a ready pod has no fresh report ({_named(self.missing)})"
        return f"counted as full: {_named(self.missing)}"


@dataclasses.dataclass(frozen=True)
class Raised:
    """Step 9: raised to the floor, max(1, minReplicas)."""

    floor: int
    min_replicas: int

    def words(self) -> str:
        why = f"minReplicas {self.min_replicas}"
        if self.min_replicas < 1:
            why += " (the autoscaler keeps 1: without pods, no report can ask to scale up)"
        return f"raised to {self.floor} by {why}"


@dataclasses.dataclass(frozen=True)
class Lowered:
    """Step 9: lowered to maxReplicas."""

    max_replicas: int

    def words(self) -> str:
        return f"lowered to {self.max_replicas} by maxReplicas"


@dataclasses.dataclass(frozen=True)
class Manual:
    """spec.replicas is set: the count is a person's."""

    count: int

    def words(self) -> str:
        return f"spec.replicas is {self.count}"


@dataclasses.dataclass(frozen=True)
class Sized:
    """SLO mode: the targets the learned capacity set for this tick, and what binds."""

    kv_target: float
    kv_source: str
    tokens_target: float | None
    tokens_source: str | None
    binding: str | None
    """"KV cache" or "compute": the resource whose target needs the most pods."""

    def words(self) -> str:
        parts = [f"KV target {self.kv_target:.2f} ({self.kv_source})"]
        if self.tokens_target is not None:
            parts.append(f"{self.tokens_target:,.0f} tokens/s per pod ({self.tokens_source})")
        binds = f"; {self.binding} binds" if self.binding else ""
        return f"sized to the SLO: {', '.join(parts)}{binds}"


@dataclasses.dataclass(frozen=True)
class Guarded:
    """SLO mode: a scale-down cut short so the survivors carry the load (N/(N-1))."""

    wanted: int
    allowed: int
    resource: str | None
    """The resource that limits it; None when no load has been proven to meet the SLO."""
    headroom: float
    """The share of their capacity the pods that stay keep free."""

    def words(self) -> str:
        if self.resource is None:
            return (
                f"scale-down to {self.wanted} refused: no load has been proven to meet the "
                f"SLO yet, so {self.allowed} stay"
            )
        return (
            f"scale-down to {self.wanted} limited to {self.allowed}: the pods that stay must "
            f"carry the fleet's highest {self.resource} load of the stable window with "
            f"{self.headroom:.0%} of their capacity to spare"
        )


@dataclasses.dataclass(frozen=True)
class StartingNeeded:
    """SLO mode: pods still starting are not removed while the ready ones run above target."""

    starting: int
    per_pod: float
    target: float

    def words(self) -> str:
        return (
            f"{pods(self.starting)} starting kept: the ready pods run at {self.per_pod:.2f} "
            f"against target {self.target:.2f}"
        )


@dataclasses.dataclass(frozen=True)
class Paced:
    """SLO mode: a scale-down waits until the stable window has seen the last one's fleet."""

    wanted: int
    since_last: float
    pace: float

    def words(self) -> str:
        return (
            f"scale-down to {self.wanted} waits: the last was {self.since_last:.0f} s ago, and "
            f"the stable window ({self.pace:.0f} s) must see the smaller fleet first"
        )


@dataclasses.dataclass(frozen=True)
class UnderPressure:
    """SLO mode: no scale-down while pods have a queue or preempt."""

    pressured: int

    def words(self) -> str:
        return f"no scale-down: {pods(self.pressured)} under pressure from queue or preemptions"


@dataclasses.dataclass(frozen=True)
class Ahead:
    """SLO mode: pods asked for ahead of a ramp, growth x start-up time."""

    pods: int
    growth_per_second: float
    lead_seconds: float

    def words(self) -> str:
        return (
            f"{pods(self.pods)} more ahead of the ramp (demand growing "
            f"{self.growth_per_second:.3f} pods/s, pods take {self.lead_seconds:.0f} s to start)"
        )


Step = (
    Held
    | TickUp
    | Within
    | Stable
    | Panicking
    | Covered
    | Delayed
    | RateLimited
    | Unreported
    | Raised
    | Lowered
    | Manual
    | Sized
    | Guarded
    | StartingNeeded
    | Paced
    | UnderPressure
    | Ahead
)
