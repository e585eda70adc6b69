"""The deployment as the load generator sees it, parsed from API documents. Pure.

The watcher fetches plain JSON (pods, the InferenceDeployment, its Deployment, Events, sidecar
reports); this module turns them into small frozen values: a `Pod` per engine pod with its
`Phase`, the resource's scaling state (`Resource`), the operator's scaling actions
(`ScalingAction`, from `status.scalingHistory`) and decisions (`Decision`, from Events), and one
`Snapshot` per poll. A document that is not what the API server sends raises `ViewError`
naming the field; nothing here trusts its input.

Times are unix seconds (floats), parsed from the API's RFC 3339 strings.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from kvscale import report

# The Event reasons the operator's autoscaler gives a replica change.
SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"


class ViewError(ValueError):
    """A document that does not have the shape the API server gives it; names the field."""


class Phase(enum.StrEnum):
    """Where an engine pod is, as far as serving goes."""

    PENDING = "pending"
    """Not scheduled yet, or no container has started."""
    STARTING = "starting"
    """Containers run, the pod is not Ready (vLLM loads for a minute or more on a CPU)."""
    READY = "ready"
    """Ready and has an IP: it may get requests."""
    TERMINATING = "terminating"
    """Being deleted: it gets no new requests (it may still finish the ones it has)."""


@dataclasses.dataclass(frozen=True)
class Pod:
    """One engine pod."""

    name: str
    phase: Phase
    ip: str | None
    created_at: float | None
    """metadata.creationTimestamp."""
    ready_since: float | None
    """When its Ready condition last became True; None unless ready."""


@dataclasses.dataclass(frozen=True)
class ScalingAction:
    """One replica change the autoscaler made (an entry of status.scalingHistory)."""

    time: float
    from_replicas: int
    to_replicas: int
    reason: str
    occupancy: float | None = None

    @property
    def up(self) -> bool:
        return self.to_replicas > self.from_replicas


@dataclasses.dataclass(frozen=True)
class Decision:
    """An Event the operator recorded about the InferenceDeployment."""

    key: str
    """Identifies the event and its repetition (uid and count): the same key is the same news."""
    time: float
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Resource:
    """The InferenceDeployment's scaling spec and status."""

    min_replicas: int
    max_replicas: int
    target_occupancy: float
    desired_replicas: int | None
    """status.desiredReplicas: what the operator wants (None until its autoscaler writes it)."""
    occupancy: float | None
    """status.occupancy: the operator's demand signal (KV demand over capacity, mean of ready)."""
    history: tuple[ScalingAction, ...]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One poll of the deployment: pods, their sidecars' reports and the operator's view."""

    time: float
    """Unix seconds when the poll began."""
    pods: tuple[Pod, ...]
    reports: Mapping[str, report.OccupancyReport]
    """By pod name, for ready pods whose sidecar answered with a valid report."""
    report_errors: Mapping[str, str]
    """By pod name, for ready pods whose report could not be had: why."""
    resource: Resource | None
    deployment_replicas: int | None
    """The engine Deployment's spec.replicas (what Kubernetes is asked to run)."""
    decisions: tuple[Decision, ...]

    def in_phase(self, phase: Phase) -> list[Pod]:
        return [pod for pod in self.pods if pod.phase is phase]

    @property
    def desired(self) -> int | None:
        """The operator's desired replicas, else the Deployment's, else None."""
        if self.resource is not None and self.resource.desired_replicas is not None:
            return self.resource.desired_replicas
        return self.deployment_replicas


def parse_time(value: object, field: str) -> float:
    """An RFC 3339 timestamp as unix seconds; ViewError naming `field` otherwise."""
    if not isinstance(value, str):
        raise ViewError(f"{field} = {value!r}: must be an RFC 3339 timestamp")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ViewError(f"{field} = {value!r}: must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise ViewError(f"{field} = {value!r}: has no time zone")
    return moment.timestamp()


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ViewError(f"{field}: must be an object, got {type(value).__name__}")
    return value


def _sequence(value: object, field: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ViewError(f"{field}: must be a list, got {type(value).__name__}")
    return value


def _optional_time(obj: Mapping[str, Any], key: str, field: str) -> float | None:
    value = obj.get(key)
    return None if value is None else parse_time(value, f"{field}.{key}")


def _integer(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ViewError(f"{field} = {value!r}: must be an integer >= 0")
    return value


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ViewError(f"{field} = {value!r}: must be a number")
    return float(value)


def pod_from_object(obj: object, where: str = "pod") -> Pod:
    """A Pod from its API document (a core/v1 Pod)."""
    pod = _mapping(obj, where)
    metadata = _mapping(pod.get("metadata"), f"{where}.metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ViewError(f"{where}.metadata.name = {name!r}: must be a non-empty string")
    where = f"pod {name}"
    spec = _mapping(pod.get("spec", {}), f"{where}.spec")
    status = _mapping(pod.get("status", {}), f"{where}.status")
    ip = status.get("podIP")
    if ip is not None and not isinstance(ip, str):
        raise ViewError(f"{where}.status.podIP = {ip!r}: must be a string")
    created = _optional_time(metadata, "creationTimestamp", f"{where}.metadata")
    ready_since = None
    for index, item in enumerate(_sequence(status.get("conditions", []), f"{where}.conditions")):
        condition = _mapping(item, f"{where}.status.conditions[{index}]")
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            ready_since = _optional_time(
                condition, "lastTransitionTime", f"{where}.status.conditions[{index}]"
            ) or (created or 0.0)
    started = any(
        isinstance(item, Mapping) and "running" in _mapping(item.get("state", {}), f"{where}.state")
        for item in _sequence(status.get("containerStatuses", []), f"{where}.containerStatuses")
    )
    if metadata.get("deletionTimestamp") is not None:
        phase = Phase.TERMINATING
    elif ready_since is not None and ip:
        phase = Phase.READY
    elif not spec.get("nodeName") or not started:
        phase = Phase.PENDING
    else:
        phase = Phase.STARTING
    return Pod(
        name=name,
        phase=phase,
        ip=ip or None,
        created_at=created,
        ready_since=ready_since if phase is Phase.READY else None,
    )


def pods_from_list(document: object) -> tuple[Pod, ...]:
    """The pods of a PodList document, oldest first (then by name): a display that adds new
    pods on the right and keeps the others where they were."""
    items = _sequence(_mapping(document, "pod list").get("items"), "pod list.items")
    pods = [pod_from_object(item, f"pod list.items[{index}]") for index, item in enumerate(items)]
    return tuple(sorted(pods, key=lambda pod: (pod.created_at or 0.0, pod.name)))


def _action(obj: object, field: str) -> ScalingAction:
    entry = _mapping(obj, field)
    reason = entry.get("reason", "")
    if not isinstance(reason, str):
        raise ViewError(f"{field}.reason = {reason!r}: must be a string")
    occupancy = entry.get("occupancy")
    return ScalingAction(
        time=parse_time(entry.get("time"), f"{field}.time"),
        from_replicas=_integer(entry.get("fromReplicas"), f"{field}.fromReplicas"),
        to_replicas=_integer(entry.get("toReplicas"), f"{field}.toReplicas"),
        reason=reason,
        occupancy=None if occupancy is None else _number(occupancy, f"{field}.occupancy"),
    )


def resource_from_object(obj: object) -> Resource:
    """The scaling spec and status of an InferenceDeployment document (defaults applied)."""
    resource = _mapping(obj, "inferencedeployment")
    spec = _mapping(resource.get("spec"), "inferencedeployment.spec")
    scaling = _mapping(spec.get("scaling", {}), "spec.scaling")
    status = _mapping(resource.get("status", {}), "inferencedeployment.status")
    desired = status.get("desiredReplicas")
    occupancy = status.get("occupancy")
    history = _sequence(status.get("scalingHistory", []), "status.scalingHistory")
    return Resource(
        min_replicas=_integer(scaling.get("minReplicas", 1), "spec.scaling.minReplicas"),
        max_replicas=_integer(scaling.get("maxReplicas", 4), "spec.scaling.maxReplicas"),
        target_occupancy=_number(
            scaling.get("targetOccupancy", 0.7), "spec.scaling.targetOccupancy"
        ),
        desired_replicas=None if desired is None else _integer(desired, "status.desiredReplicas"),
        occupancy=None if occupancy is None else _number(occupancy, "status.occupancy"),
        history=tuple(
            _action(item, f"status.scalingHistory[{index}]") for index, item in enumerate(history)
        ),
    )


def replicas_of_deployment(obj: object) -> int | None:
    """A Deployment document's spec.replicas (None when unset)."""
    spec = _mapping(_mapping(obj, "deployment").get("spec", {}), "deployment.spec")
    value = spec.get("replicas")
    return None if value is None else _integer(value, "deployment.spec.replicas")


def decisions_from_events(document: object, kind: str, name: str) -> tuple[Decision, ...]:
    """The Events of an EventList about the object `kind`/`name`, oldest first."""
    items = _sequence(_mapping(document, "event list").get("items"), "event list.items")
    found = []
    for index, item in enumerate(items):
        where = f"event list.items[{index}]"
        event = _mapping(item, where)
        regarding = _mapping(event.get("involvedObject", {}), f"{where}.involvedObject")
        if regarding.get("kind") != kind or regarding.get("name") != name:
            continue
        metadata = _mapping(event.get("metadata", {}), f"{where}.metadata")
        stamp = (
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
            or metadata.get("creationTimestamp")
        )
        reason, message = event.get("reason", ""), event.get("message", "")
        if not isinstance(reason, str) or not isinstance(message, str):
            raise ViewError(f"{where}: reason and message must be strings")
        count = event.get("count") or 1
        found.append(
            Decision(
                key=f"{metadata.get('uid') or metadata.get('name') or index}#{count}",
                time=parse_time(stamp, f"{where} time"),
                reason=reason,
                message=message,
            )
        )
    return tuple(sorted(found, key=lambda decision: (decision.time, decision.key)))
