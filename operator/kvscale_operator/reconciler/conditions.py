"""Status conditions from what the operator observes. Pure: `now` is an argument.

The reconciler owns one condition type:
- Ready: the engines serve (True while at least one replica is ready), or why not: the spec
  does not parse (InvalidSpec), the engine cannot run it (EngineConfigInvalid), no Deployment
  yet, scaled to zero, no ready replica (with the first container error seen, if any).

The other types (ScalingActive, ScalingLimited, MetricsAvailable) belong to the autoscale
loop (`outcome`); ScalingLimited there also reports pods the scheduler cannot place. `merge`
keeps the types a writer does not compute as they are, and the helpers below (`merge`,
`timestamp`, `parse_all`, `dump_all`) serve both writers. A condition's lastTransitionTime
changes only when its status flips.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kvscale.api import models

OWNED_TYPES = (models.ConditionType.READY.value,)

# Container waiting reasons that are part of a normal start, not worth reporting.
_ROUTINE_WAITING = frozenset({"ContainerCreating", "PodInitializing"})


@dataclasses.dataclass(frozen=True)
class PodView:
    """What the conditions need from one engine pod."""

    name: str
    phase: str
    terminating: bool  # deletionTimestamp is set: on its way out, counts for nothing
    unschedulable: str | None  # the scheduler's message while PodScheduled is False
    ready: bool
    trouble: str | None  # first container stuck waiting or terminated with an error


@dataclasses.dataclass(frozen=True)
class DeploymentView:
    """What the conditions need from the engine Deployment."""

    replicas: int  # pods that exist (status.replicas)
    ready_replicas: int
    spec_replicas: int | None


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything `evaluate` looks at."""

    generation: int | None
    spec_error: str | None = None  # the spec did not parse: what is wrong, naming the field
    engine_problems: tuple[str, ...] = ()  # from render.problems
    deployment: DeploymentView | None = None
    pods: tuple[PodView, ...] = ()
    desired_replicas: int | None = None  # None: the Deployment's spec.replicas


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)  # type: ignore[assignment]
    return obj


def _pod_condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in _get(pod, "status", "conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def _trouble(pod: Mapping[str, Any]) -> str | None:
    """The first container that is stuck or crashing, in a few stable words.

    Stable on purpose: the status is rewritten whenever this text changes, so it leaves out
    what moves on its own (CrashLoopBackOff's growing back-off, restart counts).
    """
    for status in _get(pod, "status", "containerStatuses") or []:
        if not isinstance(status, Mapping):
            continue
        name = status.get("name", "?")
        waiting = _get(status, "state", "waiting")
        terminated = _get(status, "lastState", "terminated")
        crashed = isinstance(terminated, Mapping) and terminated.get("exitCode", 0) != 0
        exit_code = f"last exit code {terminated.get('exitCode')}" if crashed else ""
        if isinstance(waiting, Mapping) and waiting.get("reason") not in _ROUTINE_WAITING:
            reason = waiting.get("reason") or "Waiting"
            detail = exit_code if reason == "CrashLoopBackOff" else waiting.get("message") or ""
            return f"container {name} {reason}" + (f": {detail}" if detail else "")
        if crashed:
            return f"container {name} restarted after it failed ({exit_code})"
    return None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """Reads a Pod as the API server returns it; missing fields mean "not yet"."""
    scheduled = _pod_condition(pod, "PodScheduled")
    unschedulable = None
    if scheduled is not None and scheduled.get("status") == "False":
        unschedulable = str(scheduled.get("message") or scheduled.get("reason") or "unschedulable")
    ready = _pod_condition(pod, "Ready")
    return PodView(
        name=str(_get(pod, "metadata", "name") or ""),
        phase=str(_get(pod, "status", "phase") or "Pending"),
        terminating=_get(pod, "metadata", "deletionTimestamp") is not None,
        unschedulable=unschedulable,
        ready=ready is not None and ready.get("status") == "True",
        trouble=_trouble(pod),
    )


def deployment_view(deployment: Mapping[str, Any]) -> DeploymentView:
    """Reads a Deployment as the API server returns it."""
    spec_replicas = _get(deployment, "spec", "replicas")
    return DeploymentView(
        replicas=int(_get(deployment, "status", "replicas") or 0),
        ready_replicas=int(_get(deployment, "status", "readyReplicas") or 0),
        spec_replicas=int(spec_replicas) if spec_replicas is not None else None,
    )


def condition(
    kind: str, status: models.ConditionStatus, reason: str, message: str, generation: int | None
) -> models.Condition:
    """One condition of the current `generation`, without a transition time (`merge` adds it).
    A message over metav1.Condition's limit is cut, so a long refusal still reaches the status
    instead of failing the status write."""
    limit = models.CONDITION_MESSAGE_LIMIT
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return models.Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def _condition(
    kind: str, status: models.ConditionStatus, reason: str, message: str, inputs: Inputs
) -> models.Condition:
    return condition(kind, status, reason, message, inputs.generation)


def _ready(inputs: Inputs) -> models.Condition:
    kind = models.ConditionType.READY.value
    true, false = models.ConditionStatus.TRUE, models.ConditionStatus.FALSE
    if inputs.spec_error is not None:
        return _condition(kind, false, "InvalidSpec", inputs.spec_error, inputs)
    if inputs.engine_problems:
        message = "the engine cannot run this spec, so it was not rolled out: " + "; ".join(
            inputs.engine_problems
        )
        return _condition(kind, false, "EngineConfigInvalid", message, inputs)
    if inputs.deployment is None:
        return _condition(
            kind, false, "DeploymentMissing", "the engine Deployment is not there yet", inputs
        )
    desired = inputs.desired_replicas
    if desired is None:
        desired = inputs.deployment.spec_replicas or 0
    ready = inputs.deployment.ready_replicas
    if desired == 0 and ready == 0:
        return _condition(kind, false, "ScaledToZero", "scaled to zero replicas", inputs)
    counted = f"{ready} of {desired} replicas ready"
    if ready == 0:
        troubles = sorted(
            (pod.name, pod.trouble) for pod in inputs.pods if pod.trouble and not pod.terminating
        )
        if troubles:
            counted += f"; pod {troubles[0][0]}: {troubles[0][1]}"
        return _condition(kind, false, "NoReplicasReady", counted, inputs)
    if ready < desired:
        return _condition(kind, true, "ReplicasPartiallyReady", counted, inputs)
    return _condition(kind, true, "AllReplicasReady", counted, inputs)


def evaluate(inputs: Inputs) -> list[models.Condition]:
    """The reconciler's conditions, without transition times (see `merge`)."""
    return [_ready(inputs)]


def timestamp(now: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    previous: Sequence[models.Condition],
    computed: Sequence[models.Condition],
    now: datetime.datetime,
) -> list[models.Condition]:
    """The new condition list: computed types replace theirs, the others stay untouched.

    A computed condition keeps the previous lastTransitionTime while its status is the same,
    and gets `now` when the status flips or the type is new. Order is stable: previous types
    in their order, then new ones.
    """
    by_type = {condition.type: condition for condition in previous}
    fresh: dict[str, models.Condition] = {}
    for condition in computed:
        before = by_type.get(condition.type)
        if before is not None and before.status == condition.status and before.last_transition_time:
            since = before.last_transition_time
        else:
            since = timestamp(now)
        fresh[condition.type] = condition.model_copy(update={"last_transition_time": since})
    merged = [fresh.pop(condition.type, condition) for condition in previous]
    return merged + list(fresh.values())


def parse_all(raw: Any) -> list[models.Condition]:
    """Conditions read from a status; entries that do not parse are dropped, not fatal."""
    parsed: list[models.Condition] = []
    for item in raw if isinstance(raw, list) else []:
        try:
            parsed.append(models.Condition.model_validate(item))
        except ValueError:
            continue
    return parsed


def dump_all(conditions: Sequence[models.Condition]) -> list[dict[str, Any]]:
    """Conditions as the API wants them (camelCase, no nulls)."""
    return [
        condition.model_dump(mode="json", by_alias=True, exclude_none=True)
        for condition in conditions
    ]
