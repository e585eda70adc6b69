"""Status conditions computed from the observed Deployment and pods."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kvscale.api import models
from kvscale_operator.reconciler import conditions

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=7)
UNSCHEDULABLE = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def pod(
    name: str,
    *,
    ready: bool = False,
    unschedulable: str | None = None,
    terminating: bool = False,
    trouble: str | None = None,
) -> conditions.PodView:
    return conditions.PodView(
        name=name,
        phase="Pending" if unschedulable else "Running",
        terminating=terminating,
        unschedulable=unschedulable,
        ready=ready,
        trouble=trouble,
    )


def deployment(
    ready: int, replicas: int, spec_replicas: int | None = None
) -> conditions.DeploymentView:
    return conditions.DeploymentView(
        replicas=replicas, ready_replicas=ready, spec_replicas=spec_replicas
    )


def by_type(found: list[models.Condition]) -> dict[str, models.Condition]:
    return {condition.type: condition for condition in found}


@pytest.mark.parametrize(
    ("inputs", "status", "reason", "message"),
    [
        (
            conditions.Inputs(generation=1, spec_error="spec.model.name: field required"),
            "False",
            "InvalidSpec",
            "spec.model.name: field required",
        ),
        (
            conditions.Inputs(generation=1, engine_problems=("first", "second")),
            "False",
            "EngineConfigInvalid",
            "the engine cannot run this spec, so it was not rolled out: first; second",
        ),
        (
            conditions.Inputs(generation=1, desired_replicas=1),
            "False",
            "DeploymentMissing",
            "the engine Deployment is not there yet",
        ),
        (
            conditions.Inputs(generation=1, deployment=deployment(0, 0), desired_replicas=0),
            "False",
            "ScaledToZero",
            "scaled to zero replicas",
        ),
        (
            conditions.Inputs(
                generation=1,
                deployment=deployment(0, 2),
                desired_replicas=2,
                pods=(
                    pod("b", trouble="container engine ErrImagePull: image x: unknown"),
                    pod("a"),
                ),
            ),
            "False",
            "NoReplicasReady",
            "0 of 2 replicas ready; pod b: container engine ErrImagePull: image x: unknown",
        ),
        (
            conditions.Inputs(generation=1, deployment=deployment(1, 3), desired_replicas=3),
            "True",
            "ReplicasPartiallyReady",
            "1 of 3 replicas ready",
        ),
        (
            conditions.Inputs(generation=1, deployment=deployment(2, 2), desired_replicas=2),
            "True",
            "AllReplicasReady",
            "2 of 2 replicas ready",
        ),
        (
            # Without a decision yet, the Deployment's own count is what is wanted.
            conditions.Inputs(generation=1, deployment=deployment(2, 2, spec_replicas=2)),
            "True",
            "AllReplicasReady",
            "2 of 2 replicas ready",
        ),
    ],
)
def test_ready_says_whether_the_engines_serve_and_why_not(
    inputs: conditions.Inputs, status: str, reason: str, message: str
) -> None:
    ready = by_type(conditions.evaluate(inputs))["Ready"]
    assert (ready.status.value, ready.reason, ready.message) == (status, reason, message)
    assert ready.observed_generation == 1


def test_a_refusal_longer_than_a_condition_may_hold_is_cut_not_raised() -> None:
    # The API server's refusal of a rendered Deployment quotes the offending values; a fuzzed
    # spec made one over metav1.Condition's 32,768 characters and the status write raised.
    problem = "spec.template.metadata.labels: Invalid value: " + "x" * 40_000
    ready = by_type(
        conditions.evaluate(conditions.Inputs(generation=3, engine_problems=(problem,)))
    )["Ready"]
    assert ready.reason == "EngineConfigInvalid"
    assert len(ready.message) == models.CONDITION_MESSAGE_LIMIT
    assert ready.message.startswith("the engine cannot run this spec")
    assert ready.message.endswith("xxx...")


def computed(status: str, reason: str = "R") -> models.Condition:
    return models.Condition(type="Ready", status=models.ConditionStatus(status), reason=reason)


def test_a_new_condition_gets_now_as_its_transition_time() -> None:
    (merged,) = conditions.merge([], [computed("True")], T0)
    assert merged.last_transition_time == "2026-01-02T03:04:05Z"


def test_transition_time_stays_while_the_status_stays_even_if_the_message_changes() -> None:
    (first,) = conditions.merge([], [computed("True", "A")], T0)
    (second,) = conditions.merge([first], [computed("True", "B")], T1)
    assert second.reason == "B"
    assert second.last_transition_time == first.last_transition_time


def test_transition_time_moves_when_the_status_flips() -> None:
    (first,) = conditions.merge([], [computed("True")], T0)
    (second,) = conditions.merge([first], [computed("False")], T1)
    assert second.last_transition_time == conditions.timestamp(T1)


def test_conditions_of_other_writers_are_kept_in_place() -> None:
    theirs = models.Condition(
        type="MetricsAvailable",
        status=models.ConditionStatus.TRUE,
        reason="Fresh",
        last_transition_time="2025-12-31T00:00:00Z",
    )
    (ours,) = conditions.merge([], [computed("True")], T0)
    merged = conditions.merge([theirs, ours], [computed("False")], T1)
    assert [condition.type for condition in merged] == ["MetricsAvailable", "Ready"]
    assert merged[0] == theirs
    assert merged[1].status is models.ConditionStatus.FALSE


def pod_object(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p-1"}, "status": status}


def test_pod_view_reads_the_scheduler_message() -> None:
    view = conditions.pod_view(
        pod_object(
            phase="Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": UNSCHEDULABLE,
                }
            ],
        )
    )
    assert view == conditions.PodView(
        name="p-1",
        phase="Pending",
        terminating=False,
        unschedulable=UNSCHEDULABLE,
        ready=False,
        trouble=None,
    )


def test_pod_view_reads_readiness_and_container_trouble() -> None:
    view = conditions.pod_view(
        {
            "metadata": {"name": "p-2", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
                "containerStatuses": [
                    {"name": "sidecar", "state": {"running": {}}},
                    {
                        "name": "engine",
                        "state": {"running": {}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                    },
                ],
            },
        }
    )
    assert view.ready is True
    assert view.terminating is True
    assert view.unschedulable is None
    assert view.trouble == "container engine restarted after it failed (last exit code 1)"


@pytest.mark.parametrize(
    ("state", "trouble"),
    [
        (
            {
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 2}},
            },
            "container engine CrashLoopBackOff: last exit code 2",
        ),
        (
            {"state": {"waiting": {"reason": "ErrImagePull", "message": "image x: not known"}}},
            "container engine ErrImagePull: image x: not known",
        ),
        ({"state": {"waiting": {}}}, "container engine Waiting"),
        ({"state": {"running": {}}, "lastState": {"terminated": {"exitCode": 0}}}, None),
    ],
)
def test_pod_trouble_is_stable_text_naming_the_container(
    state: dict[str, Any], trouble: str | None
) -> None:
    view = conditions.pod_view(pod_object(containerStatuses=[{"name": "engine", **state}]))
    assert view.trouble == trouble


def test_pod_view_treats_routine_waiting_as_no_trouble_and_tolerates_garbage() -> None:
    creating = conditions.pod_view(
        pod_object(
            containerStatuses=[{"name": "e", "state": {"waiting": {"reason": "ContainerCreating"}}}]
        )
    )
    assert creating.trouble is None
    garbage = conditions.pod_view({"metadata": None, "status": {"conditions": ["x", 3]}})
    assert garbage == conditions.PodView(
        name="", phase="Pending", terminating=False, unschedulable=None, ready=False, trouble=None
    )


def test_deployment_view_reads_counts_with_missing_fields_as_zero() -> None:
    assert conditions.deployment_view({"spec": {"replicas": 3}, "status": {}}) == deployment(
        0, 0, spec_replicas=3
    )
    assert conditions.deployment_view(
        {"spec": {}, "status": {"replicas": 2, "readyReplicas": 1}}
    ) == deployment(1, 2)


def test_parse_all_drops_entries_that_are_not_conditions() -> None:
    parsed = conditions.parse_all(
        [{"type": "Ready", "status": "True", "reason": "R"}, {"type": "Bad"}, "text"]
    )
    assert [condition.type for condition in parsed] == ["Ready"]
    assert conditions.parse_all(None) == []


def test_dump_all_writes_camel_case_without_nulls() -> None:
    (merged,) = conditions.merge([], [computed("True")], T0)
    assert conditions.dump_all([merged]) == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "R",
            "message": "",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }
    ]
