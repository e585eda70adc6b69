"""An InferenceDeployment on the real node: kubelet, containerd and runc run the engine pods from
the images this checkout builds (Containerfile's kvscale and engine-twin targets), with the
operator on the host scaling them.

One cluster with runtime "kubelet" for the module (GPUS fake GPUs on its one node), the two
images built by `scripts/build-images.sh` (cached by content) and imported into the node's
containerd, the CRD installed and one operator process. Each engine pod runs the twin
(`ghcr.io/kvscale/engine-twin`, vLLM's flags as rendered for vLLM) beside the kvscale sidecar
(`ghcr.io/kvscale/kvscale`, the CRD's default sidecar image): nothing in the pod comes from the
host's Python. The tests run in file order, as one story on one InferenceDeployment:

1. the pod runs from the built images, the engines' ClusterIP Service answers a completion
   (kube-proxy, from inside the node's namespace), `kubectl logs` and `kubectl exec` work;
2. the pod's readiness follows the engine's health (SIGSTOP: NotReady; SIGCONT: Ready), and
   the operator does not scale while it cannot read the engine;
3. `kill -9` of the engine: kubelet restarts the container, the operator holds the size;
4. load scales 1 -> 3 where the node has GPUs for 2: the third pod Pending, ScalingLimited
   in the scheduler's words;
5. a scale-down while streams are in flight on the pod that goes: every stream completes
   (preStop sleep, then the engine drains within the grace period).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration import realnode
from tests.integration.autoscale_story import (
    Load,
    Story,
    is_ready,
    wait_metrics_available,
    wait_ready,
)
from tests.integration.conftest import Operator, chart_prometheus
from tests.integration.test_chaos import all_quiet_before_the_fault
from tests.support import prometheus, wait

from kvscale.api import models
from kvscale.localstack import cluster as local
from kvscale.localstack import node
from kvscale_operator.reconciler import render

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "twins"
NAMESPACE = "inference"
MODEL = realnode.MODEL
ENGINE_PORT = realnode.ENGINE_PORT
GPUS = 2
WAIT_S = 120.0  # generous: a busy 2-core machine; not a timing assertion
DRAIN_S = 60  # the engine's --shutdown-timeout: longer than any stream of test 5


cluster = realnode.module_cluster("ri", GPUS, None)


@pytest.fixture(scope="module")
def story(cluster: local.Cluster, operator_process: Operator) -> Iterator[Story]:
    """The module's one InferenceDeployment, with the operator (conftest's, on the host: it
    reaches the pods' sidecars through the host's route to the pod range) running."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    yield Story(cluster, NAMESPACE, NAME)
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.kubectl("delete", "infd", NAME, "-n", NAMESPACE, "--wait=false")


def _completion_inside_the_node(cluster: local.Cluster, address: str) -> dict[str, Any] | None:
    """POST a completion to `address` (host:port) from the node's namespace; the answer."""
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 8}
    answer = realnode.http_inside_the_node(cluster, f"http://{address}/v1/completions", body)
    return None if answer is None else dict(json.loads(answer))


def test_engine_pods_run_from_the_built_images_and_the_service_answers(
    cluster: local.Cluster, story: Story
) -> None:
    cluster.kubectl(
        "apply",
        "-n",
        NAMESPACE,
        "-f",
        "-",
        input=json.dumps(realnode.twin_infd(NAME, drain_s=DRAIN_S, delay_s=15)),
    )
    wait_ready(story, 1)
    wait_metrics_available(story)
    (pod,) = story.pods()
    images = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
    assert images[render.SIDECAR_CONTAINER] == models.DEFAULT_SIDECAR_IMAGE
    assert images[render.ENGINE_CONTAINER] == realnode.ENGINE_TWIN_IMAGE
    for name in images:
        assert realnode.container_status(pod, name)["ready"], f"container {name} is not ready"

    # Through the engines' Service, as a client in the cluster reaches them (kube-proxy).
    service = story.get("service", NAME)
    address = f"{service['spec']['clusterIP']}:{ENGINE_PORT}"
    answer = wait.eventually(
        lambda: _completion_inside_the_node(cluster, address),
        f"a completion through Service {NAME} ({address})",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    assert answer["choices"]
    assert answer["usage"]["completion_tokens"] == 8

    # What users reach for first: the sidecar's log and a shell command in the image.
    pod_name = pod["metadata"]["name"]
    logs = cluster.kubectl("logs", "-n", NAMESPACE, pod_name, "-c", render.SIDECAR_CONTAINER)
    assert logs.stdout.strip(), "the sidecar logged nothing"
    version = cluster.kubectl(
        "exec", "-n", NAMESPACE, pod_name, "-c", render.ENGINE_CONTAINER, "--",
        "kvscale", "--version",
    )  # fmt: skip
    assert version.stdout.startswith("kvscale ")


def _count_held(story: Story, count: int, seconds: float) -> None:
    """The Deployment stays at `count` (and its generation unchanged) for `seconds`."""
    before = story.replicas()
    assert before[0] == count, f"the Deployment is at {before[0]}, not {count}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert story.replicas() == before, f"the operator scaled: {before} -> {story.replicas()}"
        time.sleep(1)


def test_readiness_follows_the_engines_health_and_the_operator_holds(
    cluster: local.Cluster, story: Story
) -> None:
    (pod,) = story.pods()
    pid = realnode.task_pid(cluster, pod, render.ENGINE_CONTAINER)
    os.kill(pid, signal.SIGSTOP)

    def engine_not_ready() -> dict[str, Any] | None:
        # The sidecar's /readyz (which asks the engine) may fail before the engine's own
        # probe does; the pod is NotReady from the first, the engine container from its own.
        pods = story.pods()
        if not pods or is_ready(pods[0]):
            return None
        engine = realnode.container_status(pods[0], render.ENGINE_CONTAINER)
        return None if engine["ready"] else pods[0]

    try:
        wait.eventually(
            engine_not_ready,
            "the pod and its engine container NotReady while the engine is stopped",
            timeout_s=WAIT_S,
            retry_on=wait.NOT_MADE_YET,
        )
        # The engine cannot be read: the operator holds the count (1 is also the minimum, so
        # what this shows is no scale-up on garbage and no crash; scale-down on missing data
        # is the fleet tests' business).
        _count_held(story, 1, 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_ready(story, 1)
    wait_metrics_available(story)


def test_kill_9_of_the_engine_restarts_the_container_and_the_operator_holds_the_size(
    cluster: local.Cluster, story: Story
) -> None:
    (pod,) = story.pods()
    assert realnode.container_status(pod, render.ENGINE_CONTAINER)["restartCount"] == 0
    os.kill(realnode.task_pid(cluster, pod, render.ENGINE_CONTAINER), signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        pods = story.pods()
        if len(pods) != 1 or not is_ready(pods[0]):
            return None
        engine = realnode.container_status(pods[0], render.ENGINE_CONTAINER)
        return engine if engine["restartCount"] >= 1 else None

    engine = wait.eventually(
        restarted, "kubelet restarting the engine", timeout_s=WAIT_S, retry_on=wait.NOT_MADE_YET
    )
    assert engine["lastState"]["terminated"]["exitCode"] == 137
    assert story.pods()[0]["metadata"]["name"] == pod["metadata"]["name"], "the pod was replaced"
    assert story.replicas()[0] == 1
    wait_metrics_available(story)


def test_load_scales_up_until_the_gpus_run_out_and_says_why(
    cluster: local.Cluster, story: Story
) -> None:
    load = Load({"model": MODEL, "prompt": [7] * 3000, "max_tokens": 400}, ENGINE_PORT, 8)
    load.targets = story.ready_ips()
    load.start()
    try:
        ups = story.scaled(3, "ScaledUp", timeout_s=90)
        assert any(event["message"].startswith("scaled from 1 to ") for event in ups)
        limited = wait.eventually(
            lambda: (c := story.condition("ScalingLimited")) and c["reason"] == "PodsUnschedulable"
            and c,
            "ScalingLimited=True for the pending replica", timeout_s=WAIT_S,
            retry_on=wait.NOT_MADE_YET,
        )  # fmt: skip
        assert limited["message"].startswith("1 of 3 replicas pending: ")
        assert f"Insufficient {node.GPU_RESOURCE}" in limited["message"]
        load.targets = wait_ready(story, 2)
        pending = [p for p in story.pods() if p["status"].get("phase") == "Pending"]
        assert len(pending) == 1
    finally:
        load.stop()
    assert load.completed > 0, f"no completion succeeded ({load.failed} failed)"
    assert load.failed == 0, f"{load.failed} requests failed on the real node"


class Stream:
    """One streamed completion to one pod, read to its end in a thread."""

    def __init__(self, ip: str, max_tokens: int) -> None:
        self.ip = ip
        self.max_tokens = max_tokens
        self.tokens = 0
        self.done = False
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.ended_at = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        body = {
            "model": MODEL,
            "prompt": [7] * 200,
            "max_tokens": self.max_tokens,
            "stream": True,
        }
        connection = http.client.HTTPConnection(self.ip, ENGINE_PORT, timeout=120)
        try:
            connection.request(
                "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            if response.status != 200:
                self.error = f"HTTP {response.status}: {response.read()[:200]!r}"
                return
            for raw in response:
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    self.done = True
                elif line.startswith("data: "):
                    self.tokens += 1
                    for choice in json.loads(line.removeprefix("data: ")).get("choices", []):
                        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        except (OSError, http.client.HTTPException) as error:
            self.error = repr(error)
        finally:
            self.ended_at = time.monotonic()
            connection.close()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


def test_a_scale_down_with_streams_in_flight_completes_every_stream(
    cluster: local.Cluster, story: Story
) -> None:
    ips = wait_ready(story, 2)
    streams = [Stream(ip, max_tokens=1500) for ip in ips for _ in range(3)]
    # Every stream has begun producing tokens before the scale-down is asked.
    wait.eventually(
        lambda: all(s.tokens > 0 for s in streams),
        "every stream producing tokens",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    cluster.kubectl("scale", "infd", NAME, "-n", NAMESPACE, "--replicas=1")
    asked_at = time.monotonic()
    gone = wait.eventually(
        lambda: len(p := story.ready_ips()) == 1 and set(ips) - set(p),
        "one of the two ready pods leaving",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    for stream in streams:
        stream.join(timeout_s=DRAIN_S + 60)
    cut = [
        f"{s.ip}: {s.tokens} chunks, finish {s.finish_reason}, {s.error}"
        for s in streams
        if not (s.done and s.finish_reason == "length")
    ]
    on_the_pod_that_went = [s for s in streams if s.ip in gone]
    print(
        f"[real node inference] {len(streams)} streams, {len(cut)} cut; on the pod that went: "
        f"{len(on_the_pod_that_went)}, ended "
        f"{[round(s.ended_at - asked_at, 1) for s in on_the_pod_that_went]} s after the scale"
    )
    assert not cut, f"streams cut by the scale-down: {cut}"
    assert on_the_pod_that_went, "no stream ran on the pod that was removed"
    # The streams on that pod were really in flight when it was told to go.
    assert all(s.ended_at > asked_at for s in on_the_pod_that_went)
    assert story.replicas()[0] == 1


def _node_ready(cluster: local.Cluster) -> str:
    """The node's Ready condition status ("True", "False", "Unknown")."""
    found = json.loads(cluster.kubectl("get", "node", "local-node-0", "-o", "json").stdout)
    (ready,) = [c for c in found["status"]["conditions"] if c["type"] == "Ready"]
    return str(ready["status"])


def test_a_kubelet_stopped_past_the_node_monitor_grace_period_causes_no_scale_action(
    cluster: local.Cluster, story: Story, operator_process: Operator, tmp_path: pathlib.Path
) -> None:
    """Chaos scenario 5: kubelet frozen (SIGSTOP) until the node controller marks the node
    and its pods NotReady, then resumed. The containers keep serving meanwhile. A real
    Prometheus evaluates the chart's rules (test_chaos.py says how): no alert may go even
    pending, since the engine serves and reports throughout (a pod that lost its readiness
    still counts as ready to the decision, and its sidecar still answers)."""
    with chart_prometheus(tmp_path / "prometheus", operator_process) as alerts:
        _stop_the_kubelet(cluster, story, alerts)


def _stop_the_kubelet(cluster: local.Cluster, story: Story, alerts: prometheus.Prometheus) -> None:
    cluster.kubectl("scale", "infd", NAME, "-n", NAMESPACE, "--replicas=1")
    # Autoscaling again (spec.replicas removed), so any scale action would be the operator's.
    patch = json.dumps([{"op": "remove", "path": "/spec/replicas"}])
    cluster.kubectl("patch", "infd", NAME, "-n", NAMESPACE, "--type=json", "-p", patch)
    (ip,) = wait_ready(story, 1)
    wait_metrics_available(story)
    all_quiet_before_the_fault(alerts, story)
    recorder = prometheus.AlertRecorder(alerts)
    recorder.start()
    before = story.replicas()
    history = len(story.infd()["status"].get("scalingHistory") or [])
    load = Load({"model": MODEL, "prompt": [7] * 500, "max_tokens": 50}, ENGINE_PORT, 2)
    load.targets = [ip]
    load.start()
    kubelet = cluster.processes[node.KUBELET].pid
    stopped_at = time.monotonic()
    os.kill(kubelet, signal.SIGSTOP)
    try:
        wait.eventually(
            lambda: _node_ready(cluster) != "True",
            "the node controller marking the node NotReady",
            timeout_s=WAIT_S,
            retry_on=wait.NOT_MADE_YET,
        )
        detected_s = time.monotonic() - stopped_at
        wait.eventually(
            lambda: not story.ready_ips(),
            "the pod marked NotReady (NodeNotReady)",
            timeout_s=WAIT_S,
            retry_on=wait.NOT_MADE_YET,
        )
        # The engine is still serving and its sidecar still reports; nothing to scale for.
        _count_held(story, before[0], 15)
        during = story.condition("MetricsAvailable")
    finally:
        os.kill(kubelet, signal.SIGCONT)
        resumed_at = time.monotonic()
    try:
        wait.eventually(
            lambda: _node_ready(cluster) == "True",
            "the node Ready again",
            timeout_s=WAIT_S,
            retry_on=wait.NOT_MADE_YET,
        )
        wait_ready(story, 1)
        recovered_s = time.monotonic() - resumed_at
        _count_held(story, before[0], 5)
    finally:
        load.stop()
        seen = recorder.stop()
    assert len(story.infd()["status"].get("scalingHistory") or []) == history
    print(
        f"[real node inference] kubelet stopped {resumed_at - stopped_at:.0f} s: node NotReady "
        f"after {detected_s:.0f} s, pod Ready {recovered_s:.1f} s after the resume; "
        f"MetricsAvailable during: {during and (during['status'], during.get('reason'))}; "
        f"{load.completed} completions, {load.failed} failed"
    )
    print(f"alerts from the stop to the recovery ({recorder.polls} polls): {seen or 'none'}")
    assert load.completed > 0
    assert load.failed == 0, f"{load.failed} requests failed while kubelet was stopped"
    assert recorder.polls > 0, "no poll of /api/v1/alerts succeeded"
    assert seen == [], f"alerts went pending or fired while every engine served: {seen}"
