"""The autoscale loop driven by hand: a fake API, a fake collector and a fake clock.

Each test builds one `autoscale.Loop`, sets the sidecars' answers and the pods, and calls
`tick()` once per simulated second. What is checked is what a user sees: the Deployment's
replicas, deletion costs on pods, Events, status fields and conditions, and metrics.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import prometheus_client
import pytest
from lightkube.core.exceptions import ApiError

from kvscale import report
from kvscale_operator import kube, metrics
from kvscale_operator.autoscaler import autoscale, collector, outcome
from kvscale_operator.reconciler import conditions, status

NAMESPACE, NAME = "ns", "llama"
UID = "11111111-2222-4333-8444-555555555555"
BLOCKS = 65  # 64 usable blocks per engine
UNSCHEDULABLE = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = datetime.datetime(2026, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += datetime.timedelta(seconds=seconds)


def api_error(code: int, message: str = "boom") -> ApiError:
    error = ApiError.__new__(ApiError)
    error.status = type("Status", (), {"code": code, "message": message})()
    Exception.__init__(error, message)
    return error


def pod(
    name: str,
    *,
    ready: bool = True,
    ip: str | None = "auto",
    unschedulable: str | None = None,
    cost: str | None = None,
) -> dict[str, Any]:
    conditions_: list[dict[str, Any]] = []
    if unschedulable is not None:
        conditions_.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": unschedulable}
        )  # fmt: skip
    else:
        conditions_.append({"type": "PodScheduled", "status": "True"})
        conditions_.append({"type": "Ready", "status": "True" if ready else "False"})
    annotations = {"controller.kubernetes.io/pod-deletion-cost": cost} if cost else {}
    obj: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": {"kvscale.dev/inference-deployment": NAME},
            "annotations": annotations,
        },
        "status": {"phase": "Pending" if unschedulable else "Running", "conditions": conditions_},
    }
    if unschedulable is None:
        obj["status"]["podIP"] = f"127.1.0.{abs(hash(name)) % 200 + 2}" if ip == "auto" else ip
        obj["status"]["containerStatuses"] = [
            {"name": "engine", "ready": ready, "state": {"running": {}}}
        ]
    return obj


def cr(**spec: Any) -> dict[str, Any]:
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "stableWindowSeconds": 10,
        "panicWindowSeconds": 4,
        "scaleDownDelaySeconds": 20,
        "tickSeconds": 1,
    }
    scaling.update(spec.pop("scaling", {}))
    body: dict[str, Any] = {"model": {"name": "org/model"}, "scaling": scaling}
    body.update(spec)
    return {
        "apiVersion": "kvscale.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": body,
    }


class FakeKube:
    """The Deployment, the pods and the CR's status, in memory."""

    def __init__(self, infd: dict[str, Any], replicas: int) -> None:
        self.infd = copy.deepcopy(infd)
        self.infd["metadata"]["resourceVersion"] = "1"
        self.version = 10
        self.deployment: dict[str, Any] | None = {
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "resourceVersion": "10",
                "ownerReferences": [
                    {"kind": "InferenceDeployment", "uid": UID, "controller": True}
                ],
            },
            "spec": {"replicas": replicas},
        }
        self.pods: list[dict[str, Any]] = []
        self.scales: list[int] = []
        self.annotations: list[tuple[str, dict[str, str | None]]] = []
        self.status_writes: list[dict[str, Any]] = []
        self.lists = 0
        self.fail_scale: ApiError | None = None

    @property
    def replicas(self) -> int:
        assert self.deployment is not None
        value: int = self.deployment["spec"]["replicas"]
        return value

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        assert (api_version, kind) == ("apps/v1", "Deployment")
        return copy.deepcopy(self.deployment)

    async def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        self.lists += 1
        return copy.deepcopy(self.pods)

    async def scale_deployment(
        self, namespace: str, name: str, replicas: int, *, expected: int | None = None
    ) -> None:
        assert self.deployment is not None
        if self.fail_scale is not None:
            raise self.fail_scale
        if expected is not None and expected != self.deployment["spec"]["replicas"]:
            raise api_error(422, "testing value /spec/replicas failed")
        self.scales.append(replicas)
        self.version += 1
        self.deployment["spec"]["replicas"] = replicas
        self.deployment["metadata"]["resourceVersion"] = str(self.version)

    async def annotate_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        self.annotations.append((name, dict(annotations)))
        for obj in self.pods:
            if obj["metadata"]["name"] == name:
                current = obj["metadata"].setdefault("annotations", {})
                for key, value in annotations.items():
                    if value is None:
                        current.pop(key, None)
                    else:
                        current[key] = value

    async def update_status(
        self, namespace: str, name: str, mutate: kube.StatusMutation
    ) -> dict[str, Any] | None:
        fields = mutate(copy.deepcopy(self.infd))
        if fields:
            self.status_writes.append(dict(fields))
            target = self.infd.setdefault("status", {})
            for key, value in fields.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = copy.deepcopy(value)
        return copy.deepcopy(self.infd)

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.infd.get("status") or {}
        return found

    def condition(self, kind: str) -> dict[str, Any]:
        (found,) = [item for item in self.status()["conditions"] if item["type"] == kind]
        result: dict[str, Any] = found
        return result


class FakeCollector:
    """Answers per pod name: blocks used (a healthy report), a report, or an error."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.answers: dict[str, int | report.OccupancyReport | str] = {}
        self.asked: list[list[str]] = []

    async def collect(
        self, targets: Sequence[collector.Target], timeout_seconds: float
    ) -> list[collector.Result]:
        self.asked.append([target.pod for target in targets])
        results = []
        for target in targets:
            answer = self.answers.get(target.pod, "connection refused")
            if isinstance(answer, str):
                results.append(
                    collector.Result(
                        target, None, answer, collector.Failure.CONNECTION, self.clock.now, 0.0
                    )
                )
                continue
            found = (
                answer
                if isinstance(answer, report.OccupancyReport)
                else occupancy(target.pod, answer, self.clock.now)
            )
            results.append(collector.Result(target, found, None, None, self.clock.now, 0.0))
        return results


def occupancy(pod: str, used: int, now: float, **extra: Any) -> report.OccupancyReport:
    fields: dict[str, Any] = {
        "pod": pod,
        "health": report.Health.OK,
        "sampled_at": now,
        "checked_at": now,
        "served_at": now,
        "age_seconds": 0.1,
        "block_size": 32,
        "num_gpu_blocks": BLOCKS,
        "num_used_blocks": used,
        "usage_ratio": used / (BLOCKS - 1),
        "kv_capacity_tokens": (BLOCKS - 1) * 32,
        "num_requests_running": 1 if used else 0,
        "num_requests_waiting": 0,
        "preemptions_total": 0,
        "preemptions_per_second": 0.0,
    }
    fields.update(extra)
    return report.OccupancyReport(**fields)


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def info(self, reason: str, message: str) -> None:
        self.posted.append(("Normal", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.posted.append(("Warning", reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.posted]


class Harness:
    def __init__(self, infd: dict[str, Any], replicas: int, pods: list[dict[str, Any]]) -> None:
        self.clock = Clock()
        self.api = FakeKube(infd, replicas)
        self.api.pods = pods
        self.collector = FakeCollector(self.clock)
        self.events = Events()
        self.registry = prometheus_client.CollectorRegistry()
        self.metrics = metrics.Autoscaler.create(self.registry)
        self.deps = autoscale.Deps(
            api=self.api,
            collector=self.collector,
            metrics=self.metrics,
            events_for=lambda body: self.events,
            clock=lambda: self.clock.now,
            wall=lambda: self.clock.wall,
        )
        self.loop = autoscale.Loop(self.api.infd, self.deps)

    def restart(self) -> None:
        """A new operator process: a new loop, nothing kept but what is in the API."""
        self.deps = autoscale.Deps(
            api=self.api,
            collector=self.collector,
            metrics=self.metrics,
            events_for=lambda body: self.events,
            clock=lambda: self.clock.now,
            wall=lambda: self.clock.wall,
        )
        self.loop = autoscale.Loop(self.api.infd, self.deps)

    def tick(self) -> autoscale.TickResult:
        result = asyncio.run(self.loop.tick())
        self.clock.advance(1.0)
        return result

    def ticks(self, count: int) -> list[autoscale.TickResult]:
        return [self.tick() for _ in range(count)]

    def set_pods(self, pods: list[dict[str, Any]]) -> None:
        """New pods, as the pod watch would deliver them."""
        self.api.pods = pods
        for obj in pods:
            self.deps.inventory.apply("MODIFIED", obj, self.clock.now)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(
            name, {"namespace": NAMESPACE, "name": NAME, **labels}
        )


def test_a_load_step_scales_up_with_an_event_a_history_entry_and_status() -> None:
    h = Harness(cr(), 1, [pod("a")])
    h.collector.answers = {"a": 8}
    first = h.tick()
    assert first.action is None
    assert h.api.condition("ScalingActive")["reason"] == "Active"
    h.collector.answers = {"a": 64}  # full: 1.0 per pod against a 0.7 target
    actions = [result.action for result in h.ticks(4) if result.action is not None]
    assert [(a.from_replicas, a.to_replicas) for a in actions] == [(1, 2)]
    assert h.api.replicas == 2
    (event,) = [posted for posted in h.events.posted if posted[1] == "ScaledUp"]
    assert event[2].startswith("scaled from 1 to 2 replicas (scale_up_")
    status_ = h.api.status()
    assert status_["desiredReplicas"] == 2
    (entry,) = status_["scalingHistory"]
    assert (entry["fromReplicas"], entry["toReplicas"]) == (1, 2)
    assert entry["reason"].startswith("scale_up_")
    assert status_["lastScaleTime"] == entry["time"]
    assert h.metric("kvscale_autoscaler_scale_actions_total", direction="up") == 1
    assert h.metric("kvscale_autoscaler_desired_replicas") == 2


def test_load_removed_scales_down_after_the_delay_least_loaded_pods_first() -> None:
    h = Harness(cr(), 3, [pod("a"), pod("b"), pod("c")])
    h.collector.answers = {"a": 2, "b": 1, "c": 3}
    results = h.ticks(25)
    acted = [(i, r.action) for i, r in enumerate(results) if r.action is not None]
    assert len(acted) == 1
    index, action = acted[0]
    assert index >= 20  # the delay (20 s) seeded with 3 at the first tick
    assert (action.from_replicas, action.to_replicas) == (3, 1)
    # The two least-loaded pods were marked, least loaded lowest, before the scale.
    assert action.marked == ("b", "a")
    costs = {
        name: values
        for name, values in h.api.annotations
        if "controller.kubernetes.io/pod-deletion-cost" in values
    }
    assert costs == {
        "b": {"controller.kubernetes.io/pod-deletion-cost": "-2"},
        "a": {"controller.kubernetes.io/pod-deletion-cost": "-1"},
    }
    assert "ScaledDown" in h.events.reasons()


def test_deletion_costs_reset_stale_marks_and_leave_positive_costs_alone() -> None:
    from kvscale_operator.autoscaler import observation

    pods = [
        observation.read_pod(pod("a", cost="-1"), False),
        observation.read_pod(pod("b"), False),
        observation.read_pod(pod("c", cost="100"), False),
        observation.read_pod(pod("d", cost="-2"), False),
    ]
    changes = autoscale.deletion_costs(pods, ["b", "d", "a", "c"], 2)
    assert changes == {"a": None, "b": "-2", "d": "-1"}
    assert autoscale.deletion_costs(pods, ["b"], 0) == {"a": None, "d": None}


def test_a_dead_sidecar_holds_scale_down_and_names_the_pod() -> None:
    h = Harness(cr(), 2, [pod("a"), pod("b")])
    h.collector.answers = {"a": 0, "b": 0}
    h.tick()
    assert h.api.condition("MetricsAvailable")["reason"] == "AllPodsReporting"
    h.collector.answers = {"a": 0, "b": "connection refused"}
    results = h.ticks(40)  # far past the 20 s delay
    assert h.api.scales == []
    assert all(r.action is None for r in results)
    metrics_available = h.api.condition("MetricsAvailable")
    assert metrics_available["status"] == "False"
    assert metrics_available["reason"] == "SomePodsMissing"
    assert "b: report stale" in metrics_available["message"]
    assert "last poll: connection refused" in metrics_available["message"]
    # b counts as full: the decision wants the 2 pods there are, never fewer.
    assert results[-1].decision is not None
    assert results[-1].decision.unreported == ("b",)
    assert h.events.reasons().count("MetricsMissing") == 1
    assert (h.metric("kvscale_autoscaler_scrape_errors_total", reason="connection") or 0) >= 40
    # The sidecar comes back: metrics are restored, and once demand has been low for a whole
    # delay of fresh data (b counted as full while silent) the scale-down goes ahead.
    h.collector.answers = {"a": 0, "b": 0}
    later = h.ticks(35)
    assert "MetricsRestored" in h.events.reasons()
    acted = [(index, r.action.to_replicas) for index, r in enumerate(later) if r.action]
    assert [to for _, to in acted] == [1]
    assert acted[0][0] >= 19


def test_one_failed_poll_is_covered_by_the_last_report_until_it_is_stale() -> None:
    h = Harness(cr(), 2, [pod("a"), pod("b")])
    h.collector.answers = {"a": 40, "b": 40}
    h.tick()
    h.collector.answers = {"a": 40, "b": "no answer within 0.5 s"}
    h.tick()
    assert h.api.condition("MetricsAvailable")["reason"] == "AllPodsReporting"
    assert "MetricsMissing" not in h.events.reasons()


def test_an_engine_that_crashed_counts_as_unreported_not_as_capacity_on_the_way() -> None:
    h = Harness(cr(), 2, [pod("a"), pod("b")])
    h.collector.answers = {"a": 0, "b": 0}
    h.tick()
    # b's engine crashes: the pod turns not ready, its sidecar says the engine is unreachable.
    h.set_pods([pod("a"), pod("b", ready=False)])
    unreachable = occupancy("b", 0, h.clock.now, health=report.Health.UNREACHABLE,
                            reason="connection refused")  # fmt: skip
    h.collector.answers = {"a": 0, "b": unreachable}
    results = h.ticks(40)
    assert h.api.scales == []
    assert results[-1].decision is not None
    assert results[-1].decision.ready == 2
    assert "b" in results[-1].decision.unreported
    message = h.api.condition("MetricsAvailable")["message"]
    assert "b: engine unreachable: connection refused" in message


def test_a_restarted_operator_still_knows_a_crashed_pod_was_ready() -> None:
    h = Harness(cr(), 2, [pod("a"), pod("b")])
    h.collector.answers = {"a": 0, "b": 0}
    h.tick()
    marked = {name for name, values in h.api.annotations if "kvscale.dev/ready-once" in values}
    assert marked == {"a", "b"}
    h.set_pods(h.api.pods)  # the pod watch brings the annotations
    # b's engine crashes, then the operator restarts: only the annotation remembers b.
    crashed = copy.deepcopy(h.api.pods)
    crashed[1]["status"]["conditions"][1]["status"] = "False"
    h.set_pods(crashed)
    h.restart()
    unreachable = occupancy(
        "b", 0, h.clock.now, health=report.Health.UNREACHABLE, reason="connection refused"
    )
    h.collector.answers = {"a": 0, "b": unreachable}
    results = h.ticks(30)
    assert h.api.scales == []
    assert results[-1].decision is not None
    assert results[-1].decision.unreported == ("b",)


def test_a_pod_that_never_was_ready_is_capacity_on_the_way_not_saturated() -> None:
    h = Harness(cr(), 2, [pod("a"), pod("b", ready=False)])
    h.collector.answers = {"a": 20, "b": "connection refused"}
    result = h.tick()
    assert result.decision is not None
    assert (result.decision.ready, result.decision.starting) == (1, 1)
    assert result.decision.unreported == ()
    assert h.collector.asked == [["a"]]


def test_a_restarted_operator_does_not_scale_down_before_a_whole_delay() -> None:
    h = Harness(cr(), 3, [pod("a"), pod("b"), pod("c")])
    h.collector.answers = {"a": 0, "b": 0, "c": 0}
    h.ticks(15)  # 15 s of a 20 s delay with nothing to do
    h.restart()
    results = h.ticks(19)
    assert h.api.scales == []
    assert all(r.action is None for r in results)
    assert h.api.status()["desiredReplicas"] == 3
    later = h.ticks(3)
    assert [r.action.to_replicas for r in later if r.action is not None] == [1]


def test_spec_replicas_hold_the_deployment_and_pause_autoscaling() -> None:
    h = Harness(cr(replicas=3), 1, [pod("a")])
    h.collector.answers = {"a": 64}
    h.ticks(5)
    assert h.api.scales == [3]
    active = h.api.condition("ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "ManualReplicas")
    assert h.api.status()["occupancy"] == 1.0
    assert h.api.status()["scalingHistory"][-1]["reason"] == "manual"
    # A person's count is not clamped, and spec.replicas above maxReplicas stays.
    body = copy.deepcopy(h.api.infd)
    body["spec"]["replicas"] = 6
    h.loop.update(body)
    h.tick()
    assert h.api.replicas == 6
    # Removing spec.replicas resumes autoscaling from the current count, with a fresh delay.
    del body["spec"]["replicas"]
    h.loop.update(body)
    h.set_pods([pod(name) for name in "abcdef"])
    h.collector.answers = dict.fromkeys("abcdef", 40)
    h.tick()
    assert h.api.replicas == 4  # maxReplicas
    assert h.api.condition("ScalingActive")["reason"] == "Active"


def advisory(**spec: Any) -> dict[str, Any]:
    body = cr(**spec)
    body["spec"]["scaling"]["mode"] = "Advisory"
    return body


def test_advisory_mode_publishes_the_decision_and_never_touches_the_deployment() -> None:
    h = Harness(advisory(), 1, [pod("a")])
    h.collector.answers = {"a": 64}  # full: the active loop would scale 1 -> 2
    results = h.ticks(6)
    assert [r.action for r in results] == [None] * 6
    assert (h.api.scales, h.api.replicas) == ([], 1)
    assert h.api.status()["desiredReplicas"] == 2
    active = h.api.condition("ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "Advisory")
    assert "left to their owner" in active["message"]
    # One Event for the advice, not one per tick while it stands.
    (event,) = [posted for posted in h.events.posted if posted[1].startswith("Would")]
    assert event[1] == "WouldScaleUp"
    assert event[2].startswith("advisory: would scale from 1 to 2 replicas (scale_up_")
    assert "scalingHistory" not in h.api.status()  # nothing was done
    assert h.metric("kvscale_autoscaler_advisory") == 1
    assert h.metric("kvscale_autoscaler_desired_replicas") == 2
    assert h.metric("kvscale_autoscaler_current_replicas") == 1
    assert h.metric("kvscale_autoscaler_scale_actions_total", direction="up") is None
    # The HPA (the Deployment's owner here) scales to 2: the advice agrees, no new Event.
    assert h.api.deployment is not None
    h.api.deployment["spec"]["replicas"] = 2
    h.set_pods([pod("a"), pod("b")])
    h.collector.answers = {"a": 40, "b": 40}
    h.ticks(3)
    assert h.api.status()["desiredReplicas"] == 2
    assert [r for r in h.events.reasons() if r.startswith("Would")] == ["WouldScaleUp"]


def test_advisory_scale_down_marks_no_pod_for_removal() -> None:
    h = Harness(advisory(), 3, [pod("a"), pod("b"), pod("c")])
    h.collector.answers = {"a": 2, "b": 1, "c": 3}
    h.ticks(25)
    assert (h.api.scales, h.api.replicas) == ([], 3)
    # Only the ready-once marks a restarted operator needs; no deletion costs.
    assert {key for _, values in h.api.annotations for key in values} == {"kvscale.dev/ready-once"}
    assert h.api.status()["desiredReplicas"] == 1
    assert [r for r in h.events.reasons() if r.startswith("Would")] == ["WouldScaleDown"]


def test_switching_from_advisory_to_active_keeps_the_autoscaler_and_scales() -> None:
    h = Harness(advisory(), 1, [pod("a")])
    h.collector.answers = {"a": 64}
    h.ticks(3)
    learned = h.loop._autoscaler
    body = copy.deepcopy(h.api.infd)
    body["spec"]["scaling"]["mode"] = "Active"
    h.loop.update(body)
    result = h.tick()
    assert h.loop._autoscaler is learned  # the mode is not a decision setting
    assert result.action is not None
    assert (result.action.from_replicas, result.action.to_replicas) == (1, 2)
    assert h.api.replicas == 2
    assert "ScalingModeChanged" in h.events.reasons()
    assert h.api.condition("ScalingActive")["reason"] == "Active"
    assert h.metric("kvscale_autoscaler_advisory") == 0


def test_pods_the_scheduler_cannot_place_make_scaling_limited_with_its_words() -> None:
    pods = [pod("a"), pod("b"), pod("c", unschedulable=UNSCHEDULABLE)]
    h = Harness(cr(scaling={"maxReplicas": 3}), 3, pods)
    queued = {"num_requests_running": 4, "num_requests_waiting": 8}
    h.collector.answers = {
        name: occupancy(name, 64, h.clock.now + 2, **queued) for name in ("a", "b")
    }
    h.ticks(3)
    limited = h.api.condition("ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "PodsUnschedulable")
    assert limited["message"].startswith(f"1 of 3 replicas pending: {UNSCHEDULABLE}")
    assert "maxReplicas 3" in limited["message"]


def test_at_max_replicas_scaling_limited_says_so() -> None:
    h = Harness(cr(scaling={"maxReplicas": 2}), 2, [pod("a"), pod("b")])
    h.collector.answers = {"a": 64, "b": 64}
    h.ticks(3)
    limited = h.api.condition("ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "AtMaxReplicas")
    assert limited["message"].startswith("held at maxReplicas 2; occupancy asks for ")


def test_changed_bounds_take_effect_with_a_new_autoscaler() -> None:
    h = Harness(cr(), 4, [pod(name) for name in "abcd"])
    h.collector.answers = dict.fromkeys("abcd", 45)
    h.ticks(2)
    assert h.api.scales == []
    body = copy.deepcopy(h.api.infd)
    body["spec"]["scaling"]["maxReplicas"] = 2
    h.loop.update(body)
    h.tick()
    assert h.api.scales == [2]


def test_a_scale_conflict_is_decided_again_and_an_api_error_is_reported() -> None:
    h = Harness(cr(), 1, [pod("a")])
    h.collector.answers = {"a": 64}
    h.api.fail_scale = api_error(422, "testing value /spec/replicas failed")
    results = h.ticks(3)
    assert all(r.action is None for r in results)
    assert "ScaledUp" not in h.events.reasons()
    h.api.fail_scale = api_error(403, "forbidden")
    h.tick()
    active = h.api.condition("ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "ScaleFailed")
    assert "forbidden" in active["message"]
    assert "ScaleFailed" in h.events.reasons()
    h.api.fail_scale = None
    h.tick()
    assert h.api.scales == [2]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("invalid", "InvalidSpec"),
        ("missing", "DeploymentMissing"),
        ("foreign", "ResourceConflict"),
    ],
)
def test_a_tick_that_cannot_decide_says_why_and_touches_nothing(change: str, reason: str) -> None:
    h = Harness(cr(), 1, [pod("a")])
    h.collector.answers = {"a": 64}
    if change == "invalid":
        body = copy.deepcopy(h.api.infd)
        body["spec"]["scaling"]["maxReplicas"] = "many"
        h.loop.update(body)
    elif change == "missing":
        h.api.deployment = None
    else:
        assert h.api.deployment is not None
        h.api.deployment["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    h.ticks(3)
    assert h.api.scales == []
    active = h.api.condition("ScalingActive")
    assert (active["status"], active["reason"]) == ("False", reason)


def test_status_is_written_at_once_on_change_and_rate_limited_otherwise() -> None:
    h = Harness(cr(), 2, [pod("a"), pod("b")])
    h.collector.answers = {"a": 30, "b": 30}
    h.tick()
    writes = len(h.api.status_writes)
    for used in (31, 32, 33):  # occupancy moves a little, nothing else does
        h.collector.answers = {"a": used, "b": used}
        h.tick()
    assert len(h.api.status_writes) == writes
    h.ticks(3)
    assert len(h.api.status_writes) == writes + 1  # after status_interval (5 s)
    h.collector.answers = {"a": 30, "b": "connection refused"}
    h.ticks(7)  # stale after 5 s: MetricsAvailable flips, written at that tick
    assert h.api.condition("MetricsAvailable")["status"] == "False"


def test_many_pods_are_sampled_and_every_pod_is_asked_in_turn() -> None:
    names = [f"p{index:02d}" for index in range(20)]
    h = Harness(cr(scaling={"maxReplicas": 30}), 20, [pod(name) for name in names])
    h.collector.answers = dict.fromkeys(names, 45)
    h.ticks(3)
    sizes = {len(asked) for asked in h.collector.asked}
    assert sizes == {9}  # ceil(20 * 15.4 / (20 + 14.4))
    assert {name for asked in h.collector.asked for name in asked} == set(names)
    condition = h.api.condition("MetricsAvailable")
    assert condition["message"] == "fresh reports from the 9 of 20 ready pods sampled"


def test_pods_come_from_the_inventory_after_one_list() -> None:
    h = Harness(cr(), 1, [pod("a")])
    h.collector.answers = {"a": 10, "b": 10}
    h.ticks(5)
    assert h.api.lists == 1
    h.set_pods([pod("a"), pod("b")])
    result = h.tick()
    assert result.decision is not None
    assert result.decision.ready == 2


def test_the_autoscaler_owns_fields_and_conditions_the_reconciler_does_not() -> None:
    assert not set(outcome.OWNED_TYPES) & set(conditions.OWNED_TYPES)
    reconciler_fields = set(status.OWNED_FIELDS) - {"conditions"}
    assert not (set(outcome.OWNED_FIELDS) - {"conditions"}) & reconciler_fields


def test_history_is_bounded_to_the_last_entries() -> None:
    h = Harness(cr(), 1, [pod("a")])
    h.api.infd["status"] = {
        "scalingHistory": [
            {"time": f"2026-01-01T00:00:{second:02d}Z", "fromReplicas": 1, "toReplicas": 1,
             "reason": "old"}
            for second in range(outcome.HISTORY_LIMIT)
        ]
    }  # fmt: skip
    h.collector.answers = {"a": 64}
    h.ticks(3)
    history = h.api.status()["scalingHistory"]
    assert len(history) == outcome.HISTORY_LIMIT
    assert history[-1]["toReplicas"] == 2
    assert history[0]["time"] == "2026-01-01T00:00:01Z"


class Sleeper:
    """`Deps.sleep` on the fake clock: a loop's wait ends when the test moves the clock past it.

    `asleep` is set each time a loop starts waiting, so a test knows a tick has finished by
    that event, never by waiting some real time and hoping.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.asked: list[float] = []
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []
        self.asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((self.clock.now + seconds, future))
        self.asleep.set()
        await future

    async def advance(self, seconds: float) -> None:
        """Move the clock; wake the loops whose wait is over, and let them run to their next."""
        if self.wake(seconds):
            await self.asleep.wait()

    def wake(self, seconds: float) -> bool:
        """Move the clock and wake the loops whose wait is over; whether any was."""
        self.clock.advance(seconds)
        due = [item for item in self._waiting if item[0] <= self.clock.now]
        self._waiting = [item for item in self._waiting if item[0] > self.clock.now]
        self.asleep.clear()
        for _, future in due:
            future.set_result(None)
        return bool(due)


def loops_for(
    api: FakeKube,
    fake: FakeCollector,
    sleeper: Sleeper,
    registry: prometheus_client.CollectorRegistry,
) -> autoscale.Loops:
    return autoscale.Loops(
        autoscale.Deps(
            api=api,
            collector=fake,
            metrics=metrics.Autoscaler.create(registry),
            events_for=lambda body: Events(),
            clock=lambda: sleeper.clock.now,
            sleep=sleeper.sleep,
        )
    )


def test_loops_start_update_and_stop_with_the_crs_watch_events() -> None:
    key = (NAMESPACE, NAME)
    labels = {"namespace": NAMESPACE, "name": NAME}

    async def scenario() -> tuple[bool, float | None, bool, float | None]:
        sleeper = Sleeper(Clock())
        api = FakeKube(cr(), 1)
        api.pods = [pod("a")]
        fake = FakeCollector(sleeper.clock)
        fake.answers = {"a": 10}
        registry = prometheus_client.CollectorRegistry()
        loops = loops_for(api, fake, sleeper, registry)
        await loops.sync(None, api.infd)  # the listing at start
        await loops.sync("MODIFIED", api.infd)  # the same loop, updated
        await sleeper.asleep.wait()  # its first tick is done
        running = key in loops
        during = registry.get_sample_value("kvscale_autoscaler_desired_replicas", labels)
        await loops.sync("DELETED", api.infd)
        stopped = key not in loops
        after = registry.get_sample_value("kvscale_autoscaler_desired_replicas", labels)
        return running, during, stopped, after

    running, during, stopped, after = asyncio.run(scenario())
    assert running
    assert during == 1
    assert stopped
    assert after is None  # the deleted CR's series are gone


class HangingKube(FakeKube):
    """Its reads never answer once `hang` is set; a read cancelled then unwinds only after
    every hanging read was cancelled (as ticks stuck in API calls that all must be stopped)."""

    def __init__(self, infd: dict[str, Any], replicas: int, readers: int) -> None:
        super().__init__(infd, replicas)
        self.hang = False
        self.readers = readers
        self.hanging = 0
        self.all_hanging = asyncio.Event()
        self.cancelled = 0
        self.all_cancelled = asyncio.Event()

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        if not self.hang:
            return await super().get(api_version, kind, namespace, name)
        self.hanging += 1
        if self.hanging == self.readers:
            self.all_hanging.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            if self.cancelled == self.readers:
                self.all_cancelled.set()
            await self.all_cancelled.wait()
            raise
        raise AssertionError("unreachable")


def test_stop_all_cancels_every_loop_before_waiting_for_any() -> None:
    names = ["a", "b", "c"]

    async def scenario() -> tuple[int, bool]:
        sleeper = Sleeper(Clock())
        api = HangingKube(cr(), 1, len(names))
        api.pods = [pod("a")]
        fake = FakeCollector(sleeper.clock)
        fake.answers = {"a": 10}
        loops = loops_for(api, fake, sleeper, prometheus_client.CollectorRegistry())
        for name in names:
            body = copy.deepcopy(api.infd)
            body["metadata"]["name"] = name
            sleeper.asleep.clear()
            await loops.sync(None, body)
            await sleeper.asleep.wait()  # its first tick is done; it sleeps till the next
        api.hang = True
        sleeper.wake(1.0)  # every loop's next tick starts and hangs in its first read
        await api.all_hanging.wait()
        # Stopped one at a time, the first loop would wait for the others forever; the
        # timeout only keeps a regression from hanging the suite.
        try:
            await asyncio.wait_for(loops.stop_all(), timeout=10)
        except TimeoutError:
            return api.cancelled, False
        return api.cancelled, not any((NAMESPACE, name) in loops for name in names)

    cancelled, stopped = asyncio.run(scenario())
    assert cancelled == len(names)
    assert stopped


def test_a_loop_ticks_every_tick_seconds_and_survives_a_failed_tick() -> None:
    labels = {"namespace": NAMESPACE, "name": NAME}

    async def scenario() -> tuple[list[float], int, float | None, int]:
        sleeper = Sleeper(Clock())
        api = FakeKube(cr(scaling={"tickSeconds": 2}), 1)
        api.pods = [pod("a")]
        fake = FakeCollector(sleeper.clock)
        fake.answers = {"a": 10}
        registry = prometheus_client.CollectorRegistry()
        loops = loops_for(api, fake, sleeper, registry)
        await loops.sync(None, api.infd)
        await sleeper.asleep.wait()
        await sleeper.advance(1.0)  # half a tick: nobody wakes
        asked_early = len(fake.asked)
        await sleeper.advance(1.0)
        assert api.deployment is not None
        api.deployment["spec"]["replicas"] = "many"  # the next tick fails on it
        await sleeper.advance(2.0)
        errors = registry.get_sample_value("kvscale_autoscaler_loop_errors_total", labels)
        api.deployment["spec"]["replicas"] = 1
        await sleeper.advance(2.0)  # and the one after works again
        asked = len(fake.asked)
        await loops.stop_all()
        return sleeper.asked, asked_early, errors, asked

    waits, asked_early, errors, asked = asyncio.run(scenario())
    assert waits[:4] == [2.0, 2.0, 2.0, 2.0]  # no tick took time on the fake clock
    assert asked_early == 1
    assert errors == 1
    assert asked == 3  # the first, the second and the fourth tick asked the sidecar
