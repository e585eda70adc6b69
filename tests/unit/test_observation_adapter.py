"""Pods and sidecar reports adapted into the decision's observations, and the pod inventory
kept from watch events and LISTs."""

from __future__ import annotations

from typing import Any

import pytest

from kvscale import adapter, report
from kvscale.scaling import demand, settings
from kvscale_operator.autoscaler import inventory, observation

CONFIG = settings.ScalingSettings(stale_after_seconds=5)
LABEL = "kvscale.dev/inference-deployment"


def pod_object(
    name: str = "p",
    *,
    ready: bool | None = None,
    scheduled: bool | None = True,
    running: bool = True,
    deleting: bool = False,
    phase: str = "Running",
    message: str = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
    version: str = "1",
    owner: str | None = "llama",
    uid: str | None = None,
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if scheduled is not None:
        scheduled_condition = {"type": "PodScheduled", "status": "True" if scheduled else "False"}
        if not scheduled:
            scheduled_condition["message"] = message
        conditions.append(scheduled_condition)
    if ready is not None:
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": uid or f"uid-{name}",
        "resourceVersion": version,
        "labels": {LABEL: owner} if owner else {},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    state = {"running": {}} if running else {"waiting": {"reason": "ContainerCreating"}}
    return {
        "metadata": metadata,
        "status": {
            "phase": phase,
            "podIP": "127.1.0.9",
            "conditions": conditions,
            "containerStatuses": [{"name": "engine", "state": state}],
        },
    }


@pytest.mark.parametrize(
    ("obj", "was_ready", "phase"),
    [
        (pod_object(ready=True), False, demand.Phase.READY),
        (pod_object(ready=False), False, demand.Phase.STARTING),
        (pod_object(ready=False, running=False), False, demand.Phase.PENDING),
        (pod_object(scheduled=False, ready=None, running=False), False, demand.Phase.PENDING),
        (pod_object(scheduled=None, ready=None, running=False), False, demand.Phase.PENDING),
        # Was ready, is not now (engine or sidecar crashed): its load is unknown, not zero.
        (pod_object(ready=False), True, demand.Phase.READY),
        (pod_object(ready=True, deleting=True), True, demand.Phase.TERMINATING),
        (pod_object(ready=False, phase="Failed"), True, demand.Phase.TERMINATING),
        (pod_object(ready=False, phase="Succeeded"), False, demand.Phase.TERMINATING),
        ({}, False, demand.Phase.PENDING),
    ],
)
def test_pod_phases(obj: dict[str, Any], was_ready: bool, phase: demand.Phase) -> None:
    assert observation.read_pod(obj, was_ready).phase is phase


def test_read_pod_keeps_the_schedulers_words_ip_and_deletion_cost() -> None:
    obj = pod_object(scheduled=False, ready=None, running=False)
    obj["metadata"]["annotations"] = {observation.DELETION_COST_ANNOTATION: "-2"}
    found = observation.read_pod(obj, False)
    assert found.unschedulable == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    assert (found.name, found.uid, found.ip, found.deletion_cost) == (
        "p",
        "uid-p",
        "127.1.0.9",
        "-2",
    )
    assert not found.lost


def test_memory_knows_pods_that_were_ready_until_they_go() -> None:
    memory = observation.Memory()
    memory.update([observation.read_pod(pod_object("a", ready=True), False)])
    assert memory.was_ready("uid-a")
    lost = observation.read_pod(pod_object("a", ready=False), memory.was_ready("uid-a"))
    assert lost.lost
    assert lost.phase is demand.Phase.READY
    memory.update([lost])
    assert memory.was_ready("uid-a")
    memory.update([observation.read_pod(pod_object("a", ready=True, deleting=True), True)])
    assert not memory.was_ready("uid-a")
    memory.update([])
    assert not memory.was_ready("uid-a")


def occupancy_report(**changes: Any) -> report.OccupancyReport:
    fields: dict[str, Any] = {
        "pod": "p",
        "health": report.Health.OK,
        "sampled_at": 1_700_000_000.0,
        "checked_at": 1_700_000_000.0,
        "served_at": 1_700_000_001.5,
        "age_seconds": 1.5,
        "block_size": 32,
        "num_gpu_blocks": 65,
        "num_used_blocks": 48,
        "usage_ratio": 0.75,
        "kv_capacity_tokens": 2048,
        "num_requests_running": 3,
        "num_requests_waiting": 2,
        "preemptions_total": 7,
        "preemptions_per_second": 0.5,
    }
    fields.update(changes)
    return report.OccupancyReport(**fields)


def test_a_report_becomes_a_sample_on_the_decision_clock() -> None:
    sample = adapter.sample(adapter.Received(occupancy_report(), received_at=50.0))
    assert sample == demand.Sample(
        time=48.5,  # arrival on the operator's clock minus the report's age
        num_gpu_blocks=65,
        num_used_blocks=48,
        block_size=32,
        num_requests_running=3,
        num_requests_waiting=2,
        num_waiting_blocks=None,
        num_waiting_tokens=None,
        preemptions_per_second=0.5,
        healthy=True,
    )


def test_no_rate_yet_is_zero_and_an_unhealthy_report_is_not_healthy() -> None:
    unhealthy = occupancy_report(
        health=report.Health.UNREACHABLE, reason="connection refused", preemptions_per_second=None
    )
    sample = adapter.sample(adapter.Received(unhealthy, received_at=10.0))
    assert sample is not None
    assert sample.preemptions_per_second == 0.0
    assert not sample.healthy


def test_a_report_without_a_sample_is_no_sample() -> None:
    empty = report.OccupancyReport(
        pod="p", health=report.Health.STARTING, reason="engine not up", served_at=1.0
    )
    assert adapter.sample(adapter.Received(empty, received_at=3.0)) is None


def test_a_failed_poll_keeps_the_last_report_which_then_goes_stale() -> None:
    reports = adapter.Reports()
    ready = observation.read_pod(pod_object(ready=True), False)
    reports.record(ready.uid, adapter.Received(occupancy_report(), received_at=100.0))
    reports.fail(ready.uid, "connection refused")
    (observed,) = adapter.observations([ready], {ready.uid}, reports)
    assert observed.sample is not None
    assert observed.polled
    fresh = demand.read(103.0, observed, CONFIG)
    assert fresh.freshness is demand.Freshness.FRESH
    stale = demand.read(110.0, observed, CONFIG)
    assert stale.freshness is demand.Freshness.STALE
    why = adapter.why_unreported(stale, ready.uid, reports, CONFIG)
    assert why == "report stale (older than 5 s); last poll: connection refused"
    reports.record(ready.uid, adapter.Received(occupancy_report(), received_at=111.0))
    assert reports.error(ready.uid) is None
    reports.keep_only(set())
    assert reports.latest(ready.uid) is None


def test_unpolled_pods_are_marked_and_pods_without_reports_have_no_sample() -> None:
    reports = adapter.Reports()
    a = observation.read_pod(pod_object("a", ready=True), False)
    b = observation.read_pod(pod_object("b", ready=True), False)
    found = adapter.observations([a, b], {"uid-a"}, reports)
    assert [(o.pod, o.polled, o.sample) for o in found] == [("a", True, None), ("b", False, None)]
    nothing = demand.read(1.0, found[0], CONFIG)
    assert adapter.why_unreported(nothing, a.uid, reports, CONFIG) == "no report yet"


def test_why_unreported_names_an_unhealthy_engine() -> None:
    reports = adapter.Reports()
    a = observation.read_pod(pod_object("a", ready=True), False)
    bad = occupancy_report(health=report.Health.BAD_METRICS, reason="vllm:cache_config_info absent")
    reports.record(a.uid, adapter.Received(bad, received_at=10.0))
    (observed,) = adapter.observations([a], {a.uid}, reports)
    why = adapter.why_unreported(demand.read(10.0, observed, CONFIG), a.uid, reports, CONFIG)
    assert why == "engine bad_metrics: vllm:cache_config_info absent"


def test_inventory_follows_events_and_ignores_older_copies() -> None:
    pods = inventory.Inventory(LABEL)
    key = ("ns", "llama")
    pods.apply(None, pod_object("a", version="5"), now=1.0)
    pods.apply("MODIFIED", pod_object("a", version="4", ready=True), now=2.0)
    assert pods.pods(key)[0]["metadata"]["resourceVersion"] == "5"
    pods.apply("ADDED", pod_object("b", version="6"), now=2.0)
    assert [obj["metadata"]["name"] for obj in pods.pods(key)] == ["a", "b"]
    pods.apply("DELETED", pod_object("a", version="7"), now=3.0)
    assert [obj["metadata"]["name"] for obj in pods.pods(key)] == ["b"]
    pods.apply("MODIFIED", pod_object("b", version="8", owner=None), now=4.0)
    assert pods.pods(key) == []
    pods.apply("MODIFIED", pod_object("c", version="9", owner="other"), now=4.0)
    assert pods.pods(("ns", "other"))[0]["metadata"]["name"] == "c"


def test_a_resync_drops_what_it_did_not_list_and_never_brings_back_the_deleted() -> None:
    pods = inventory.Inventory(LABEL)
    key = ("ns", "llama")
    pods.apply(None, pod_object("gone", version="3"), now=1.0)  # deleted while the watch was down
    pods.apply("DELETED", pod_object("dead", version="9"), now=4.0)
    assert pods.synced_at(key) is None
    listed = [pod_object("a", version="5"), pod_object("dead", version="4")]
    pods.apply("ADDED", pod_object("b", version="10"), now=5.5)  # arrived during the LIST
    pods.resync(key, listed, started_at=5.0, now=6.0)
    assert [obj["metadata"]["name"] for obj in pods.pods(key)] == ["a", "b"]
    assert pods.synced_at(key) == 6.0
    pods.forget(key)
    assert pods.pods(key) == []
    assert pods.synced_at(key) is None
