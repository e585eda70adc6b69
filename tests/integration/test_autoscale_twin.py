"""The autoscaler against the real API server with engine twins in the pods: fast, no vLLM.

The same parts as the vLLM story (test_autoscale_e2e.py) except the engine: each pod runs
`kvscale twin` (the engine-twin image: vLLM's API and vllm:* metrics from a modelled
Llama-3-8B on an H100, ready in seconds) beside the real kvscale sidecar. The pods run on the
real node (kubelet, containerd, runc) from the images this checkout builds, on a cluster of
the module's own: 4 fake GPUs, pods of 2 (`realnode.cluster_with_images`). 512 KV blocks of 16
tokens per engine, so eight concurrent 3,400-token requests fill one and queue.

- A load step scales 1 -> 3 (more is asked than maxReplicas allows); the third replica cannot
  be placed (each takes both GPUs of a node): ScalingLimited in the scheduler's words.
- Load removed; one pod's sidecar is killed again and again for longer than demand alone
  would hold the count, and the operator is restarted meanwhile: no scale-down, and
  MetricsAvailable names the pod. Left alone, the deployment scales down after the delay.
- `kubectl scale infd` holds the Deployment at the count asked; removing spec.replicas
  resumes autoscaling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import AsyncClient
from tests.integration import realnode
from tests.integration.autoscale_story import (
    Load,
    Story,
    Watch,
    is_ready,
    wait_metrics_available,
    wait_ready,
)
from tests.integration.conftest import Operator
from tests.support import manifest, wait

from kvscale.localstack import cluster as local
from kvscale_operator import config, kube, login

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "twins"
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
ENGINE_PORT = 8000
DELAY_S = 15
STABLE_S = 8


def infd(
    gpus_per_node: int,
    *,
    name: str = NAME,
    scaling: dict[str, Any] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """Twin engines of 512 blocks; `scaling` replaces the test's windows, `more` adds spec keys."""
    spec = {
        "model": {"name": MODEL},
        "engine": {
            "image": realnode.ENGINE_TWIN_IMAGE,
            "blockSize": 16,
            "maxModelLen": 4096,
            "shutdownGraceSeconds": 1,
            "extraArgs": ["--num-gpu-blocks-override", "512"],
        },
        # CPU is a real cgroup limit on the real node: the twin needs more than 100m there.
        "resources": {"gpusPerReplica": gpus_per_node, "cpu": "300m", "memory": "512Mi"},
        "scaling": manifest.autoscaling(STABLE_S, DELAY_S) if scaling is None else scaling,
        **more,
    }
    return manifest.inference_deployment(name, spec)


cluster = realnode.module_cluster("tw")


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, NAME)
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "infd", NAME, "-n", namespace, "--wait=false")


def test_load_scales_up_a_dead_sidecar_and_a_restart_hold_idle_scales_down(
    story: Story, cluster: local.Cluster, operator: Operator
) -> None:
    cluster.kubectl(
        "apply", "-n", story.namespace, "-f", "-", input=json.dumps(infd(cluster.gpus_per_node))
    )
    (first_ip,) = wait_ready(story, 1)
    wait_metrics_available(story)

    load = Load({"model": MODEL, "prompt": [7] * 3000, "max_tokens": 400}, ENGINE_PORT, 8)
    load.targets = [first_ip]
    load.start()
    try:
        ups = story.scaled(3, "ScaledUp", timeout_s=60)
        assert any(event["message"].startswith("scaled from 1 to ") for event in ups)
        limited = wait.eventually(
            lambda: (c := story.condition("ScalingLimited")) and c["reason"] == "PodsUnschedulable"
            and c,
            "ScalingLimited=True for the pending replica", timeout_s=90, retry_on=wait.NOT_MADE_YET,
        )  # fmt: skip
        assert limited["message"].startswith("1 of 3 replicas pending: ")
        assert "Insufficient nvidia.com/gpu" in limited["message"]
        load.targets = wait_ready(story, 2)
        time.sleep(2)
    finally:
        load.stop()
    assert load.completed > 0, f"no completion succeeded ({load.failed} failed)"
    history = wait.eventually(
        lambda: (
            (h := story.infd()["status"].get("scalingHistory")) and h[-1]["toReplicas"] == 3 and h
        ),
        "the scale-up in status.scalingHistory",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    assert history[0]["fromReplicas"] == 1

    # Low load. The second pod's sidecar dies again and again; the operator restarts meanwhile.
    watch = Watch(story)
    (second,) = [p for p in story.pods() if is_ready(p) and p["status"]["podIP"] != first_ip]
    name = second["metadata"]["name"]
    until = time.monotonic() + STABLE_S + DELAY_S + 15
    restart_at = time.monotonic() + 10
    kills = 0
    named = False
    while time.monotonic() < until:
        kills += story.kill(second, "sidecar")
        named = named or story.names(name, "report stale")
        watch.check(what="while a sidecar was down")
        if restart_at and time.monotonic() > restart_at:
            operator.restart()
            restart_at = 0.0
            watch.check(what="across the restart")
        time.sleep(0.5)
    assert kills >= 2
    assert named, "MetricsAvailable never named the pod whose sidecar was down"
    assert story.events("MetricsMissing"), "no MetricsMissing Event"

    # Left alone, the idle deployment scales down after the delay, least loaded first.
    downs = story.scaled(1, "ScaledDown", timeout_s=120)
    assert any(event["message"].startswith("scaled from 3 to ") for event in downs)
    status = story.recorded(1)
    assert status["desiredReplicas"] == 1
    wait.eventually(
        lambda: len(story.pods()) == 1 or None,
        "one pod left",
        timeout_s=60,
        retry_on=wait.NOT_MADE_YET,
    )


def test_kubectl_scale_holds_the_count_and_removing_it_resumes_autoscaling(
    story: Story, cluster: local.Cluster
) -> None:
    cluster.kubectl(
        "apply", "-n", story.namespace, "-f", "-", input=json.dumps(infd(cluster.gpus_per_node))
    )
    wait_ready(story, 1)
    cluster.kubectl("scale", "infd", NAME, "-n", story.namespace, "--replicas", "2")
    wait.eventually(
        lambda: story.replicas()[0] == 2,
        "the Deployment held at 2",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    active = wait.eventually(
        lambda: (c := story.condition("ScalingActive")) and c["reason"] == "ManualReplicas" and c,
        "ScalingActive=False, ManualReplicas",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    assert active["status"] == "False"
    assert "remove spec.replicas to resume autoscaling" in active["message"]
    cluster.kubectl(
        "patch", "infd", NAME, "-n", story.namespace, "--type", "merge",
        "-p", '{"spec":{"replicas":null}}',
    )  # fmt: skip
    wait.eventually(
        lambda: (c := story.condition("ScalingActive")) and c["reason"] != "ManualReplicas",
        "autoscaling to resume",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    # Idle: back to one replica once a whole delay has passed.
    wait.eventually(
        lambda: story.replicas()[0] == 1,
        "the idle scale-down to 1",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )


def test_a_scale_from_a_count_that_changed_meanwhile_is_refused(
    cluster: local.Cluster, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "guarded"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "guarded"}},
            "template": {
                "metadata": {"labels": {"app": "guarded"}},
                "spec": {"containers": [{"name": "c", "image": realnode.WEBECHO_IMAGE}]},
            },
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment))

    async def scale() -> list[int | str]:
        settings = config.Settings(kubeconfig=cluster.kubeconfig)
        api = kube.Kube(AsyncClient(config=login.load(settings, os.environ)), settings)
        seen: list[int | str] = []

        async def attempt(replicas: int, expected: int) -> None:
            try:
                await api.scale_deployment(namespace, "guarded", replicas, expected=expected)
                seen.append("scaled")
            except kube.ApiError as error:
                seen.append(error.status.code or 0)
            found = await api.get("apps/v1", "Deployment", namespace, "guarded")
            assert found is not None
            seen.append(found["spec"]["replicas"])

        try:
            await attempt(2, expected=1)  # the count is 0, not 1: refused
            await attempt(2, expected=0)
            await attempt(3, expected=1)  # the count is 2, not 1: refused
            await attempt(0, expected=2)
        finally:
            await api.close()
        return seen

    # A refused JSON patch (its test of the count failed) writes nothing.
    assert asyncio.run(scale()) == [422, 0, "scaled", 2, 422, 2, "scaled", 0]
