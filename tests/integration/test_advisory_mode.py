"""Advisory mode end to end: kvscale beside the autoscaler a team runs today.

Twin engines (as in test_autoscale_twin, on the real node: kubelet, containerd, runc, the
images this checkout builds, a cluster of the module's own) under an InferenceDeployment with
`spec.scaling.mode: Advisory`. A load that fills the one engine makes the operator advise a
scale-up (status.desiredReplicas, an Event WouldScaleUp, ScalingActive=False/Advisory) while
the engine Deployment stays at the count its owner set: no field manager of kvscale owns its
spec.replicas. The owner (here `kubectl scale`, as an HPA would) scales it, and kvscale leaves
that count alone too. `kubectl get infd` shows the mode and `kvscale status` the advice.
Switching to Active keeps the loop and says so; the Deployment's count is then kvscale's.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration import realnode
from tests.integration import test_autoscale_twin as twin
from tests.integration.autoscale_story import Load, Story, wait_ready
from tests.integration.conftest import Operator
from tests.integration.test_autoscale_twin import ENGINE_PORT, MODEL
from tests.integration.test_status_command import KVSCALE
from tests.support import manifest, wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "advised"
AUTOSCALER_MANAGER = "kvscale-autoscaler"  # kube.Kube.scale_deployment's field manager


def infd(gpus_per_node: int, mode: str = "Advisory") -> dict[str, Any]:
    scaling = manifest.autoscaling(twin.STABLE_S, twin.DELAY_S)
    scaling["mode"] = mode
    return twin.infd(gpus_per_node, name=NAME, scaling=scaling)


cluster = realnode.module_cluster("ad")


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, NAME)
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "infd", NAME, "-n", namespace, "--wait=false")


def replicas_managers(story: Story) -> set[str]:
    """The field managers that own the engine Deployment's spec.replicas."""
    deployment = story.get("deployment", NAME, "--show-managed-fields")
    return {
        entry["manager"]
        for entry in deployment["metadata"].get("managedFields") or []
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
    }


def steady(story: Story, count: int, seconds: float) -> None:
    """The Deployment's count stays `count` for `seconds` (kvscale writes nothing)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert story.replicas()[0] == count, "kvscale changed an advisory Deployment's replicas"
        time.sleep(1.0)


def test_advisory_mode_advises_and_leaves_the_deployment_to_its_owner(
    story: Story, cluster: local.Cluster
) -> None:
    cluster.kubectl(
        "apply", "-n", story.namespace, "-f", "-", input=json.dumps(infd(cluster.gpus_per_node))
    )
    # The Deployment starts at Kubernetes' default: kvscale did not set (or claim) the count.
    (first_ip,) = wait_ready(story, 1)
    assert story.replicas()[0] == 1
    assert AUTOSCALER_MANAGER not in replicas_managers(story)

    load = Load({"model": MODEL, "prompt": [7] * 3000, "max_tokens": 400}, ENGINE_PORT, 8)
    load.targets = [first_ip]
    load.start()
    try:
        advised = wait.eventually(
            lambda: story.events("WouldScaleUp") or None,
            "a WouldScaleUp Event",
            timeout_s=90,
            retry_on=wait.NOT_MADE_YET,
        )
        messages = [event["message"] for event in advised]
        assert any(m.startswith("advisory: would scale from 1 to ") for m in messages), messages
        status = story.infd()["status"]
        assert status["desiredReplicas"] >= 2
        active = story.condition("ScalingActive") or {}
        assert (active.get("status"), active.get("reason")) == ("False", "Advisory"), active
        steady(story, 1, 5)
        # The owner scales (as an HPA would, through the scale subresource); kvscale keeps out.
        cluster.kubectl("scale", "deployment", NAME, "-n", story.namespace, "--replicas", "2")
        wait_ready(story, 2)
        steady(story, 2, 5)
    finally:
        load.stop()
    assert load.completed > 0, f"no completion succeeded ({load.failed} failed)"
    assert AUTOSCALER_MANAGER not in replicas_managers(story)
    assert not story.events("ScaledUp")
    assert not story.events("ScaledDown")
    assert not story.infd()["status"].get("scalingHistory")  # nothing was done

    table = cluster.kubectl("get", "infd", NAME, "-n", story.namespace).stdout
    assert "MODE" in table, table
    assert "Advisory" in table, table
    shown = subprocess.run(
        [str(KVSCALE), "status", "-n", story.namespace, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "  mode         Advisory: kvscale would run " in shown, shown

    # Switching to Active: the same loop goes on, says so, and owns the count from now on.
    cluster.kubectl(
        "apply", "-n", story.namespace, "-f", "-",
        input=json.dumps(infd(cluster.gpus_per_node, mode="Active")),
    )  # fmt: skip
    wait.eventually(
        lambda: story.events("ScalingModeChanged") or None,
        "a ScalingModeChanged Event",
        timeout_s=60,
        retry_on=wait.NOT_MADE_YET,
    )
    wait.eventually(
        lambda: (c := story.condition("ScalingActive")) and c["reason"] == "Active",
        "ScalingActive=True, Active",
        timeout_s=60,
        retry_on=wait.NOT_MADE_YET,
    )
    # Idle now: after the delay, the active loop scales the owner's 2 down to 1 itself.
    downs = story.scaled(1, "ScaledDown", timeout_s=120)
    assert any(event["message"].startswith("scaled from 2 to 1") for event in downs)
    assert AUTOSCALER_MANAGER in replicas_managers(story)
