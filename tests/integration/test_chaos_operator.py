"""Chaos, scenario 1 of issue 14: the operator (the leader) killed mid-scale-up and
mid-scale-down.

The operator runs as a process here, so SIGKILL on it is what a leader pod's death is: no
shutdown, no status written on the way out. The engines run on the real node (kubelet,
containerd, runc; the built images), on a cluster of the module's own. One story, two kills,
with request accounting (`Accounted`, from test_chaos.py):

A. Mid-scale-up: long prompts on one twin engine make the operator scale 1 -> 2; the moment
   the Deployment's replicas change, the operator is SIGKILLed (the new pod is still
   starting) and a new one started. Goals: no request fails, the new operator does not undo
   the scale-up (a fresh Autoscaler seeds its scale-down delay with the current count), no
   other scale action, and it resumes: its /metrics export the deployment and ScalingActive
   is True, within a time measured and printed.
B. Mid-scale-down: load cut to a trickle; the moment a pod carries a negative
   pod-deletion-cost (set just before the scale patch) the operator is SIGKILLed and a new
   one started. Goals: it finishes the scale-down once (no flapping), the pod that leaves is
   the one marked, the survivor carries no stale negative cost, and no request fails on it.
   The operator marks and patches in one tick, milliseconds apart, so the kill (polled via
   kubectl) usually lands after the patch, while the marked pod terminates; a kill between
   the two is allowed for (the count then goes 2 -> 1 once, later) but not forced.

Alerts: a real Prometheus evaluates the chart's rules over the whole story (test_chaos.py says
how), scraping the operator at each new process's port. No alert may fire, and none that
would be a wrong page for this story may go even pending: KVScaleOccupancyReportsMissing (the
data path is untouched), KVScaleScalingFlapping, KVScaleAutoscalerLoopFailing. The others may
go pending and are printed: KVScaleOperatorNotReconciling while no operator exports its
leader gauge, KVScaleDesiredReplicasNotReached while the new pod starts, and the capacity
alerts under a load that fills the cache at maxReplicas.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration import realnode
from tests.integration import test_autoscale_twin as twin
from tests.integration.autoscale_story import (
    Story,
    Watch,
    is_ready,
    wait_metrics_available,
    wait_ready,
)
from tests.integration.conftest import Operator
from tests.integration.test_chaos import Accounted, all_quiet_before_the_fault
from tests.support import manifest, prometheus, wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "opkill"
DELAY_S = 15
STABLE_S = 8
COST = "controller.kubernetes.io/pod-deletion-cost"
# Alerts that would page someone wrongly when only the operator fails (the module docstring
# says why); test_real_node_operator's leader-pod stories hold its replicas to them too.
QUIET_WHEN_ONLY_THE_OPERATOR_FAILS = {
    "KVScaleOccupancyReportsMissing",
    "KVScaleScalingFlapping",
    "KVScaleAutoscalerLoopFailing",
}


def infd() -> dict[str, Any]:
    scaling = manifest.autoscaling(STABLE_S, DELAY_S)
    scaling["maxReplicas"] = 2  # one GPU each: both fit, so the scale-up is whole
    return twin.infd(1, name=NAME, scaling=scaling)


cluster = realnode.module_cluster("co")


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, NAME)
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "infd", NAME, "-n", namespace, "--wait=false")


def sigkill(operator: Operator) -> None:
    """SIGKILL the operator process (a leader pod's death), then forget it."""
    process = operator.process
    assert process is not None, "the operator was not running"
    assert process.poll() is None, "the operator had exited already"
    process.kill()
    code = process.wait()
    assert code == -9
    operator.process = None  # the `operator` fixture starts one again if the test fails here
    with operator.log_path.open("ab") as log:
        log.write(b"--- SIGKILLed by test_chaos_operator\n")


def exported(operator: Operator, namespace: str) -> bool:
    """The running operator's /metrics export this deployment's desired replicas: it ticked."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    return any(
        line.startswith("kvscale_autoscaler_desired_replicas{") and f'"{namespace}"' in line
        for line in text.splitlines()
    )


def resumed(story: Story, operator: Operator, killed_at: float) -> float:
    """Seconds from the kill until the new operator exports the deployment (it has ticked)
    and ScalingActive is True."""
    wait.eventually(
        lambda: (
            exported(operator, story.namespace)
            and (c := story.condition("ScalingActive")) is not None
            and c["status"] == "True"
        ),
        "the new operator exporting the deployment with ScalingActive=True",
        timeout_s=90,
        interval_s=0.25,
        retry_on=wait.NOT_MADE_YET,
    )
    return time.monotonic() - killed_at


def negative_costs(story: Story, terminating: bool = False) -> dict[str, str]:
    """Pod name -> IP of the pods with a negative deletion cost (with those terminating)."""
    items = story.get("pods", "-l", story.selector)["items"] if terminating else story.pods()
    return {
        pod["metadata"]["name"]: pod["status"].get("podIP", "")
        for pod in items
        if (pod["metadata"].get("annotations") or {}).get(COST, "").startswith("-")
    }


def restart(operator: Operator, alerts: prometheus.Prometheus) -> None:
    """A new operator process, scraped at its own metrics port (as a new leader pod is found
    by its ServiceMonitor)."""
    operator.start()
    alerts.scrape_operator(f"127.0.0.1:{operator.metrics_port}")


def scraped_after(operator: Operator, alerts: prometheus.Prometheus, killed_at: float) -> float:
    """Seconds from the kill until Prometheus has scraped the new operator (up == 1)."""
    address = f"127.0.0.1:{operator.metrics_port}"
    wait.eventually(
        lambda: alerts.up(alerts.monitoring.operator_job).get(address) == 1.0,
        f"Prometheus scraping the new operator at {address}",
        timeout_s=120,
        retry_on=(OSError,),
    )
    return time.monotonic() - killed_at


def test_the_operator_killed_mid_scale_up_and_mid_scale_down(
    story: Story, operator: Operator, alerts: prometheus.Prometheus
) -> None:
    story.cluster.kubectl("apply", "-n", story.namespace, "-f", "-", input=json.dumps(infd()))
    wait_ready(story, 1)
    wait_metrics_available(story)
    all_quiet_before_the_fault(alerts, story)
    recorder = prometheus.AlertRecorder(alerts)
    recorder.start()
    try:
        _kill_mid_scale_up_and_mid_scale_down(story, operator, alerts)
    finally:
        seen = recorder.stop()
    print(f"alerts over both kills (s since the first poll; {recorder.polls} polls):")
    for line in [str(item) for item in seen] or ["none"]:
        print(f"  {line}")
    assert recorder.polls > 0, "no poll of /api/v1/alerts succeeded"
    assert all(item.alert.state == "pending" for item in seen), f"an alert fired: {seen}"
    wrong = {item.alert.name for item in seen} & QUIET_WHEN_ONLY_THE_OPERATOR_FAILS
    assert not wrong, f"alerts that must stay quiet went pending: {wrong}"


def _kill_mid_scale_up_and_mid_scale_down(
    story: Story, operator: Operator, alerts: prometheus.Prometheus
) -> None:

    # A. Mid-scale-up.
    load = Accounted(concurrency=8, prompt_tokens=3000, max_tokens=100)
    load.targets = story.ready_ips()
    watch = Watch(story)
    load.start()
    try:
        wait.eventually(
            lambda: story.replicas()[0] == 2,
            "the scale-up to 2",
            timeout_s=90,
            interval_s=0.2,
            retry_on=wait.NOT_MADE_YET,
        )
        sigkill(operator)
        killed_at = time.monotonic()
        starting = [p["metadata"]["name"] for p in story.pods() if not is_ready(p)]
        watch = Watch(story)  # from the count just asked for
        restart(operator, alerts)
        up_resumed_s = resumed(story, operator, killed_at)
        up_scraped_s = scraped_after(operator, alerts, killed_at)
        # Under the same load the count must stay at 2 until both pods serve and beyond.
        until = time.monotonic() + STABLE_S + DELAY_S
        both_ready_s: float | None = None
        while time.monotonic() < until:
            load.targets = story.ready_ips() or load.targets
            if both_ready_s is None and len(load.targets) == 2:
                both_ready_s = time.monotonic() - killed_at
            watch.check(what="after the operator was killed mid-scale-up")
            alerts.scrape_pods(story.pods())
            time.sleep(0.5)
    finally:
        load.stop()
    up_tallies = dict(load.tallies)
    print(f"A. pods starting at the kill: {starting}; both ready {both_ready_s} s after it")
    print(f"A. new operator resumed {up_resumed_s:.1f} s after the kill; changes: {watch.changes}")
    print(f"A. Prometheus scraped the new operator {up_scraped_s:.1f} s after the kill")
    for ip, tally in up_tallies.items():
        print(f"A. engine {ip}: {tally}")
    assert starting, "the kill came after the new pod was ready, not mid-scale-up"
    assert both_ready_s is not None, "the second pod never became ready"
    assert watch.changes == [], f"scale actions after the restart: {watch.changes}"
    assert sum(t.completed for t in up_tallies.values()) > 0
    assert all(t.failed == 0 for t in up_tallies.values()), up_tallies
    assert story.replicas()[0] == 2

    # B. Mid-scale-down: a trickle of short requests, then the kill at the first negative
    # deletion cost (the operator sets them just before it patches the count).
    trickle = Accounted(concurrency=1)
    trickle.targets = story.ready_ips()
    watch = Watch(story)
    trickle.start()
    try:
        marked: dict[str, str] = wait.eventually(
            lambda: negative_costs(story, terminating=True) or None,
            "a pod marked for removal",
            timeout_s=STABLE_S + DELAY_S + 60,
            interval_s=0.1,
            retry_on=wait.NOT_MADE_YET,
        )
        sigkill(operator)
        killed_at = time.monotonic()
        count_at_kill = story.replicas()[0]
        watch = Watch(story)
        ((victim, victim_ip),) = marked.items()
        # The router stops sending to the pod marked for removal (as a Service would once it
        # terminates); the trickle keeps running on the survivor.
        trickle.targets = [ip for ip in trickle.targets if ip != victim_ip]
        restart(operator, alerts)
        down_resumed_s = resumed(story, operator, killed_at)
        down_scraped_s = scraped_after(operator, alerts, killed_at)
        done_s: float | None = None
        until = time.monotonic() + STABLE_S + DELAY_S + 30
        while time.monotonic() < until:
            watch.check(what="after the operator was killed mid-scale-down")
            alerts.scrape_pods(story.pods())
            if done_s is None and story.replicas()[0] == 1 and len(story.pods()) == 1:
                done_s = time.monotonic() - killed_at
            time.sleep(0.5)
    finally:
        trickle.stop()
    left = [p["metadata"]["name"] for p in story.pods()]
    survivor = trickle.tallies.get(next(iter(trickle.targets), ""), None)
    print(f"B. marked at the kill: {marked}; the Deployment's count at the kill: {count_at_kill}")
    print(f"B. operator resumed {down_resumed_s:.1f} s after the kill; changes: {watch.changes}")
    print(f"B. Prometheus scraped the new operator {down_scraped_s:.1f} s after the kill")
    print(f"B. scale-down done {done_s} s after the kill; pods left: {left}")
    for ip, tally in trickle.tallies.items():
        print(f"B. engine {ip}{' (removed)' if ip == victim_ip else ''}: {tally}")
    assert done_s is not None, "the scale-down was not finished"
    # Once, and only down: from 2 if the kill came before the patch, nothing if after it.
    assert watch.changes in ([(2, 1)], []), watch.changes
    assert left, "no pod left"
    assert victim not in left, f"the wrong pod left: marked {victim}, left {left}"
    assert negative_costs(story) == {}, "a stale negative deletion cost on the survivor"
    assert survivor is not None
    assert survivor.completed > 0
    assert survivor.failed == 0, survivor.why
