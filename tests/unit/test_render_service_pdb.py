"""The Service and PodDisruptionBudget rendered beside the engine Deployment, and the checks
on names and ports that stop the manifests from applying."""

from __future__ import annotations

from typing import Any

import pytest

from kvscale.api import models
from kvscale_operator.reconciler import render

UID = "7f1c0a52-aaaa-4bbb-8ccc-dddd0000eeee"


def infd(name: str = "llama", **spec: Any) -> models.InferenceDeployment:
    body: dict[str, Any] = {"model": {"name": "org/model"}}
    body.update(spec)
    return models.InferenceDeployment.from_object(
        {"metadata": {"name": name, "namespace": "ns", "uid": UID}, "spec": body}
    )


def test_service_exposes_the_engine_api_and_sidecar_metrics_by_port_name() -> None:
    manifest = render.service(infd(engine={"port": 8080}, sidecar={"port": 9100}))
    assert manifest["apiVersion"] == "v1"
    assert manifest["kind"] == "Service"
    assert manifest["metadata"]["name"] == "llama"
    assert manifest["metadata"]["labels"] == render.labels("llama")
    assert manifest["spec"]["type"] == "ClusterIP"
    assert manifest["spec"]["selector"] == {"kvscale.dev/inference-deployment": "llama"}
    assert manifest["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"},
    ]


def test_pdb_lets_one_engine_pod_go_at_a_time() -> None:
    manifest = render.pod_disruption_budget(infd())
    assert manifest["apiVersion"] == "policy/v1"
    assert manifest["kind"] == "PodDisruptionBudget"
    assert manifest["spec"] == {
        "selector": {"matchLabels": {"kvscale.dev/inference-deployment": "llama"}},
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


def test_every_manifest_is_owned_by_the_cr_as_its_controller() -> None:
    cr = infd()
    for manifest in render.manifests(cr):
        (owner,) = manifest["metadata"]["ownerReferences"]
        assert owner["uid"] == UID
        assert owner["controller"] is True
        assert owner["blockOwnerDeletion"] is True
        assert manifest["metadata"]["labels"] == render.labels("llama")


def test_manifests_come_in_apply_order_and_can_be_looked_up_by_kind() -> None:
    cr = infd()
    assert [manifest["kind"] for manifest in render.manifests(cr)] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]
    assert render.manifest_for(cr, "Service") == render.service(cr)
    assert render.manifest_for(cr, "ConfigMap") is None


@pytest.mark.parametrize(
    "name",
    ["1st-model", "llama.v2", "a" * 64],
)
def test_names_that_cannot_name_a_service_or_label_a_pod_are_problems(name: str) -> None:
    (problem,) = render.problems(infd(name=name))
    assert problem.startswith(f"metadata.name {name!r} cannot name the engine Service")


def test_engine_and_sidecar_ports_must_differ() -> None:
    (problem,) = render.problems(infd(engine={"port": 9000}, sidecar={"port": 9000}))
    assert "spec.engine.port and spec.sidecar.port are both 9000" in problem


def test_problems_include_the_engine_args_problems() -> None:
    (problem,) = render.problems(infd(engine={"extraArgs": ["--port", "1"]}))
    assert problem.startswith("spec.engine.extraArgs[0] '--port' duplicates --port")


def test_a_good_spec_has_no_problems() -> None:
    assert render.problems(infd(name="a" * 63)) == []
