"""Chaos on the control path (issue 14): scenario 3, a sidecar cut off from the operator or
serving it garbage; scenario 7, two InferenceDeployments competing for too few GPUs.

The stack and the accounting are those of test_chaos.py (its `infd`, `Accounted` and `Tally`):
engine twins behind the operator as a process, on the real node (kubelet, containerd, runc; the
pods from the images this checkout builds; a cluster of the module's own with 4 fake GPUs), load
spread over each deployment's ready pod IPs as a Service would, every request counted against
the engine that got it.

Scenario 3. One of two sidecars is partitioned from the operator (`realnode.Partition`: a
netfilter rule in the pod's own network namespace drops the packets from the host, where the
operator runs; kubelet's probes come from the node's bridge and still get through), or answers
it with garbage (`standin`: the sidecar's processes are stopped and a stand-in answers on its
own socket, kubelet's probes as the sidecar would, the operator's report requests with
garbage). Once
the operator reports it, minReplicas drops from 2 to 1, so that the light load would take a
pod away if the missing report counted as idle; the fault lasts 30 s more, longer than the
stable window and the scale-down delay together. Goals: no request fails on either engine, the
pod stays ready, the Deployment's count and generation do not move while the fault lasts,
MetricsAvailable names the pod and why and a MetricsMissing Event says so; after the heal the
reports come back (MetricsRestored) and the autoscaler acts again (the one scale action is the
scale-down, with every report fresh). The times to detect, recover and scale are printed.

Scenario 7. Two deployments of 1 to 3 one-GPU replicas under load on a cluster of fewer GPUs
than the six they want. Goals: as many pods run as there are GPUs, the rest stay Pending, the
operator says so (ScalingLimited, PodsUnschedulable, the scheduler's words), no count changes
direction while the load lasts (no flapping), no request fails, and once the load is gone both
go back to one replica and the GPUs are free. Alerts (a real Prometheus, as for scenario 3):
KVScaleDesiredReplicasNotReached must go pending for the deployment whose pods wait, the
capacity alerts may (a full cache at maxReplicas, a queue on its one pod), and none of the
alerts about missing data, flapping or a failing operator may; none fires within the run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration import realnode, standin, test_autoscale_twin, test_chaos
from tests.integration.autoscale_story import (
    Story,
    Watch,
    is_ready,
    metrics_available,
    wait_metrics_available,
    wait_ready,
)
from tests.integration.conftest import Operator
from tests.support import manifest, prometheus, wait

from kvscale import report
from kvscale.localstack import cluster as local
from kvscale.localstack import node

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FAULT_S = 30.0
"""How long the fault lasts once reported: longer than the stable window (8 s) and the
scale-down delay (15 s) of test_chaos.infd together, so only the missing data holds the count."""
SIDECAR_PORT = 9090  # the CRD's default sidecar port, which test_chaos.infd keeps
MODES = ("partition", "garbage")
# What the chart's rules (charts/kvscale/templates/_alerts.tpl) say about a sidecar whose
# report is missing: kvscale_autoscaler_unreported_pods is 1 for the fault's 30 s and more, so
# KVScaleOccupancyReportsMissing goes pending (its `for:` is 5 minutes, so it cannot fire).
# Nothing else may go even pending: the load is light, the count holds, and the one scale-down
# after the heal is no flapping.
EXPECTED_PENDING = {"KVScaleOccupancyReportsMissing"}
# Scenario 7: what a fleet short of GPUs under load may and may not page about.
SHORT_OF_GPUS_MAY_GO_PENDING = {
    "KVScaleDesiredReplicasNotReached",
    "KVScaleKVCacheSaturatedAtMaxReplicas",
    "KVScaleSustainedWaitingQueue",
    "KVScalePreemptionStorm",
}


cluster = realnode.module_cluster("cc")


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, test_chaos.NAME)
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "infd", test_chaos.NAME, "-n", namespace, "--wait=false")


def garbage(real: dict[str, Any]) -> list[bytes]:
    """What a broken sidecar might serve: not JSON, JSON of another shape, a report of a major
    version nobody knows, and the pod's own last report with more blocks used than it has."""
    overfull = dict(real, num_used_blocks=real["num_gpu_blocks"] * 10)
    future = dict(real, schema_version=f"{report.SCHEMA_GROUP}/v9")
    return [
        b"\x00\x17<html>502 Bad Gateway</html>",
        json.dumps([1, 2, 3]).encode(),
        json.dumps(future).encode(),
        json.dumps(overfull).encode(),
    ]


def sidecar_report(ip: str) -> dict[str, Any]:
    url = f"http://{ip}:{SIDECAR_PORT}{report.PATH}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        found: dict[str, Any] = json.load(response)
    return found


@pytest.mark.parametrize("mode", MODES)
def test_a_sidecar_cut_off_or_serving_garbage_holds_the_count_and_is_named(
    story: Story, alerts: prometheus.Prometheus, mode: str
) -> None:
    story.cluster.kubectl(
        "apply", "-n", story.namespace, "-f", "-", input=json.dumps(test_chaos.infd())
    )
    ips = wait_ready(story, 2)
    wait_metrics_available(story)
    test_chaos.all_quiet_before_the_fault(alerts, story)
    recorder = prometheus.AlertRecorder(alerts)
    (victim,) = [p for p in story.pods() if p["status"]["podIP"] == ips[0]]
    name = victim["metadata"]["name"]
    pids = realnode.container_pids(story.cluster, victim, "sidecar")
    # The operator's words for each fault (kvscale_operator.autoscaler.collector).
    words = "no answer within" if mode == "partition" else "invalid report"
    watch = Watch(story)
    load = test_chaos.Accounted(concurrency=4)
    load.targets = list(ips)
    load.start()
    fault: realnode.Partition | standin.StandIn
    if mode == "partition":
        fault = realnode.Partition(story.cluster, pids[0], SIDECAR_PORT)
    else:
        engine_url = f"http://{ips[0]}:{test_chaos.ENGINE_PORT}"
        bodies = garbage(sidecar_report(ips[0]))
        fault = standin.StandIn(pids, ips[0], SIDECAR_PORT, engine_url, bodies)
    left_ready = False

    def route(faulted: bool = False) -> None:
        """The router follows readiness, as a Service's endpoints would."""
        nonlocal left_ready
        ready = story.ready_ips()
        left_ready = left_ready or (faulted and ips[0] not in ready)
        load.targets = ready or load.targets
        alerts.scrape_pods(story.pods())  # the PodMonitor's view follows the pods

    try:
        time.sleep(5)
        recorder.start()
        fault.start()
        faulted_at = time.monotonic()

        def detected() -> bool:
            watch.check(what=f"before the fault ({mode}) was reported")
            route(faulted=True)
            return story.names(name, words)

        wait.eventually(detected, f"MetricsAvailable naming {name}: {words}", timeout_s=60)
        detected_after = time.monotonic() - faulted_at
        # Light load: one pod would do, and minReplicas no longer holds two. Only the missing
        # report does, for longer than the stable window and the scale-down delay together.
        story.cluster.kubectl(
            "patch", "infd", story.name, "-n", story.namespace, "--type", "merge",
            "-p", '{"spec":{"scaling":{"minReplicas":1}}}',
        )  # fmt: skip
        until = time.monotonic() + FAULT_S
        while time.monotonic() < until:
            watch.check(what=f"while the sidecar was cut off ({mode})")
            route(faulted=True)
            time.sleep(0.5)
        fault.heal()
        healed_at = time.monotonic()

        def recovered() -> bool:
            watch.check(what=f"after the heal ({mode})")
            route()
            return metrics_available(story)

        wait.eventually(recovered, "MetricsAvailable=True after the heal", timeout_s=90)
        recovered_after = time.monotonic() - healed_at

        # Every report back, the autoscaler acts again: the light load scales it down.
        def scaled_down() -> bool:
            watch.check(what="once recovered")
            route()
            return watch.count == 1

        wait.eventually(scaled_down, "the scale-down to 1 after the heal", timeout_s=120)
        scaled_after = time.monotonic() - healed_at
        time.sleep(3)  # the removed pod's last requests finish (or fail, and are counted)
    finally:
        fault.heal()
        alerts_seen = recorder.stop()
        load.stop()
    tallies = [load.tallies[ip] for ip in ips]
    missing = story.events("MetricsMissing")
    restored = story.events("MetricsRestored")
    print(f"sidecar {mode}: engine behind it {tallies[0]}; the other {tallies[1]}")
    if isinstance(fault, standin.StandIn):
        print(f"stand-in: {fault.asked} report requests garbled, {fault.probed} probes")
        asked = fault.asked
    else:
        print(f"partition: {fault.dropped} packets from the host dropped")
        asked = fault.dropped
    print(
        f"detected after {detected_after:.1f} s; recovered {recovered_after:.1f} s after the "
        f"heal; scaled down {scaled_after:.1f} s after it; count changes: {watch.changes}"
    )
    print(f"Events: {[e['message'] for e in missing + restored]}")
    print(f"alerts from the fault to the scale-down (s since the fault; {recorder.polls} polls):")
    for line in [str(item) for item in alerts_seen] or ["none"]:
        print(f"  {line}")
    assert asked > 0, "the operator never met the fault: it was not in its path"
    for tally in tallies:
        assert tally.completed > 0
        assert tally.failed == 0, f"requests failed: {tally.why}"
    assert not left_ready, "the pod left the ready set during the fault: it reached its probes"
    assert watch.changes == [(2, 1)], f"scale actions: {watch.changes}"
    assert any(f"{name}: " in event["message"] for event in missing), missing
    assert restored, "no MetricsRestored Event after the heal"
    pending = {item.alert.name for item in alerts_seen}
    assert recorder.polls > 0, "no poll of /api/v1/alerts succeeded"
    assert pending == EXPECTED_PENDING, f"alerts seen: {alerts_seen}"
    assert all(item.alert.state == "pending" for item in alerts_seen), alerts_seen
    for item in alerts_seen:
        assert (item.alert.label("namespace"), item.alert.label("name")) == (
            story.namespace,
            story.name,
        ), item


# Scenario 7: two deployments, fewer GPUs than both want.

PAIR = ("left", "right")
BLOCKS = 64
"""KV blocks per twin engine: Accounted's requests (200 prompt + 60 generated tokens, 17 blocks
of 16) fill one with four in flight, so twelve per deployment keep three pods full."""


def small_twins(name: str) -> dict[str, Any]:
    document = test_autoscale_twin.infd(1, name=name, scaling=manifest.autoscaling(8, 15))
    engine = document["spec"]["engine"]
    engine["maxModelLen"] = 512  # within (BLOCKS - 1) x 16 tokens, as the engine requires
    engine["extraArgs"] = ["--num-gpu-blocks-override", str(BLOCKS)]
    return document


def gpus_held(cluster: local.Cluster, namespace: str | None = None) -> int:
    """GPUs requested by pods bound to a node and not finished (in `namespace`, or anywhere)."""
    where = ["-n", namespace] if namespace else ["-A"]
    pods = json.loads(cluster.kubectl("get", "pods", *where, "-o", "json").stdout)["items"]
    held = 0
    for pod in pods:
        if not pod["spec"].get("nodeName") or pod["status"].get("phase") in (
            "Succeeded",
            "Failed",
        ):
            continue
        for container in pod["spec"]["containers"]:
            requests = (container.get("resources") or {}).get("requests") or {}
            held += int(requests.get(node.GPU_RESOURCE, 0))
    return held


def pending(story: Story) -> list[dict[str, Any]]:
    """The deployment's pods the scheduler could not place."""
    found = []
    for pod in story.pods():
        for condition in pod["status"].get("conditions") or []:
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                found.append(condition)
    return found


class Counts:
    """Each Deployment's spec.replicas as polled: the changes, and how often they turned."""

    def __init__(self, stories: list[Story]) -> None:
        self.stories = stories
        self.seen: dict[str, list[int]] = {story.name: [story.replicas()[0]] for story in stories}

    def poll(self) -> None:
        for story in self.stories:
            replicas = story.replicas()[0]
            if replicas != self.seen[story.name][-1]:
                self.seen[story.name].append(replicas)

    def turns(self, name: str) -> int:
        """Direction changes: up then down is one."""
        values = self.seen[name]
        steps = [b - a for a, b in itertools.pairwise(values)]
        return sum(1 for a, b in itertools.pairwise(steps) if (a > 0) != (b > 0))


def test_two_deployments_short_of_gpus_run_what_fits_and_give_it_back(
    cluster: local.Cluster, namespace: str, operator: Operator, alerts: prometheus.Prometheus
) -> None:
    capacity = cluster.nodes * cluster.gpus_per_node
    assert capacity < 2 * 3, f"the cluster has {capacity} GPUs: enough for both, no competition"
    # Pods of earlier tests (their namespaces deleted in the background) may still hold GPUs.
    wait.eventually(
        lambda: gpus_held(cluster) == 0,
        "every GPU free before the test",
        timeout_s=180,
        retry_on=wait.NOT_MADE_YET,
    )
    stories = [Story(cluster, namespace, name) for name in PAIR]
    for name in PAIR:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(small_twins(name)))
    wait.eventually(
        lambda: all(len(s.ready_ips()) == 1 and metrics_available(s) for s in stories),
        "1 ready replica reporting in each",
        timeout_s=120,
        retry_on=wait.NOT_MADE_YET,
    )
    test_chaos.all_quiet_before_the_fault(alerts, *stories)
    recorder = prometheus.AlertRecorder(alerts)
    recorder.start()
    counts = Counts(stories)
    loads = {story.name: test_chaos.Accounted(concurrency=12) for story in stories}
    limited: dict[str, dict[str, Any]] = {}
    try:
        for story in stories:
            loads[story.name].targets = story.ready_ips()
            loads[story.name].start()

        def settled() -> bool:
            counts.poll()
            alerts.scrape_pods([pod for story in stories for pod in story.pods()])
            for story in stories:
                loads[story.name].targets = story.ready_ips() or loads[story.name].targets
            wanted = sum(story.replicas()[0] for story in stories)
            running = sum(len(story.ready_ips()) for story in stories)
            waiting = sum(len(pending(story)) for story in stories)
            return wanted == 6 and running == capacity and waiting == wanted - capacity

        loaded_at = time.monotonic()
        wait.eventually(
            settled,
            "both at 3 replicas, the GPUs full, the rest Pending",
            timeout_s=180,
            retry_on=wait.NOT_MADE_YET,
        )
        print(f"settled {time.monotonic() - loaded_at:.1f} s after the load began")
        # Held under load: every pod that fits runs, the rest wait, and nothing turns.
        until = time.monotonic() + 30
        while time.monotonic() < until:
            assert settled(), f"the placement moved under steady load: {counts.seen}"
            for story in stories:
                condition = story.condition("ScalingLimited") or {}
                if pending(story) and condition.get("reason") == "PodsUnschedulable":
                    limited[story.name] = condition
            time.sleep(1)
    finally:
        for load in loads.values():
            load.stop()
    placed = {story.name: len(story.ready_ips()) for story in stories}
    waiting = {story.name: len(pending(story)) for story in stories}
    counts_waited = dict(waiting)
    print(f"{capacity} GPUs; running {placed}, pending {waiting}; counts seen {counts.seen}")
    for name, load in loads.items():
        print(f"{name}: {dict(load.tallies)}")
    print(f"ScalingLimited: {limited}")
    for story in stories:
        if waiting[story.name]:
            said = limited.get(story.name)
            assert said, f"{story.name}: pods Pending, but ScalingLimited never said so"
            assert said["status"] == "True"
            assert f"Insufficient {node.GPU_RESOURCE}" in said["message"]
    for name, load in loads.items():
        assert sum(t.completed for t in load.tallies.values()) > 0, name
        failed = {ip: t.why for ip, t in load.tallies.items() if t.failed}
        assert not failed, f"{name}: requests failed on running pods: {failed}"
    for name in PAIR:
        assert counts.turns(name) == 0, f"{name} changed direction under load: {counts.seen}"

    # The load gone, both give their pods back after the scale-down delay: one pod each, and
    # the GPUs of the others free once they are gone (a terminating pod still holds its own).
    def given_back() -> bool:
        counts.poll()
        one_each = all(story.replicas()[0] == 1 and len(story.pods()) == 1 for story in stories)
        return one_each and gpus_held(cluster, namespace) == len(PAIR)

    idle_at = time.monotonic()
    wait.eventually(
        given_back, "both back at 1 replica, 2 GPUs held", timeout_s=180, retry_on=wait.NOT_MADE_YET
    )
    print(f"given back {time.monotonic() - idle_at:.1f} s after the load stopped")
    seen = recorder.stop()
    print(f"alerts from the load to the end ({recorder.polls} polls of /api/v1/alerts):")
    for line in [str(item) for item in seen] or ["none"]:
        print(f"  {line}")
    print(f"counts seen, load and idle: {counts.seen}")
    for name in PAIR:
        assert counts.turns(name) <= 1, f"{name} flapped: {counts.seen}"
    for story in stories:
        assert not pending(story)
        assert is_ready(story.pods()[0])
    assert recorder.polls > 0, "no poll of /api/v1/alerts succeeded"
    assert all(item.alert.state == "pending" for item in seen), f"an alert fired: {seen}"
    went_pending = {(item.alert.name, item.alert.label("name")) for item in seen}
    for name in [name for name in PAIR if counts_waited[name]]:
        assert ("KVScaleDesiredReplicasNotReached", name) in went_pending, seen
    wrong = {alert for alert, _ in went_pending} - SHORT_OF_GPUS_MAY_GO_PENDING
    assert not wrong, f"alerts about a fault that did not happen: {wrong}"
