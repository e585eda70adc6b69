"""The autoscaler end to end, on real vLLM CPU engines: one story, in order.

Every part is real: the API server, controller manager and scheduler; the operator as its own
process (restarted midway); a real node (kubelet, containerd, runc) running each pod's vLLM
engine (the vLLM CPU engine image, the tiny model from a read-only hostPath model cache) and
kvscale sidecar (the kvscale image) as containers; load sent by pod IP as a gateway would. The
engines have 64 KV blocks of 32 tokens, so ten concurrent 1,000-token requests fill one and
queue behind it.

1. One replica serves. A load step fills its cache: the autoscaler scales 1 -> 3 at once
   (panic; the count asked for is more than maxReplicas), with a ScaledUp Event and a
   scalingHistory entry. Each replica takes two of the node's four fake GPUs, so the third
   pod cannot be placed: ScalingLimited says so in the scheduler's words.
2. The second replica becomes ready; the load stops. Low load would scale down after the
   delay; instead the second engine is killed (SIGKILL of the container's first process, as
   an OOM kill ends it: the kubelet restarts the container), and while it restarts the
   operator itself is restarted. Neither the dead engine nor the restart scales
   anything: the Deployment keeps its count throughout, and MetricsAvailable names the pod.
3. Once the engine is back, the second pod's sidecar is killed again and again for longer
   than demand alone would hold the count: still no scale-down, MetricsAvailable names it.
4. The sidecar is left alone: the deployment scales down after the delay, with an Event and
   a history entry, the least-loaded pods first.

At most two vLLM engines run at once (the third replica stays pending); the module takes
about seven minutes on two cores.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration import realnode
from tests.integration.autoscale_story import (
    Load,
    Story,
    Watch,
    hold,
    is_ready,
    wait_metrics_available,
)
from tests.integration.conftest import Operator
from tests.support import manifest, wait

from kvscale.localstack import cluster as local
from kvscale.localstack import engine_env

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]

NAME = "autoscaled"
ENGINE_PORT = 8000
# vLLM's CPU build needs 50-120 s to start here; more while another engine is busy.
ENGINE_START_TIMEOUT_S = 420.0
DELAY_S = 20
STABLE_S = 10
# 571 tokens of prompt and 400 of output: about 31 of the engine's 64 blocks per request.
PROMPT = "The key value cache of a language model holds the attention state of every token. " * 10
MAX_TOKENS = 400
CONCURRENCY = 10

# Four fake GPUs as two "nodes" of two: a replica takes two, so two fit and the third waits.
cluster = realnode.module_cluster("ae", 4, 2, vllm=True)


def infd(gpus_per_node: int) -> dict[str, Any]:
    spec = {
        "model": {"name": engine_env.TINY_MODEL},
        "engine": {
            "blockSize": 32,
            # 63 usable blocks x 32 = 2,016 tokens: the longest sequence must fit in them.
            "maxModelLen": 1536,
            "shutdownGraceSeconds": 2,
            "extraArgs": ["--num-gpu-blocks-override", "64"],
        },
        # A whole node's GPUs per replica: two replicas fit, the third stays pending.
        # Real limits: 4Gi, as vLLM's CPU engine needs more than 2Gi while it compiles the
        # model; 900m of CPU, so two engines and their sidecars (50m each) fit the node's two
        # cores and only the GPUs keep the third replica out.
        "resources": {"gpusPerReplica": gpus_per_node, "cpu": "900m", "memory": "4Gi"},
        "scaling": manifest.autoscaling(STABLE_S, DELAY_S),
    }
    # The vLLM CPU image, the tiny model from this host's cache (read-only hostPath).
    return engine_env.on_local_node(manifest.inference_deployment(NAME, spec))


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, NAME)
    # Engines stop when their pods go: delete them now rather than with the namespace.
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "infd", NAME, "-n", namespace, "--wait=false")


def test_load_scales_up_failures_and_restarts_never_scale_down_idle_scales_down(
    story: Story, cluster: local.Cluster, operator: Operator, model_cache: pathlib.Path
) -> None:
    # (`model_cache` builds the tiny model when this host has none.)
    story.cluster.kubectl(
        "apply", "-n", story.namespace, "-f", "-",
        input=json.dumps(infd(cluster.gpus_per_node)),
    )  # fmt: skip
    # (`eventually` returns the first value that is not None or False: an empty list is one.)
    first = wait.eventually(
        lambda: story.ready_ips() or None,
        "one ready replica",
        timeout_s=ENGINE_START_TIMEOUT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    (first_ip,) = first
    wait_metrics_available(story)
    assert story.replicas()[0] == 1

    # 1. A load step: 1 -> 3 at once, the third replica pending for want of GPUs.
    body = {"model": engine_env.TINY_MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS,
            "ignore_eos": True}  # fmt: skip
    load = Load(body, ENGINE_PORT, CONCURRENCY)
    load.targets = [first_ip]
    load.start()
    try:
        ups = story.scaled(3, "ScaledUp", timeout_s=120)
        assert any(event["message"].startswith("scaled from 1 to ") for event in ups)
        history = story.recorded(3)["scalingHistory"]
        assert history[0]["fromReplicas"] == 1
        assert all(h["toReplicas"] > h["fromReplicas"] for h in history)
        limited = wait.eventually(
            lambda: (c := story.condition("ScalingLimited")) and c["reason"] == "PodsUnschedulable"
            and c,
            "ScalingLimited=True for the pending replica", timeout_s=90, retry_on=wait.NOT_MADE_YET,
        )  # fmt: skip
        assert limited["status"] == "True"
        assert limited["message"].startswith("1 of 3 replicas pending: ")
        assert "Insufficient nvidia.com/gpu" in limited["message"]

        def second_ready() -> list[str] | None:
            ips = story.ready_ips()
            load.targets = ips
            return ips if len(ips) == 2 else None

        wait.eventually(
            second_ready,
            "the second replica to be ready",
            timeout_s=ENGINE_START_TIMEOUT_S,
            retry_on=wait.NOT_MADE_YET,
        )
    finally:
        load.stop()
    assert load.completed > 0, f"no completion succeeded ({load.failed} failed)"

    # 2. Low load. Kill the second engine, then restart the operator while it is down.
    watch = Watch(story)
    assert watch.count == 3
    (second,) = [
        pod for pod in story.pods() if is_ready(pod) and pod["status"]["podIP"] != first_ip
    ]
    second_name = second["metadata"]["name"]
    assert story.kill(second, "engine"), "the second engine was not running"
    hold(watch, lambda: story.names(second_name, "engine "),
         "MetricsAvailable to name the dead engine", 60)  # fmt: skip
    mark = operator.log_size()
    # Taken before the restart, so the new autoscaler's delay starts after it: "not before
    # restarted + DELAY_S" below is an order a slow machine can only make easier to meet.
    restarted = time.monotonic()
    operator.restart()
    hold(watch, lambda: f"{story.namespace}/{NAME}: autoscaler started" in operator.log(mark),
         "the restarted operator's autoscaler", 60)  # fmt: skip
    # A restarted operator waits a whole delay before it scales down, and the dead engine's
    # unknown load holds any scale-down until its reports are fresh again: watch both.

    def engine_back() -> bool:
        condition = story.condition("MetricsAvailable")
        back = bool(condition and condition["status"] == "True" and len(story.ready_ips()) == 2)
        return back and time.monotonic() > restarted + DELAY_S + 5

    hold(watch, engine_back, "the killed engine to serve again", ENGINE_START_TIMEOUT_S,
         not_before=restarted + DELAY_S)  # fmt: skip
    assert story.events("MetricsMissing"), "no MetricsMissing Event"

    # 3. Kill the second pod's sidecar again and again for longer than demand alone holds.
    (second,) = [pod for pod in story.pods() if pod["metadata"]["name"] == second_name]
    kills = 0
    named = False
    until = time.monotonic() + STABLE_S + DELAY_S + 15
    while time.monotonic() < until:
        kills += story.kill(second, "sidecar")
        named = named or story.names(second_name, "report stale")
        watch.check(what="while a sidecar was down")
        time.sleep(0.5)
    assert kills >= 2
    assert named, "MetricsAvailable never named the pod whose sidecar was down"

    # 4. Left alone, the idle deployment scales down after the delay.
    downs = story.scaled(1, "ScaledDown", timeout_s=180)
    assert any(event["message"].startswith("scaled from 3 to ") for event in downs)
    status = story.recorded(1)
    history = status["scalingHistory"]
    assert any(h["fromReplicas"] == 3 and h["toReplicas"] < 3 for h in history)
    assert status["lastScaleTime"] == history[-1]["time"]
    assert status["desiredReplicas"] == 1
