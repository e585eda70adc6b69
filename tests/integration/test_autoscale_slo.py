"""spec.slo end to end: twin engines the operator knows nothing about, a latency target, and
the capacity the operator learns from the pods' own latency in the status and `kvscale status`.

The engines are `kvscale twin` pods (a modelled Llama-3-8B on an H100 with 512 KV blocks of 16
tokens) beside the real sidecar, which reads their vLLM latency histograms. The CR states only
`spec.slo` (TTFT p90 <= 1 s) and the bounds: no occupancy or throughput target is set by hand.
Eight concurrent 3,000-token requests fill one engine's cache and queue (TTFT far past 1 s), so
the operator must scale up; then a load the pods carry within the SLO teaches it their compute
capacity, which the status carries per resource with its source and use, and `kvscale status`
shows.
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
from tests.support import wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# On the real node (kubelet, containerd, runc; the images this checkout builds).
cluster = realnode.module_cluster("sl")

NAME = "slo-twins"
WARMUP_S = 60  # kvscale.scaling.capacity.Settings.warmup_seconds: before it nothing is learned


def infd(gpus_per_node: int) -> dict[str, Any]:
    """The twins of test_autoscale_twin with only the bounds and spec.slo: no target by hand."""
    scaling = {"minReplicas": 1, "maxReplicas": 2, "stableWindowSeconds": 8}
    return twin.infd(gpus_per_node, name=NAME, scaling=scaling, slo={"ttft": {"p90": "1s"}})


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, NAME)
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "infd", NAME, "-n", namespace, "--wait=false")


def _learned(story: Story) -> list[dict[str, Any]] | None:
    status = story.infd().get("status") or {}
    found = [c for c in status.get("capacity") or [] if c.get("source") == "learned"]
    return found or None


def test_an_slo_alone_scales_the_twins_and_the_learned_capacity_is_shown(
    story: Story, cluster: local.Cluster
) -> None:
    cluster.kubectl(
        "apply", "-n", story.namespace, "-f", "-", input=json.dumps(infd(cluster.gpus_per_node))
    )
    (first_ip,) = wait_ready(story, 1)
    ready_at = time.monotonic()
    # The status carries the SLO's sizing from the first ticks: the CR's priors, not learned.
    capacity = wait.eventually(
        lambda: (story.infd().get("status") or {}).get("capacity"),
        "status.capacity",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    assert {item["source"] for item in capacity} == {"target"}

    # A burst that fills the cache and queues: TTFT far past the target, the fleet scales up.
    burst = Load({"model": MODEL, "prompt": [7] * 3000, "max_tokens": 200}, ENGINE_PORT, 8)
    burst.targets = [first_ip]
    burst.start()
    try:
        ups = story.scaled(2, "ScaledUp", timeout_s=120)
        assert any(event["message"].startswith("scaled from 1 to 2") for event in ups)
        ips = wait_ready(story, 2)
    finally:
        burst.stop()
    assert burst.completed > 0, f"no completion of the burst succeeded ({burst.failed} failed)"
    # A load the pods carry within the SLO: what they carry is proven to meet it, and the
    # compute capacity (no prior: the CR set no throughput target) is learned from it. (The
    # burst's violations fell on the KV cache, full at 1.5x its blocks, above its prior: they
    # agree with the prior and move nothing.)
    load = Load({"model": MODEL, "prompt": [7] * 1000, "max_tokens": 100}, ENGINE_PORT, 2)
    load.targets = ips
    load.start()
    try:
        # Learning waits out the pods' warm-up, then a latency window of samples.
        remaining = max(0.0, WARMUP_S - (time.monotonic() - ready_at))
        learned = wait.eventually(
            lambda: _learned(story),
            "a capacity learned from the pods' latency in status.capacity",
            timeout_s=remaining + 180,
            retry_on=wait.NOT_MADE_YET,
        )
    finally:
        load.stop()
    assert load.completed > 0, f"no completion succeeded ({load.failed} failed)"
    status = story.infd()["status"]
    assert status["bindingResource"] in {"kv", "compute"}
    assert status["leadTimeSeconds"] >= 0
    for item in learned:
        assert item["perPod"] > 0
        assert item["use"] in {"trusted", "scale_up_only"}
    shown = subprocess.run(
        [str(KVSCALE), "status", "-n", story.namespace, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "  slo          ttft p90 <= 1s" in shown, shown
    assert "learned" in shown.split("  capacity")[1], shown
