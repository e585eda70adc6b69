"""Chaos, scenario 6 of issue 14: GitOps applies under load, with request accounting.

Two twin engines (one GPU each, min = max = 2, so the autoscaler's answer is always 2) serve
steady light load (`Accounted`, from test_chaos.py) on a cluster of 4 fake GPUs (a real node:
kubelet, containerd, runc, the built images; a cluster of the module's own), while:

A. A GitOps tool without the ignoreDifferences docs/gitops.md recommends server-side applies
   the engine Deployment's `spec.replicas: 1` under its own field manager:
   1. plainly: refused, with a conflict naming `kvscale-autoscaler`; nothing moves;
   2. with `--force-conflicts` (a tool that takes the field): the Deployment goes to 1, one pod
      is drained and removed, and the operator — the field's owner by design, the tool is
      misconfigured — sets 2 again on its next tick (taking the field back). The test measures
      how long, and how many requests the forced scale-down cut.
B. A version bump in Git: the InferenceDeployment's engine image moves to a new tag (of the
   same content, tagged in the node's containerd as a registry push would), which changes the
   pod template: a rolling update (maxSurge 1, maxUnavailable 0, as rendered):
   1. with GPUs free: the surge pod starts, old pods drain and go, one at a time;
   2. with every GPU taken (another deployment holds the 2 free ones): the surge pod stays
      Pending, the old pods keep serving, the rollout waits; once that deployment is deleted
      it completes.
   Throughout, the autoscaler must not read the rollout's extra or unready pods as load or as
   missing data: the count stays 2 (no scale action at all in B).

Alerts: a real Prometheus evaluates the chart's rules throughout (test_chaos.py says how).
KVScaleDesiredReplicasNotReached must go pending for the other deployment (its pods never
become ready) and may for this one (while a forced-away pod comes back, or a rollout's pods
start); nothing else may go even pending, and nothing fires.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.integration import realnode
from tests.integration import test_autoscale_twin as twin
from tests.integration.autoscale_story import Story, is_ready, wait_metrics_available, wait_ready
from tests.integration.conftest import Operator
from tests.integration.test_chaos import Accounted, Tally, all_quiet_before_the_fault
from tests.integration.test_gitops_ownership import GITOPS, owners
from tests.support import manifest, prometheus, wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "gitops"
BLOCKER = "gpu-hog"


def infd() -> dict[str, Any]:
    scaling = manifest.autoscaling(8, 15)
    scaling["minReplicas"] = scaling["maxReplicas"] = 2  # every scale action is someone else's
    return twin.infd(1, name=NAME, scaling=scaling)


def blocker(namespace: str) -> str:
    """Another deployment whose 2 pods take one GPU each: never ready (the webecho image
    serves on 8080, not the engine port the probes ask), but scheduled, so their GPUs are
    taken."""
    spec = manifest.never_ready_spec(
        resources={"gpusPerReplica": 1},
        scaling={"minReplicas": 2, "maxReplicas": 2},
    )
    return yaml.safe_dump(manifest.inference_deployment(BLOCKER, spec, namespace))


cluster = realnode.module_cluster("go")


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, NAME)
    for name in (NAME, BLOCKER):
        with contextlib.suppress(Exception):
            cluster.kubectl("delete", "infd", name, "-n", namespace, "--wait=false")


def replicas_apply(story: Story, count: int, *extra: str) -> Any:
    """What a GitOps tool with the rendered Deployment in Git does (Argo CD, ServerSideApply)."""
    rendered = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": story.namespace},
        "spec": {"replicas": count},
    }
    return story.cluster.kubectl(
        "apply", "--server-side", f"--field-manager={GITOPS}", *extra, "-f", "-",
        input=yaml.safe_dump(rendered), check=False,
    )  # fmt: skip


def replicas_owners(story: Story) -> set[str]:
    deployment = json.loads(
        story.cluster.kubectl(
            "get", "deployment", NAME, "-n", story.namespace, "-o", "json",
            "--show-managed-fields",
        ).stdout
    )  # fmt: skip
    return owners(deployment, ("f:spec", "f:replicas"))


def conditions(story: Story) -> dict[str, str]:
    found = (story.infd().get("status") or {}).get("conditions") or []
    return {
        c["type"]: f"{c['status']} {c.get('reason', '')}: {c.get('message', '')}" for c in found
    }


class Serving:
    """Steady load over the ready set, refreshed by `poll`; the Deployment's counts seen."""

    def __init__(self, story: Story, alerts: prometheus.Prometheus) -> None:
        self.story = story
        self.alerts = alerts
        self.load = Accounted(concurrency=4)
        self.load.targets = story.ready_ips()
        self.counts = [story.replicas()[0]]
        self.generation = story.replicas()[1]
        self.left: dict[str, float] = {}  # when each IP left the router's targets

    def failures_after_leaving(self) -> dict[str, str]:
        """Per IP that failed: its failures before and after it left the targets (after: only
        requests already in flight, or a poll's lag)."""
        found = {}
        for ip, tally in self.load.tallies.items():
            if tally.failed_at:
                left = self.left.get(ip)
                before = sum(1 for t in tally.failed_at if left is None or t <= left)
                first, last = (t - (left or 0.0) for t in (tally.failed_at[0], tally.failed_at[-1]))
                found[ip] = (
                    f"{before} before leaving, {tally.failed - before} after; "
                    f"from {first:+.2f} s to {last:+.2f} s of leaving"
                )
        return found

    def poll(self) -> list[dict[str, Any]]:
        pods = self.story.pods()  # not terminating: a Service drops those at once
        # The PodMonitor's view follows every engine pod in the namespace (the other
        # deployment's too).
        self.alerts.scrape_pods(self.story.get("pods")["items"])
        ready = [p["status"]["podIP"] for p in pods if is_ready(p)]
        now = time.monotonic()
        for ip in set(self.load.targets) - set(ready):
            self.left[ip] = now
        self.load.targets = ready or self.load.targets
        count, self.generation = self.story.replicas()
        if count != self.counts[-1]:
            self.counts.append(count)
        return pods

    def until(self, done: Any, what: str, timeout_s: float) -> float:
        """Polls every 0.25 s until `done(pods)`; seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if done(self.poll()):
                return time.monotonic() - start
            time.sleep(0.25)
        raise AssertionError(f"{what}: not within {timeout_s} s; counts {self.counts}")

    def hold(self, seconds: float) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = []
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            pods = self.poll()
            time.sleep(0.25)
        return pods


def totals(tallies: dict[str, Tally]) -> tuple[int, int, dict[str, int]]:
    why: dict[str, int] = {}
    for tally in tallies.values():
        for key, n in tally.why.items():
            why[key] = why.get(key, 0) + n
    return sum(t.completed for t in tallies.values()), sum(t.failed for t in tallies.values()), why


def bump(story: Story, image: str) -> None:
    """What a GitOps tool applies after a version bump in Git: the engine's image, a new tag
    of the image the node has (tagged first, as the build's push to a registry would)."""
    realnode.tag_image(story.cluster, realnode.ENGINE_TWIN_IMAGE, image)
    story.cluster.kubectl(
        "patch", "infd", NAME, "-n", story.namespace, "--type=merge",
        "-p", json.dumps({"spec": {"engine": {"image": image}}}),
    )  # fmt: skip


def engine_images(pods: list[dict[str, Any]]) -> set[str]:
    return {c["image"] for p in pods for c in p["spec"]["containers"] if c["name"] == "engine"}


def template_hash(pod: dict[str, Any]) -> str:
    return str(pod["metadata"].get("labels", {}).get("pod-template-hash"))


def test_gitops_applies_of_replicas_and_of_the_pod_template_under_load(
    story: Story, alerts: prometheus.Prometheus
) -> None:
    story.cluster.kubectl("apply", "-n", story.namespace, "-f", "-", input=json.dumps(infd()))
    wait_ready(story, 2)
    wait_metrics_available(story)
    assert replicas_owners(story) == {"kvscale-autoscaler"}
    all_quiet_before_the_fault(alerts, story)
    recorder = prometheus.AlertRecorder(alerts)
    recorder.start()
    serving = Serving(story, alerts)
    serving.load.start()
    try:
        # A1. The plain apply is refused; nothing moves.
        refused = replicas_apply(story, 1)
        assert refused.returncode != 0
        assert 'conflict with "kvscale-autoscaler"' in refused.stderr, refused.stderr
        serving.hold(5)
        assert serving.counts == [2]
        a1 = totals(serving.load.tallies)

        # A2. --force-conflicts: the tool takes the field and the count; the operator takes
        # them back on its next tick (minReplicas 2).
        serving.poll()
        generation = serving.generation
        forced = replicas_apply(story, 1, "--force-conflicts")
        assert forced.returncode == 0, forced.stderr
        forced_at = time.monotonic()
        # The operator may set 2 again (and take the field back) before the next kubectl call,
        # so neither the count 1 nor the tool's ownership need be seen: the Deployment's
        # generation counts both writes, the force's and the operator's.
        taken = replicas_owners(story)
        back_s = serving.until(
            lambda _: serving.counts[-1] == 2 and serving.generation >= generation + 2,
            "the operator setting 2 again",
            timeout_s=30,
        )
        owner_after = replicas_owners(story)
        serving.until(
            lambda pods: sum(is_ready(p) for p in pods) == 2 and len(pods) == 2,
            "two ready pods again",
            timeout_s=60,
        )
        ready_s = time.monotonic() - forced_at
        serving.hold(5)
        counts_a = list(serving.counts)
        writes_a = serving.generation - generation  # the force's own write included
        ups = [e["message"] for e in story.events("ScaledUp")]
        status_a = conditions(story)
        a2 = totals(serving.load.tallies)

        # B1. A new engine image from Git with 2 GPUs free: a rolling update.
        serving.counts = [story.replicas()[0]]
        old = {template_hash(p) for p in story.pods()}
        bump(story, f"{realnode.ENGINE_TWIN_IMAGE}-gitops.1")

        def rolled(pods: list[dict[str, Any]], before: set[str]) -> bool:
            return (
                len(pods) == 2
                and all(is_ready(p) and template_hash(p) not in before for p in pods)
                and len(story.get("pods", "-l", story.selector)["items"]) == 2
            )

        b1_s = serving.until(lambda pods: rolled(pods, old), "the rollout with GPUs free", 90)
        counts_b1 = list(serving.counts)
        b1 = totals(serving.load.tallies)

        # B2. Every GPU taken, then the same kind of change: the surge pod stays Pending.
        story.cluster.kubectl("apply", "--server-side", "-f", "-", input=blocker(story.namespace))
        hog = Story(story.cluster, story.namespace, BLOCKER)
        wait.eventually(
            lambda: len([p for p in hog.pods() if p["spec"].get("nodeName")]) == 2,
            "the other deployment's 2 pods scheduled",
            timeout_s=60,
            retry_on=wait.NOT_MADE_YET,
        )
        old = {template_hash(p) for p in story.pods()}
        bumped = f"{realnode.ENGINE_TWIN_IMAGE}-gitops.2"
        bump(story, bumped)
        changed_at = time.monotonic()
        pending = serving.until(
            lambda pods: any(template_hash(p) not in old for p in pods),
            "the surge pod",
            timeout_s=30,
        )
        pods = serving.hold(15)
        surge = [p for p in pods if template_hash(p) not in old]
        surge_phase = [p["status"].get("phase") for p in surge]
        old_ready = sum(is_ready(p) for p in pods if template_hash(p) in old)
        status_b2 = conditions(story)
        story.cluster.kubectl("delete", "infd", BLOCKER, "-n", story.namespace, "--wait=false")
        b2_s = serving.until(lambda pods: rolled(pods, old), "the rollout once GPUs freed", 90)
        serving.hold(3)
        counts_b = list(serving.counts)
        images_after = engine_images(story.pods())
    finally:
        serving.load.stop()
        seen = recorder.stop()
    print(f"A1. refused: {refused.stderr.strip()}; counts {counts_a[:1]}; totals {a1}")
    print(f"A2. replicas owners after the force: {taken}; after the operator: {owner_after}")
    print(
        f"A2. counts {counts_a}; 2 again {back_s:.1f} s after the force; both ready {ready_s:.1f} s"
    )
    print(f"A2. writes of the count after the force, its own included: {writes_a}; {ups}")
    print(f"A2. totals (completed, failed, why) since the start: {a2}; conditions {status_a}")
    print(f"B1. rollout with GPUs free done in {b1_s:.1f} s; counts {counts_b1}; totals {b1}")
    print(
        f"B2. surge pod seen {pending:.1f} s after the change; after 15 s: {surge_phase}, "
        f"{old_ready} old pods ready; conditions {status_b2}"
    )
    print(
        f"B2. rollout done {b2_s:.1f} s after the GPUs were freed "
        f"({time.monotonic() - changed_at:.1f} s after the change); counts {counts_b}"
    )
    for ip, tally in serving.load.tallies.items():
        print(f"engine {ip}: {tally}")
    completed, failed, why = totals(serving.load.tallies)
    print(f"all: {completed} completed, {failed} failed {why}")

    print(f"failures against when the pod left the router: {serving.failures_after_leaving()}")
    print(f"alerts over A and B ({recorder.polls} polls of /api/v1/alerts):")
    for line in [str(item) for item in seen] or ["none"]:
        print(f"  {line}")

    assert taken, "nobody owns spec.replicas after the force"
    assert taken <= {GITOPS, "kvscale-autoscaler"}, taken
    assert owner_after == {"kvscale-autoscaler"}, owner_after
    assert counts_a in ([2, 1, 2], [2]), f"the operator fought or left the count: {counts_a}"
    assert writes_a == 2, f"{writes_a} writes of the count after the force: a fight"
    assert any(m.startswith("scaled from 1 to 2 ") for m in ups), ups
    assert counts_b1 == [2], f"a scale action during the rollout: {counts_b1}"
    assert counts_b == [2], f"a scale action during the stalled rollout: {counts_b}"
    assert surge_phase == ["Pending"], surge_phase
    assert images_after == {bumped}, images_after
    assert old_ready == 2
    assert completed > 0
    assert failed == 0, why
    assert recorder.polls > 0, "no poll of /api/v1/alerts succeeded"
    assert all(item.alert.state == "pending" for item in seen), f"an alert fired: {seen}"
    went_pending = {(item.alert.name, item.alert.label("name")) for item in seen}
    assert ("KVScaleDesiredReplicasNotReached", BLOCKER) in went_pending, seen
    allowed = {("KVScaleDesiredReplicasNotReached", name) for name in (BLOCKER, NAME)}
    assert went_pending <= allowed, f"alerts about a fault that did not happen: {seen}"
