"""A pod's status computed from its containers' states, the way kubelet computes it. Pure.

`render` takes a `PodView` (what the agent knows: container states, IPs, start time), the
status the API server holds (for condition transition times and conditions other components
own) and `now`, and returns the status to write. It is deterministic: `now` only enters as the
transition time of a condition whose status changes, so rendering twice without a change gives
equal results and the agent writes only when something changed.

Phase follows kubelet's `getPhase`: Pending while initializing or while any container has never
started; Running while any container runs (or, under restartPolicy Always or OnFailure, waits to
be restarted); Succeeded when every container exited 0 and none will restart; Failed when one
exited non-zero and none will restart (or an init container failed under Never). A terminal
phase never changes again.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import TypeAlias

TERMINAL_PHASES = ("Succeeded", "Failed")
# Conditions this agent owns, in the order kubelet lists them. Others (PodScheduled from the
# scheduler, DisruptionTarget from controllers, readiness gates) are left to their owners.
OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


@dataclasses.dataclass(frozen=True)
class Waiting:
    """Not running: not started yet, failed to start, or waiting out a crash-loop backoff."""

    reason: str
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Running:
    started_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Terminated:
    """Exited. `exit_code` is 128 + the signal for a process killed by one, as runtimes do."""

    exit_code: int
    reason: str
    finished_at: datetime.datetime
    started_at: datetime.datetime | None = None
    message: str = ""


State: TypeAlias = Waiting | Running | Terminated


@dataclasses.dataclass(frozen=True)
class ContainerView:
    """What the status says about one container.

    started: the startup probe passed (or there is none) and the container is running.
    ready: started, and the readiness probe passes (or there is none).
    sidecar: an init container with restartPolicy Always (a native sidecar).
    """

    name: str
    image: str
    state: State
    last_state: Terminated | None = None
    restart_count: int = 0
    started: bool = False
    ready: bool = False
    container_id: str = ""
    sidecar: bool = False


@dataclasses.dataclass(frozen=True)
class PodView:
    """What the agent knows about a pod; the input of `phase` and `render`.

    reason, message: pod-level explanation (the agent cannot run the pod, or stopped it).
    interrupted: the agent's own shutdown stopped the containers; a pod that does not restart
    them (policy Never or OnFailure) cannot carry on, so it is Failed, as kubelet's graceful
    node shutdown does; one with policy Always is restarted when the agent is back.
    """

    restart_policy: str
    containers: tuple[ContainerView, ...]
    init_containers: tuple[ContainerView, ...] = ()
    pod_ip: str | None = None
    host_ip: str | None = None
    start_time: datetime.datetime | None = None
    readiness_gates: tuple[str, ...] = ()
    reason: str = ""
    message: str = ""
    interrupted: bool = False


def rfc3339(moment: datetime.datetime) -> str:
    """A timestamp as the API server writes one (`metav1.Time`: seconds, UTC)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime.datetime | None:
    """An RFC 3339 timestamp from the API, or None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


# -- phase ---------------------------------------------------------------------------------


def _init_done(container: ContainerView) -> bool:
    if container.sidecar:
        # A sidecar counts once it has started; restarting later does not undo initialization.
        return container.started or container.restart_count > 0
    return isinstance(container.state, Terminated) and container.state.exit_code == 0


def _init_failed(container: ContainerView, restart_policy: str) -> bool:
    return (
        not container.sidecar
        and restart_policy == "Never"
        and isinstance(container.state, Terminated)
        and container.state.exit_code != 0
    )


def initialized(view: PodView) -> bool:
    return all(_init_done(container) for container in view.init_containers)


def phase(view: PodView, previous_phase: str | None = None) -> str:
    """The pod's phase, by kubelet's rules (see the module docstring)."""
    if previous_phase in TERMINAL_PHASES:
        return previous_phase
    if view.interrupted and view.restart_policy != "Always":
        return "Failed"
    if any(_init_failed(c, view.restart_policy) for c in view.init_containers):
        return "Failed"
    if not initialized(view):
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for container in view.containers:
        state = container.state
        if isinstance(state, Running):
            running += 1
        elif isinstance(state, Terminated):
            stopped += 1
            succeeded += state.exit_code == 0
        elif container.last_state is not None:
            stopped += 1  # waiting to be restarted
        else:
            waiting += 1
    if waiting > 0:
        return "Pending"
    if running > 0:
        return "Running"
    if stopped > 0:
        if view.restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if view.restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


# -- conditions ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


def _names(containers: Sequence[ContainerView]) -> str:
    return "[" + " ".join(container.name for container in containers) + "]"


def _conditions(view: PodView, pod_phase: str, others: Mapping[str, str]) -> list[_Condition]:
    result = [_Condition("PodReadyToStartContainers", view.pod_ip is not None)]
    pending_init = [c for c in view.init_containers if not _init_done(c)]
    if pending_init and pod_phase not in TERMINAL_PHASES:
        result.append(
            _Condition(
                "Initialized",
                False,
                "ContainersNotInitialized",
                f"containers with incomplete status: {_names(pending_init)}",
            )
        )
    elif pending_init:
        result.append(_Condition("Initialized", False, "PodCompleted"))
    else:
        result.append(_Condition("Initialized", True))
    unready = [c for c in view.containers if not c.ready]
    unready_sidecars = [c for c in view.init_containers if c.sidecar and not c.ready]
    if pod_phase in TERMINAL_PHASES:
        containers_ready = _Condition("ContainersReady", False, "PodCompleted")
    elif unready or unready_sidecars:
        containers_ready = _Condition(
            "ContainersReady",
            False,
            "ContainersNotReady",
            f"containers with unready status: {_names([*unready_sidecars, *unready])}",
        )
    else:
        containers_ready = _Condition("ContainersReady", True)
    result.append(containers_ready)
    gates_unready = [gate for gate in view.readiness_gates if others.get(gate) != "True"]
    if not containers_ready.status:
        ready = dataclasses.replace(containers_ready, type="Ready")
    elif gates_unready:
        ready = _Condition(
            "Ready",
            False,
            "ReadinessGatesNotReady",
            "the status of pod readiness gates is not true: " + ", ".join(gates_unready),
        )
    else:
        ready = _Condition("Ready", True)
    result.append(ready)
    return result


# -- rendering -----------------------------------------------------------------------------


def _state_json(state: State) -> dict[str, object]:
    if isinstance(state, Waiting):
        waiting: dict[str, object] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": rfc3339(state.started_at)}}
    terminated: dict[str, object] = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "finishedAt": rfc3339(state.finished_at),
    }
    if state.started_at is not None:
        terminated["startedAt"] = rfc3339(state.started_at)
    if state.message:
        terminated["message"] = state.message
    return {"terminated": terminated}


def container_json(container: ContainerView) -> dict[str, object]:
    """One entry of `containerStatuses` or `initContainerStatuses`."""
    entry: dict[str, object] = {
        "name": container.name,
        "image": container.image,
        "imageID": container.image,
        "ready": container.ready,
        "restartCount": container.restart_count,
        "started": container.started,
        "state": _state_json(container.state),
        "lastState": {} if container.last_state is None else _state_json(container.last_state),
    }
    if container.container_id:
        entry["containerID"] = container.container_id
    return entry


def _condition_list(status: Mapping[str, object]) -> list[Mapping[str, object]]:
    raw = status.get("conditions")
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, Mapping) and isinstance(item.get("type"), str)]


def render(
    view: PodView, previous: Mapping[str, object], now: datetime.datetime
) -> dict[str, object]:
    """The status to write (the owned fields; a strategic merge patch leaves the rest).

    previous: the pod's status on the API server (its phase, its conditions).
    """
    previous_phase = previous.get("phase")
    pod_phase = phase(view, previous_phase if isinstance(previous_phase, str) else None)
    earlier = {str(item["type"]): item for item in _condition_list(previous)}
    others = {name: str(item.get("status")) for name, item in earlier.items()}
    conditions: list[dict[str, object]] = []
    for condition in _conditions(view, pod_phase, others):
        status = "True" if condition.status else "False"
        before = earlier.get(condition.type)
        if (
            before is not None
            and before.get("status") == status
            and before.get("lastTransitionTime")
        ):
            since = str(before["lastTransitionTime"])
        else:
            since = rfc3339(now)
        entry: dict[str, object] = {
            "type": condition.type,
            "status": status,
            "lastTransitionTime": since,
        }
        if condition.reason:
            entry["reason"] = condition.reason
        if condition.message:
            entry["message"] = condition.message
        conditions.append(entry)
    result: dict[str, object] = {
        "phase": pod_phase,
        "conditions": conditions,
        "containerStatuses": [container_json(c) for c in view.containers],
    }
    if view.init_containers:
        result["initContainerStatuses"] = [container_json(c) for c in view.init_containers]
    if view.host_ip is not None:
        result["hostIP"] = view.host_ip
        result["hostIPs"] = [{"ip": view.host_ip}]
    if view.pod_ip is not None:
        result["podIP"] = view.pod_ip
        result["podIPs"] = [{"ip": view.pod_ip}]
    if view.start_time is not None:
        result["startTime"] = rfc3339(view.start_time)
    if view.reason:
        result["reason"] = view.reason
    if view.message:
        result["message"] = view.message
    return result


# -- reading back what an earlier agent wrote ----------------------------------------------


def _parse_state(raw: object) -> State | None:
    if not isinstance(raw, Mapping):
        return None
    running = raw.get("running")
    if isinstance(running, Mapping):
        started = parse_time(running.get("startedAt"))
        return None if started is None else Running(started_at=started)
    terminated = raw.get("terminated")
    if isinstance(terminated, Mapping):
        finished = parse_time(terminated.get("finishedAt"))
        code = terminated.get("exitCode")
        if finished is None or not isinstance(code, int):
            return None
        return Terminated(
            exit_code=code,
            reason=str(terminated.get("reason") or ""),
            finished_at=finished,
            started_at=parse_time(terminated.get("startedAt")),
            message=str(terminated.get("message") or ""),
        )
    waiting = raw.get("waiting")
    if isinstance(waiting, Mapping):
        return Waiting(
            reason=str(waiting.get("reason") or ""), message=str(waiting.get("message") or "")
        )
    return None


def previous_containers(
    status: Mapping[str, object], field: str = "containerStatuses"
) -> dict[str, ContainerView]:
    """The container statuses the API server holds, by name, as views. Entries that do not
    parse are left out: the agent then treats that container as never started."""
    raw = status.get(field)
    result: dict[str, ContainerView] = {}
    if not isinstance(raw, list):
        return result
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        state = _parse_state(item.get("state"))
        if state is None:
            continue
        last = _parse_state(item.get("lastState"))
        count = item.get("restartCount")
        name = str(item["name"])
        result[name] = ContainerView(
            name=name,
            image=str(item.get("image") or ""),
            state=state,
            last_state=last if isinstance(last, Terminated) else None,
            restart_count=count if isinstance(count, int) and count >= 0 else 0,
            started=item.get("started") is True,
            ready=item.get("ready") is True,
            container_id=str(item.get("containerID") or ""),
        )
    return result
