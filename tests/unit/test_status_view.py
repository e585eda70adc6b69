"""`kvscale status` rendering: InferenceDeployments and their pods' reports become the SRE's
view (replicas, occupancy bar, queue, preemptions, last scaling action, conditions), as text
and as JSON; garbage in an object never crashes it."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest

from kvscale import cli, report, statusview

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def sample(
    pod: str, waiting: int, running: int, preemptions: float | None
) -> report.OccupancyReport:
    return report.OccupancyReport(
        pod=pod,
        namespace="llm",
        health=report.Health.OK,
        served_at=1000.0,
        sampled_at=999.9,
        age_seconds=0.1,
        block_size=16,
        num_gpu_blocks=101,
        num_used_blocks=70,
        usage_ratio=0.7,
        kv_capacity_tokens=1600,
        num_requests_running=running,
        num_requests_waiting=waiting,
        preemptions_total=12,
        preemptions_per_second=preemptions,
    )


CHAT: dict[str, Any] = {
    "apiVersion": "kvscale.dev/v1alpha1",
    "kind": "InferenceDeployment",
    "metadata": {"name": "chat", "namespace": "llm"},
    "spec": {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetOccupancy": 0.7},
    },
    "status": {
        "replicas": 4,
        "readyReplicas": 3,
        "desiredReplicas": 4,
        "occupancy": 0.72,
        "scalingHistory": [
            {
                "time": "2026-05-01T11:50:00Z",
                "fromReplicas": 1,
                "toReplicas": 2,
                "reason": "scale_up_occupancy",
            },
            {
                "time": "2026-05-01T11:58:00Z",
                "fromReplicas": 2,
                "toReplicas": 4,
                "reason": "scale_up_panic",
            },
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Available",
                "message": "3 of 4 replicas ready",
            },
            {
                "type": "ScalingActive",
                "status": "True",
                "reason": "Active",
                "message": "deciding from fresh occupancy reports (panic mode)",
            },
            {
                "type": "ScalingLimited",
                "status": "True",
                "reason": "PodsUnschedulable",
                "message": "1 of 4 replicas pending: "
                "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
            },
            {
                "type": "MetricsAvailable",
                "status": "True",
                "reason": "AllPodsReporting",
                "message": "",
            },
        ],
    },
}

PODS = [
    statusview.PodReport("chat-a", sample("chat-a", waiting=5, running=30, preemptions=0.25)),
    statusview.PodReport("chat-b", sample("chat-b", waiting=7, running=28, preemptions=0.15)),
    statusview.PodReport("chat-c", None, "timeout after 3s"),
]


def test_the_text_view_of_a_busy_deployment() -> None:
    row = statusview.summarize(CHAT, PODS)
    assert statusview.text([row], NOW).splitlines() == [
        "llm/chat   model meta-llama/Llama-3.1-8B-Instruct",
        "  replicas     3 ready / 4 desired / 8 max  (min 1, 4 pods)",
        "  occupancy    [##############------]   72%  target 70%",
        "  requests     12 waiting, 58 running   preemptions 0.40/s   "
        "(reports from 2 of 3 ready pods)",
        "               no report from chat-c: timeout after 3s",
        "  last scale   2 -> 4, 2m ago (2026-05-01T11:58:00Z): scale_up_panic",
        "  conditions   Ready=True             Available: 3 of 4 replicas ready",
        "               ScalingActive=True     "
        "Active: deciding from fresh occupancy reports (panic mode)",
        "               ScalingLimited=True    PodsUnschedulable: "
        "1 of 4 replicas pending: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
        "               MetricsAvailable=True  AllPodsReporting",
    ]


def test_the_json_view_holds_the_same_numbers_uncut() -> None:
    document = statusview.document([statusview.summarize(CHAT, PODS)], NOW)
    assert json.loads(json.dumps(document)) == document  # plain JSON types only
    assert document["kind"] == "kvscale.dev/status/v1"
    assert document["generatedAt"] == "2026-05-01T12:00:00Z"
    (item,) = document["items"]
    assert item["replicas"] == {
        "ready": 3, "desired": 4, "existing": 4, "min": 1, "max": 8, "manual": None,
    }  # fmt: skip
    assert item["occupancy"] == 0.72
    assert item["requests"] == {"waiting": 12, "running": 58}
    assert item["preemptionsPerSecond"] == pytest.approx(0.4)
    assert item["reports"] == {
        "readyPods": 3,
        "reporting": 2,
        "missing": [{"pod": "chat-c", "reason": "timeout after 3s"}],
    }
    assert item["lastScale"] == {
        "time": "2026-05-01T11:58:00Z", "fromReplicas": 2, "toReplicas": 4,
        "reason": "scale_up_panic",
    }  # fmt: skip
    assert [c["type"] for c in item["conditions"]] == [
        "Ready", "ScalingActive", "ScalingLimited", "MetricsAvailable",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("occupancy", "drawn"),
    [
        (None, "[????????????????????]"),
        (0.0, "[--------------------]"),
        (0.5, "[##########----------]"),
        (0.72, "[##############------]"),
        (1.0, "[####################]"),
        (1.3, "[####################]+"),  # queues wait beyond the cache
    ],
)
def test_the_occupancy_bar(occupancy: float | None, drawn: str) -> None:
    assert statusview.bar(occupancy) == drawn


def test_a_new_deployment_with_nothing_ready_says_so() -> None:
    fresh = {
        "metadata": {"name": "code", "namespace": "llm"},
        "spec": {"model": {"name": "kvscale/tiny-llama"}, "replicas": 2},
    }
    view = statusview.text([statusview.summarize(fresh, [])], NOW)
    assert "0 ready / ? desired / 4 max  (min 1, 0 pods)" in view
    assert "spec.replicas=2: set by hand, not autoscaled" in view
    assert "[????????????????????]     ?  target 70%" in view
    assert "requests     -  (no ready pods to ask)" in view
    assert "last scale   none yet" in view
    assert "conditions   none yet" in view


def test_an_unhealthy_engine_report_counts_as_missing_with_its_reason() -> None:
    down = report.OccupancyReport(
        pod="chat-a", health=report.Health.UNREACHABLE, reason="connection refused", served_at=1.0
    )
    row = statusview.summarize(CHAT, [statusview.PodReport("chat-a", down)])
    assert (row.reporting, row.ready_pods, row.waiting) == (0, 1, None)
    assert row.missing == (("chat-a", "connection refused"),)
    assert "?  (no report from 1 ready pods)" in statusview.text([row], NOW)


@pytest.mark.parametrize(
    "garbage",
    [
        {},
        {"metadata": "x", "spec": [], "status": 7},
        {
            "metadata": {"name": "g"},
            "spec": {"scaling": {"maxReplicas": "many", "targetOccupancy": "high"}},
            "status": {
                "readyReplicas": True,
                "occupancy": "full",
                "scalingHistory": ["?", None],
                "conditions": [None, {"type": "Ready"}],
            },
        },
        {"status": {"scalingHistory": [{"time": "yesterday", "fromReplicas": "1"}]}},
        {"status": {"occupancy": float("nan")}},
    ],
)
def test_garbage_never_crashes_the_view(garbage: dict[str, Any]) -> None:
    row = statusview.summarize(garbage, [])
    assert statusview.text([row], NOW).startswith(f"{row.namespace}/{row.name}")
    json.dumps(statusview.document([row], NOW))


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        ("2026-05-01T11:59:15Z", "45s"),
        ("2026-05-01T11:48:00Z", "12m"),
        ("2026-05-01T09:00:00+00:00", "3h"),
        ("2026-04-29T12:00:00Z", "2d"),
        ("2026-05-01T12:00:05Z", "0s"),  # a clock ahead of ours
        ("not a time", "?"),
    ],
)
def test_ages_read_like_kubectl(when: str, shown: str) -> None:
    assert statusview.ago(when, NOW) == shown


def test_no_deployments_at_all() -> None:
    assert (
        statusview.text([], NOW, "in namespace llm")
        == "No InferenceDeployments in namespace llm.\n"
    )


def test_long_condition_messages_are_cut_in_text_only() -> None:
    ready = {"type": "Ready", "status": "False", "reason": "X", "message": "m" * 500}
    long = dict(CHAT, status={"conditions": [ready]})
    row = statusview.summarize(long, [])
    line = next(line for line in statusview.text([row], NOW).splitlines() if "Ready=False" in line)
    assert line.endswith("...")
    assert len(line) < 140
    assert statusview.document([row], NOW)["items"][0]["conditions"][0]["message"] == "m" * 500


def test_the_command_line() -> None:
    args = cli.build_parser().parse_args(["status", "chat", "-n", "llm", "-o", "json"])
    assert (args.name, args.namespace, args.output, args.all_namespaces) == (
        "chat",
        "llm",
        "json",
        False,
    )
    args = cli.build_parser().parse_args(["status", "-A"])
    assert (args.name, args.all_namespaces, args.output, args.timeout) == (None, True, "text", 3.0)


def test_the_learned_capacity_shows_under_the_slo() -> None:
    learning = copy.deepcopy(CHAT)
    learning["spec"]["slo"] = {
        "ttft": {"p90": "2s"},
        "itl": {"p90": "100ms"},
        "tpot": {"p95": "60ms"},
    }
    learning["status"]["capacity"] = [
        {
            "resource": "kv",
            "perPod": 0.875,
            "confidence": 0.0,
            "source": "target",
            "use": "scale_up_only",
        },
        {
            "resource": "compute",
            "perPod": 31200.0,
            "confidence": 0.83,
            "source": "learned",
            "use": "trusted",
            "provenPerPod": 30900.0,
        },
    ]
    learning["status"]["bindingResource"] = "compute"
    learning["status"]["leadTimeSeconds"] = 95
    shown = statusview.text([statusview.summarize(learning, PODS)], NOW)
    assert (
        "  slo          ttft p90 <= 2s, itl p90 <= 100ms, tpot p95 <= 60ms; compute binds; "
        "pods start in 95 s" in shown
    )
    assert (
        "  capacity     kv      88% of the KV cache per pod  "
        "(target, scale_up_only, confidence 0.00)" in shown
    )
    assert (
        "               compute 31,200 tokens/s per pod  (learned, trusted, confidence 0.83, "
        "proven 30,900)" in shown
    )
    data = statusview.document([statusview.summarize(learning, PODS)], NOW)["items"][0]
    assert data["bindingResource"] == "compute"
    assert data["capacity"][1]["per_pod"] == 31200.0
    # Without spec.slo, nothing about it is shown.
    assert "slo" not in statusview.text([statusview.summarize(CHAT, PODS)], NOW)


def test_advisory_mode_says_the_count_is_advice() -> None:
    advising = copy.deepcopy(CHAT)
    advising["spec"]["scaling"]["mode"] = "Advisory"
    shown = statusview.text([statusview.summarize(advising, PODS)], NOW)
    assert (
        "  mode         Advisory: kvscale would run 4; the Deployment's count is left to its "
        "owner (an HPA, KEDA, a person)" in shown
    )
    assert (
        statusview.document([statusview.summarize(advising, PODS)], NOW)["items"][0]["mode"]
        == "Advisory"
    )
    # Active (the default, also when the field is absent) adds no line.
    assert "  mode  " not in statusview.text([statusview.summarize(CHAT, PODS)], NOW)
    assert (
        statusview.document([statusview.summarize(CHAT, PODS)], NOW)["items"][0]["mode"] == "Active"
    )
