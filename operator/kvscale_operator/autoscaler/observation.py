"""Engine pods as the scaling decision sees them: phase, readiness, annotations. Pure.

Pod objects as the API server returns them become `Pod`s; `kvscale.adapter` then pairs them
with their sidecars' reports into `kvscale.scaling.demand.Observation`s (the same adapter
`kvscale simulate` runs). `kvscale.scaling.demand`'s docstring lists what the decision
expects; the rules here:

- Phase. `terminating` when the pod has a deletionTimestamp, or has Failed or Succeeded (an
  evicted pod stays until it is collected, and serves nothing); `ready` when its Ready
  condition is True; `pending` while it is not scheduled or none of its containers runs;
  `starting` otherwise.
- A pod that was ready at an earlier tick and is not ready now, but is not terminating either,
  stays `ready` for the decision: its engine or its sidecar crashed or stopped answering, and
  its load is unknown, not zero. The decision then counts it as unreported (saturated for
  scale-up, and no scale-down while it lasts) until a fresh report says otherwise, instead of
  treating it as capacity on the way and its load as gone. A pod that never was ready (still
  loading its model, or crash-looping at start) is capacity on the way, never "saturated",
  so a broken rollout cannot make the autoscaler buy pods. The loop remembers which pods were
  ready (`Memory`) and marks each one once with the annotation `READY_ONCE_ANNOTATION`, so a
  restarted operator still knows.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from kvscale.scaling import demand

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
READY_ONCE_ANNOTATION = "kvscale.dev/ready-once"
"""Set by the autoscaler on an engine pod the first time it sees it ready (value: when)."""
_GONE_PHASES = frozenset({"Failed", "Succeeded"})


# Pods arrive as plain dicts (JSON); `dict` checks are several times cheaper than `Mapping`
# ones, which matters at thousands of pods per tick.


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _condition(pod: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in _get(pod, "status", "conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


@dataclasses.dataclass(frozen=True)
class Pod:
    """What the autoscaler needs from one engine pod."""

    name: str
    uid: str
    ip: str | None
    """status.podIP; None until the pod has one."""
    phase: demand.Phase
    """The phase the decision sees (see the module docstring)."""
    ready: bool
    """The Ready condition is True now."""
    unschedulable: str | None
    """The scheduler's message while PodScheduled is False."""
    deletion_cost: str | None
    """The pod-deletion-cost annotation as it is now."""
    marked_ready: bool = False
    """It carries `READY_ONCE_ANNOTATION`."""
    created_at: float | None = None
    """metadata.creationTimestamp, epoch seconds; None when absent or unreadable."""
    ready_since: float | None = None
    """When the Ready condition became True (its lastTransitionTime), epoch seconds; None while
    not ready or when unreadable. Kubernetes timestamps have whole seconds."""

    @property
    def lost(self) -> bool:
        """Counted as ready by the decision, but not ready now (see the module docstring)."""
        return self.phase is demand.Phase.READY and not self.ready


def read_pod(obj: Mapping[str, Any], was_ready: bool) -> Pod:
    """One Pod object as the API server returns it; missing fields mean "not yet"."""
    metadata = obj.get("metadata") or {}
    ready_condition = _condition(obj, "Ready")
    ready = ready_condition is not None and ready_condition.get("status") == "True"
    scheduled = _condition(obj, "PodScheduled")
    unschedulable = None
    if scheduled is not None and scheduled.get("status") == "False":
        unschedulable = str(scheduled.get("message") or scheduled.get("reason") or "unschedulable")
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    marked = READY_ONCE_ANNOTATION in annotations
    running = any(
        isinstance(_get(status, "state", "running"), dict)
        for status in _get(obj, "status", "containerStatuses") or []
    )
    if metadata.get("deletionTimestamp") or _get(obj, "status", "phase") in _GONE_PHASES:
        phase = demand.Phase.TERMINATING
    elif ready or was_ready or marked:
        phase = demand.Phase.READY
    elif not (scheduled is not None and scheduled.get("status") == "True") or not running:
        phase = demand.Phase.PENDING
    else:
        phase = demand.Phase.STARTING
    cost = annotations.get(DELETION_COST_ANNOTATION)
    ip = _get(obj, "status", "podIP")
    return Pod(
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or metadata.get("name") or ""),
        ip=str(ip) if ip else None,
        phase=phase,
        ready=ready,
        unschedulable=unschedulable,
        deletion_cost=str(cost) if cost is not None else None,
        marked_ready=marked,
        created_at=_epoch(metadata.get("creationTimestamp")),
        ready_since=_epoch(ready_condition.get("lastTransitionTime"))
        if ready_condition and ready
        else None,
    )


def _epoch(text: object) -> float | None:
    """An RFC 3339 timestamp as the API server writes it, in epoch seconds; None if not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


class Memory:
    """Which pods have been ready while this loop has watched them (by uid)."""

    def __init__(self) -> None:
        self._ready: set[str] = set()

    def was_ready(self, uid: str) -> bool:
        return uid in self._ready

    def update(self, pods: Iterable[Pod]) -> None:
        """Remember the pods ready now; forget pods that are gone or terminating."""
        present = {pod.uid for pod in pods if pod.phase is not demand.Phase.TERMINATING}
        now_ready = {pod.uid for pod in pods if pod.ready}
        self._ready = (self._ready & present) | (now_ready & present)
