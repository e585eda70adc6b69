"""What one autoscaler tick means for the InferenceDeployment's status. Pure: `now` is an argument.

The autoscaler owns these status fields: `desiredReplicas`, `occupancy`, `lastScaleTime`,
`scalingHistory` (`OWNED_FIELDS`), and three condition types (`OWNED_TYPES`):

- ScalingActive: True (`Active`) while the decision works from fresh reports. False with the
  reason it does not: `Advisory` (spec.scaling.mode: the decision is published, not applied),
  `ManualReplicas` (spec.replicas is set: the count is a person's, see
  `kvscale_operator.autoscaler.autoscale`), `WaitingForReadyPods`, `NoFreshMetrics` (the size
  is held: missing data never scales down), `InvalidSpec`, `DeploymentMissing`, `ResourceConflict`
  (the Deployment of that name belongs to another controller), `ScaleFailed` (the API refused
  the scale).
- ScalingLimited: True when something keeps the count from what demand asks:
  `PodsUnschedulable` (pods wait for a node; the message carries the scheduler's own words,
  "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."), `AtMaxReplicas`,
  `AtMinReplicas` (as the HPA's TooManyReplicas / TooFewReplicas). False otherwise
  (`DesiredWithinRange`, or `ManualReplicas`).
- MetricsAvailable: `AllPodsReporting` (True); `SomePodsMissing` naming the pods and why,
  `NoReports`, `NoReadyPods` (False).

Messages say only what changes with the situation, not with every tick (no ages, no live
occupancy), so the status is rewritten when something happened, not once a second.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kvscale.api import models
from kvscale.scaling import decision
from kvscale_operator.reconciler import conditions

SCALING_ACTIVE = models.ConditionType.SCALING_ACTIVE.value
SCALING_LIMITED = models.ConditionType.SCALING_LIMITED.value
METRICS_AVAILABLE = models.ConditionType.METRICS_AVAILABLE.value
OWNED_TYPES = (SCALING_ACTIVE, SCALING_LIMITED, METRICS_AVAILABLE)
OWNED_FIELDS = (
    "desiredReplicas",
    "occupancy",
    "lastScaleTime",
    "scalingHistory",
    "conditions",
    # spec.slo only: what the autoscaler learned of the pods' capacity under the SLO.
    "capacity",
    "bindingResource",
    "leadTimeSeconds",
)
HISTORY_LIMIT = 10
"""scalingHistory keeps this many entries, newest last."""
OCCUPANCY_DIGITS = 3
NAMED_PODS = 5
"""Pods named in a message before "and N more"."""

_TRUE, _FALSE = models.ConditionStatus.TRUE, models.ConditionStatus.FALSE


@dataclasses.dataclass(frozen=True)
class Blocked:
    """Why the autoscaler could not decide this tick."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Tick:
    """Everything one tick saw and decided that the status reports."""

    generation: int | None
    blocked: Blocked | None = None
    """Set when nothing could be decided (invalid spec, no Deployment, not ours)."""
    decision: decision.Decision | None = None
    """The autoscaler's decision (in manual mode too: mode `manual`); None when blocked."""
    min_replicas: int = 1
    max_replicas: int = 1
    num_fresh: int = 0
    """Ready pods with a fresh report this tick."""
    num_polled: int = 0
    """Ready pods asked this tick (fewer than num_ready when sampling)."""
    unreported: tuple[tuple[str, str], ...] = ()
    """(pod, why) for each ready pod without a fresh report."""
    unschedulable: tuple[tuple[str, str], ...] = ()
    """(pod, the scheduler's message) for each live pod waiting for a node."""
    num_pods: int = 0
    """Engine pods that are not terminating."""
    scale_error: str | None = None
    """The API's answer when the scale failed."""
    advisory: bool = False
    """spec.scaling.mode is Advisory: the decision is published, never applied."""

    @property
    def manual_replicas(self) -> int | None:
        """spec.replicas when set."""
        found = self.decision
        return found.desired if found is not None and found.mode is decision.Mode.MANUAL else None

    @property
    def desired(self) -> int | None:
        """The replicas the autoscaler wants the Deployment at."""
        return None if self.decision is None else self.decision.desired

    @property
    def occupancy(self) -> float | None:
        """Mean occupancy of the ready pods with fresh reports."""
        return None if self.decision is None else self.decision.occupancy

    @property
    def num_ready(self) -> int:
        """Pods the decision counts as ready."""
        return 0 if self.decision is None else self.decision.ready


def _condition(
    tick: Tick, kind: str, status: models.ConditionStatus, reason: str, message: str
) -> models.Condition:
    return conditions.condition(kind, status, reason, message, tick.generation)


def _pods(count: int) -> str:
    return f"{count} pod" if count == 1 else f"{count} pods"


def _named(pairs: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{pod}: {why}" for pod, why in pairs[:NAMED_PODS])
    more = len(pairs) - NAMED_PODS
    return shown + (f"; and {more} more" if more > 0 else "")


def scaling_active(tick: Tick) -> models.Condition:
    found = _scaling_active(tick)
    if not tick.advisory or tick.blocked is not None:
        return found
    # Advisory: never True (nothing is scaled); a decision that could be made says Advisory,
    # one that could not keeps its reason (NoFreshMetrics, WaitingForReadyPods, ...).
    reason = "Advisory" if found.status is _TRUE else found.reason
    message = (
        "spec.scaling.mode is Advisory: desiredReplicas is advice, the Deployment's replicas "
        f"are left to their owner; {found.message}"
    )
    return _condition(tick, SCALING_ACTIVE, _FALSE, reason, message)


def _scaling_active(tick: Tick) -> models.Condition:
    kind = SCALING_ACTIVE
    if tick.blocked is not None:
        return _condition(tick, kind, _FALSE, tick.blocked.reason, tick.blocked.message)
    if tick.scale_error is not None:
        return _condition(tick, kind, _FALSE, "ScaleFailed", tick.scale_error)
    if tick.manual_replicas is not None:
        message = (
            f"spec.replicas is {tick.manual_replicas}, so the Deployment is held at it and "
            "occupancy only reported; remove spec.replicas to resume autoscaling"
        )
        return _condition(tick, kind, _FALSE, "ManualReplicas", message)
    found = tick.decision
    if found is None:
        return _condition(tick, kind, _FALSE, "NoDecision", "no decision yet")
    if found.mode is decision.Mode.HOLD:
        if found.reason is decision.Reason.HOLD_PODS_STARTING or found.ready == 0:
            message = f"no engine pod is ready yet; holding {found.desired} replicas"
            return _condition(tick, kind, _FALSE, "WaitingForReadyPods", message)
        message = (
            f"no fresh occupancy report from any ready pod; holding {found.desired} replicas "
            "(missing data never scales down)"
        )
        return _condition(tick, kind, _FALSE, "NoFreshMetrics", message)
    message = f"deciding from fresh occupancy reports ({found.mode.value} mode)"
    return _condition(tick, kind, _TRUE, "Active", message)


def scaling_limited(tick: Tick) -> models.Condition:
    kind = SCALING_LIMITED
    found = tick.decision
    at_max = found is not None and found.reason is decision.Reason.LIMITED_BY_MAX
    if tick.unschedulable:
        wanted = tick.desired if tick.desired is not None else tick.num_pods
        message = f"{len(tick.unschedulable)} of {wanted} replicas pending: "
        message += tick.unschedulable[0][1]
        if at_max:
            message += f"; and the autoscaler is at maxReplicas {tick.max_replicas}"
        return _condition(tick, kind, _TRUE, "PodsUnschedulable", message)
    if tick.manual_replicas is not None:
        message = f"spec.replicas sets the count ({tick.manual_replicas})"
        return _condition(tick, kind, _FALSE, "ManualReplicas", message)
    if found is not None and at_max:
        message = f"held at maxReplicas {tick.max_replicas}; occupancy asks for {found.wanted}"
        return _condition(tick, kind, _TRUE, "AtMaxReplicas", message)
    if found is not None and found.reason is decision.Reason.LIMITED_BY_MIN:
        held = f"minReplicas {tick.min_replicas}"
        if tick.min_replicas < 1:
            held = "1 replica (minReplicas 0: without a pod, no report could ask to scale up)"
        message = f"held at {held}; occupancy asks for {found.wanted}"
        return _condition(tick, kind, _TRUE, "AtMinReplicas", message)
    if tick.desired is None:
        message = f"all {_pods(tick.num_pods)} scheduled"
        return _condition(tick, kind, _FALSE, "PodsSchedulable", message)
    message = (
        f"desired {tick.desired} is within minReplicas {tick.min_replicas} and maxReplicas "
        f"{tick.max_replicas}"
    )
    return _condition(tick, kind, _FALSE, "DesiredWithinRange", message)


def metrics_available(tick: Tick) -> models.Condition:
    kind = METRICS_AVAILABLE
    ready = tick.num_ready
    if ready == 0:
        return _condition(tick, kind, _FALSE, "NoReadyPods", "no engine pod is ready to report")
    if not tick.unreported:
        if tick.num_polled < ready:
            message = f"fresh reports from the {tick.num_polled} of {ready} ready pods sampled"
        else:
            message = f"fresh reports from all {_pods(ready)} ready"
        return _condition(tick, kind, _TRUE, "AllPodsReporting", message)
    missing = len(tick.unreported)
    if tick.num_fresh == 0:
        message = f"no fresh report from any of the {_pods(ready)} ready: "
        return _condition(tick, kind, _FALSE, "NoReports", message + _named(tick.unreported))
    message = f"no fresh report from {missing} of {ready} ready pods: "
    return _condition(tick, kind, _FALSE, "SomePodsMissing", message + _named(tick.unreported))


def evaluate(tick: Tick) -> list[models.Condition]:
    """The autoscaler's conditions, without transition times (`conditions.merge` adds them).

    A blocked tick knows nothing about the metrics: MetricsAvailable is left as it was.
    """
    found = [scaling_active(tick), scaling_limited(tick)]
    if tick.blocked is None:
        found.append(metrics_available(tick))
    return found


def rounded(occupancy: float | None) -> float | None:
    return None if occupancy is None else round(occupancy, OCCUPANCY_DIGITS)


def history_entry(
    now: datetime.datetime,
    from_replicas: int,
    to_replicas: int,
    reason: str,
    occupancy: float | None,
) -> dict[str, Any]:
    """One scalingHistory entry as the API wants it."""
    entry = models.ScalingEvent(
        time=conditions.timestamp(now),
        from_replicas=from_replicas,
        to_replicas=to_replicas,
        reason=reason,
        occupancy=rounded(occupancy),
    )
    return entry.model_dump(mode="json", by_alias=True, exclude_none=True)


def fields(
    previous: Mapping[str, Any],
    tick: Tick,
    new_history: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> dict[str, Any]:
    """The autoscaler's status fields as they should be now, from the status as read."""
    merged = conditions.merge(conditions.parse_all(previous.get("conditions")), evaluate(tick), now)
    found: dict[str, Any] = {"conditions": conditions.dump_all(merged)}
    if tick.blocked is None:
        found["occupancy"] = rounded(tick.occupancy)
    if tick.desired is not None:
        found["desiredReplicas"] = tick.desired
    found.update(learned(tick))
    if new_history:
        history = [item for item in previous.get("scalingHistory") or [] if isinstance(item, dict)]
        history = [*history, *(dict(item) for item in new_history)][-HISTORY_LIMIT:]
        found["scalingHistory"] = history
        found["lastScaleTime"] = history[-1]["time"]
    return found


def learned(tick: Tick) -> dict[str, Any]:
    """spec.slo's status fields: learned capacity per resource, what binds, the lead time
    (rounded to 3 significant digits, so the status changes when the learning does)."""
    sized = None if tick.decision is None else tick.decision.sized
    if sized is None:
        return {}
    entries = [
        models.LearnedCapacity(
            resource=estimate.resource.value,
            per_pod=float(f"{estimate.capacity:.3g}"),
            confidence=round(estimate.confidence, 2),
            source=estimate.source.value,
            use=estimate.use.value,
            proven_per_pod=None if estimate.proven is None else float(f"{estimate.proven:.3g}"),
        ).model_dump(mode="json", by_alias=True, exclude_none=True)
        for estimate in sized.estimates
    ]
    found: dict[str, Any] = {"capacity": entries, "leadTimeSeconds": round(sized.lead_seconds)}
    if sized.binding is not None:
        found["bindingResource"] = sized.binding.value
    return found


Summary = tuple[object, ...]


def summary(tick: Tick) -> tuple[Summary, Summary]:
    """(what must be written at once when it changes, what may wait): the rate limit's view.

    Desired replicas and each condition's status and reason are written as soon as they
    change; occupancy and condition messages at most every few seconds.
    """
    evaluated = evaluate(tick)
    urgent = (
        tick.desired,
        tuple((item.type, item.status.value, item.reason) for item in evaluated),
    )
    minor = (rounded(tick.occupancy), tuple(item.message for item in evaluated), learned(tick))
    return urgent, minor
