"""Drift: where a live object no longer holds what the operator rendered."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kvscale.api import models
from kvscale_operator.reconciler import render


def rendered_deployment() -> dict[str, Any]:
    cr = models.InferenceDeployment.from_object(
        {
            "metadata": {"name": "llama", "namespace": "ns", "uid": "u-1"},
            "spec": {"model": {"name": "org/model"}},
        }
    )
    return render.deployment(cr)


def as_served(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the API server returns it: defaults and other controllers' fields added."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(resourceVersion="42", generation=2, uid="d-1")
    live["metadata"]["labels"]["team"] = "search"  # someone else's label
    live["spec"]["replicas"] = 3  # the scale field manager's
    live["spec"]["progressDeadlineSeconds"] = 600
    for container in live["spec"]["template"]["spec"]["containers"]:
        container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/log")
        container["readinessProbe"]["successThreshold"] = 1
    live["status"] = {"replicas": 3, "readyReplicas": 1}
    return live


def test_an_object_as_served_has_not_drifted() -> None:
    desired = rendered_deployment()
    assert render.differences(desired, as_served(desired)) == []


def edit_args(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["containers"][0]["args"].append("--enforce-eager")


def edit_label(live: dict[str, Any]) -> None:
    live["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"


def drop_owner(live: dict[str, Any]) -> None:
    del live["metadata"]["ownerReferences"]


def edit_image(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["containers"][1]["image"] = "busybox"


def drop_container(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["containers"].pop()


def replace_env_with_text(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["containers"][0]["env"] = "POD_IP"


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (edit_args, ".spec.template.spec.containers[0].args"),
        (edit_label, ".metadata.labels.app.kubernetes.io/managed-by"),
        (drop_owner, ".metadata.ownerReferences"),
        (edit_image, ".spec.template.spec.containers[1].image"),
        (drop_container, ".spec.template.spec.containers"),
        (replace_env_with_text, ".spec.template.spec.containers[0].env"),
    ],
)
def test_an_edited_field_the_operator_owns_is_drift(edit: Any, path: str) -> None:
    desired = rendered_deployment()
    live = as_served(desired)
    edit(live)
    assert render.differences(desired, live) == [path]


def test_replicas_are_never_drift() -> None:
    desired = rendered_deployment()
    live = as_served(desired)
    live["spec"]["replicas"] = 17
    assert render.differences(desired, live) == []


def test_scalars_compare_by_value() -> None:
    assert render.differences({"a": 1}, {"a": 1}) == []
    assert render.differences({"a": 1}, {"a": "1"}) == [".a"]
    assert render.differences({"a": {"b": 1}}, {"a": 5}) == [".a"]
