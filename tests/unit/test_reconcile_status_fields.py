"""The replica count the reconciler asks for, and the status fields it writes."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kvscale.api import models
from kvscale_operator.reconciler import conditions, replicas, status

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


def advisory(of: models.InferenceDeploymentSpec) -> models.InferenceDeploymentSpec:
    scaling = of.scaling.model_copy(update={"mode": models.ScalingMode.ADVISORY})
    return of.model_copy(update={"scaling": scaling})


@pytest.mark.parametrize(
    ("the_spec", "last_desired", "expected"),
    [
        (spec(3), None, 3),  # kubectl scale infd --replicas 3 before the Deployment existed
        (spec(9, high=4), None, 9),  # a person's number is not clamped
        (spec(0), 2, 0),
        (spec(), None, 1),  # a new Deployment starts at minReplicas
        (spec(low=2), None, 2),
        (spec(low=0), None, 1),  # ... and at least 1, as the autoscaler keeps
        (spec(), 3, 3),  # a re-created Deployment gets its last count back
        (spec(high=3), 6, 3),  # ... inside the current bounds
        (spec(low=2), 1, 2),
        # Advisory: the count is the HPA's or a person's, never written, even spec.replicas.
        (advisory(spec(low=2)), None, None),
        (advisory(spec(3)), 2, None),
    ],
)
def test_initial_replicas(
    the_spec: models.InferenceDeploymentSpec, last_desired: int | None, expected: int | None
) -> None:
    assert replicas.initial(the_spec, last_desired) == expected


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
        "selector": "kvscale.dev/inference-deployment=llama",
    }
    # desiredReplicas and the scaling conditions are the autoscale loop's (outcome.py).
    assert [condition["type"] for condition in fields["conditions"]] == ["Ready"]
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
