"""The load generator's reading of API documents: pod phases, the resource's scaling state,
scaling history and Events; garbage is refused with the field named."""

from __future__ import annotations

from typing import Any

import pytest

from kvscale.loadgen import view

T0 = "2026-11-22T11:00:00Z"
T1 = "2026-11-22T11:00:30Z"


def _pod(
    *,
    node: str | None = "local-node-1",
    ip: str | None = "127.1.0.2",
    ready: bool = False,
    running: bool = True,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p", "creationTimestamp": T0}
    if deleting:
        metadata["deletionTimestamp"] = T1
    status: dict[str, Any] = {
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": T1}
        ],
        "containerStatuses": [
            {"name": "engine", "state": {"running": {}} if running else {"waiting": {}}}
        ],
    }
    if ip:
        status["podIP"] = ip
    spec = {"nodeName": node} if node else {}
    return {"metadata": metadata, "spec": spec, "status": status}


PHASE_TABLE = [
    pytest.param(_pod(node=None, ip=None, running=False), view.Phase.PENDING, id="unscheduled"),
    pytest.param(_pod(running=False), view.Phase.PENDING, id="scheduled-containers-waiting"),
    pytest.param(_pod(), view.Phase.STARTING, id="running-not-ready"),
    pytest.param(_pod(ready=True), view.Phase.READY, id="ready"),
    pytest.param(_pod(ready=True, ip=None), view.Phase.STARTING, id="ready-without-ip-is-not"),
    pytest.param(_pod(ready=True, deleting=True), view.Phase.TERMINATING, id="deleting-wins"),
]


@pytest.mark.parametrize(("document", "phase"), PHASE_TABLE)
def test_pod_phase_table(document: dict[str, Any], phase: view.Phase) -> None:
    pod = view.pod_from_object(document)
    assert pod.phase is phase
    assert pod.created_at == view.parse_time(T0, "t")
    assert pod.ready_since == (view.parse_time(T1, "t") if phase is view.Phase.READY else None)


def test_pod_list_is_oldest_first_then_by_name() -> None:
    old, young, twin = _pod(), _pod(), _pod()
    old["metadata"]["name"], young["metadata"]["name"], twin["metadata"]["name"] = "z", "a", "b"
    young["metadata"]["creationTimestamp"] = twin["metadata"]["creationTimestamp"] = T1
    found = view.pods_from_list({"items": [twin, young, old]})
    assert [p.name for p in found] == ["z", "a", "b"]


GARBAGE_TABLE = [
    pytest.param([], "pod: must be an object", id="not-an-object"),
    pytest.param({"metadata": {}}, "metadata.name", id="no-name"),
    pytest.param(
        {"metadata": {"name": "p", "creationTimestamp": "yesterday"}},
        "creationTimestamp",
        id="bad-time",
    ),
    pytest.param(
        {"metadata": {"name": "p"}, "status": {"podIP": 7}}, "status.podIP", id="ip-not-a-string"
    ),
    pytest.param(
        {"metadata": {"name": "p"}, "status": {"conditions": "Ready"}},
        "conditions",
        id="conditions-not-a-list",
    ),
]


@pytest.mark.parametrize(("document", "field"), GARBAGE_TABLE)
def test_garbage_pod_names_the_field(document: object, field: str) -> None:
    with pytest.raises(view.ViewError, match=field):
        view.pod_from_object(document)


def test_time_needs_a_zone() -> None:
    assert view.parse_time("2026-11-22T11:00:00+01:00", "t") == view.parse_time(
        "2026-11-22T10:00:00Z", "t"
    )
    with pytest.raises(view.ViewError, match="has no time zone"):
        view.parse_time("2026-11-22T11:00:00", "when")


def _resource(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": {"scaling": {"minReplicas": 1, "maxReplicas": 4, "targetOccupancy": 0.6}},
        "status": status,
    }


def test_resource_status_is_read() -> None:
    resource = view.resource_from_object(
        _resource(
            {
                "desiredReplicas": 3,
                "occupancy": 1.25,
                "scalingHistory": [
                    {
                        "time": T1,
                        "fromReplicas": 1,
                        "toReplicas": 3,
                        "reason": "scale_up_panic",
                        "occupancy": 2.1,
                    }
                ],
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Ready", "message": "ok"},
                    {
                        "type": "ScalingActive",
                        "status": "True",
                        "reason": "Active",
                        "message": "panic mode",
                    },
                ],
            }
        )
    )
    assert (resource.min_replicas, resource.max_replicas) == (1, 4)
    assert resource.target_occupancy == pytest.approx(0.6)
    assert (resource.desired_replicas, resource.occupancy) == (3, 1.25)
    assert resource.history == (
        view.ScalingAction(view.parse_time(T1, "t"), 1, 3, "scale_up_panic", 2.1),
    )
    assert resource.history[0].up


def test_resource_before_the_operator_wrote_status() -> None:
    resource = view.resource_from_object({"spec": {}})
    assert (resource.min_replicas, resource.max_replicas, resource.target_occupancy) == (1, 4, 0.7)
    assert (resource.desired_replicas, resource.occupancy, resource.history) == (None, None, ())


def test_bad_history_entry_names_the_field() -> None:
    with pytest.raises(view.ViewError, match=r"scalingHistory\[0\].toReplicas"):
        view.resource_from_object(
            _resource({"scalingHistory": [{"time": T0, "fromReplicas": 1, "toReplicas": -1}]})
        )


def test_deployment_replicas() -> None:
    assert view.replicas_of_deployment({"spec": {"replicas": 2}}) == 2
    assert view.replicas_of_deployment({"spec": {}}) is None
    with pytest.raises(view.ViewError, match=r"spec\.replicas"):
        view.replicas_of_deployment({"spec": {"replicas": "two"}})


def _event(
    name: str, reason: str, stamp: str, *, kind: str = "InferenceDeployment"
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"e-{reason}", "uid": f"uid-{reason}"},
        "involvedObject": {"kind": kind, "name": name},
        "reason": reason,
        "message": f"{reason} happened",
        "lastTimestamp": stamp,
        "count": 1,
    }


def test_events_about_the_resource_oldest_first() -> None:
    events = {
        "items": [
            _event("tiny", "ScaledDown", T1),
            _event("tiny", "ScaledUp", T0),
            _event("other", "ScaledUp", T0),
            _event("tiny", "Killing", T0, kind="Pod"),
        ]
    }
    found = view.decisions_from_events(events, "InferenceDeployment", "tiny")
    assert [(d.reason, d.key) for d in found] == [
        ("ScaledUp", "uid-ScaledUp#1"),
        ("ScaledDown", "uid-ScaledDown#1"),
    ]


def test_event_repeated_is_new_news() -> None:
    event = _event("tiny", "MetricsMissing", T0)
    again = dict(event, count=2, lastTimestamp=T1)
    first = view.decisions_from_events({"items": [event]}, "InferenceDeployment", "tiny")
    second = view.decisions_from_events({"items": [again]}, "InferenceDeployment", "tiny")
    assert first[0].key != second[0].key
    assert second[0].time == view.parse_time(T1, "t")
