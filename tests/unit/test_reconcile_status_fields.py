"""The replica count the reconciler asks for, and the status fields it writes."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kvscale.api import models
from kvscale_operator import conditions, replicas, status

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def spec(
    replica_count: int | None = None, low: int = 1, high: int = 4
) -> models.InferenceDeploymentSpec:
    body: dict[str, Any] = {
        "model": {"name": "m"},
        "scaling": {"minReplicas": low, "maxReplicas": high},
    }
    if replica_count is not None:
        body["replicas"] = replica_count
    return models.InferenceDeploymentSpec.model_validate(body)


@pytest.mark.parametrize(
    ("the_spec", "current", "last_desired", "expected"),
    [
        (spec(3), 1, None, 3),  # kubectl scale infd --replicas 3
        (spec(9, high=4), 1, None, 9),  # a person's number is not clamped
        (spec(0), 2, 2, 0),
        (spec(), 2, 1, 2),  # keep what the Deployment has (the autoscaler's)
        (spec(), None, None, 1),  # a new Deployment starts at minReplicas
        (spec(low=2), None, None, 2),
        (spec(), None, 3, 3),  # a recreated Deployment gets its last count back
        (spec(low=2), 1, None, 2),  # raised bounds take effect
        (spec(high=3), 6, None, 3),
    ],
)
def test_desired_replicas(
    the_spec: models.InferenceDeploymentSpec,
    current: int | None,
    last_desired: int | None,
    expected: int,
) -> None:
    assert replicas.desired(the_spec, current, last_desired) == expected


def inputs(ready: int = 1, desired: int | None = 2) -> conditions.Inputs:
    return conditions.Inputs(
        generation=5,
        deployment=conditions.DeploymentView(replicas=2, ready_replicas=ready, spec_replicas=2),
        desired_replicas=desired,
    )


def test_compute_writes_counts_selector_and_conditions() -> None:
    fields = status.compute({}, "llama", inputs(), NOW)
    assert {key: fields[key] for key in fields if key != "conditions"} == {
        "observedGeneration": 5,
        "replicas": 2,
        "readyReplicas": 1,
        "desiredReplicas": 2,
        "selector": "kvscale.dev/inference-deployment=llama",
    }
    assert [condition["type"] for condition in fields["conditions"]] == ["Ready", "ScalingLimited"]
    assert set(fields) <= set(status.OWNED_FIELDS)


def test_compute_leaves_out_what_it_does_not_know() -> None:
    fields = status.compute({}, "llama", conditions.Inputs(generation=1, spec_error="bad"), NOW)
    assert "desiredReplicas" not in fields
    assert fields["replicas"] == 0


def test_a_status_in_sync_needs_no_write_and_keeps_the_autoscalers_fields() -> None:
    previous: dict[str, Any] = {"occupancy": 0.42, "scalingHistory": [], "lastScaleTime": "x"}
    previous.update(status.compute(previous, "llama", inputs(), NOW))
    later = status.compute(previous, "llama", inputs(), NOW + datetime.timedelta(hours=1))
    assert status.changes(previous, later) == {}


def test_changes_hold_only_the_fields_that_moved() -> None:
    previous = status.compute({}, "llama", inputs(ready=2), NOW)
    later = status.compute(previous, "llama", inputs(ready=1), NOW)
    # Ready stays True (1 of 2): the message changes, the transition time does not.
    assert set(status.changes(previous, later)) == {"readyReplicas", "conditions"}
