"""The autoscaler's conditions and status fields, from one tick's outcome (a table each)."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from kvscale.scaling import decision
from kvscale_operator.autoscaler import outcome

NOW = datetime.datetime(2026, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
UNSCHEDULABLE = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def decided(
    *, mode: decision.Mode = decision.Mode.NORMAL, reason: decision.Reason, wanted: int = 2
) -> decision.Decision:
    return decision.Decision(
        desired=2,
        current=2,
        ready=2,
        starting=0,
        pending=0,
        mode=mode,
        reason=reason,
        steps=(),
        wanted=wanted,
        occupancy=0.5,
        stable_occupancy=0.5,
        panic_occupancy=0.5,
        missing=(),
        removal_order=(),
    )


def hold(reason: decision.Reason, ready: int = 1) -> decision.Decision:
    return dataclasses.replace(decided(mode=decision.Mode.HOLD, reason=reason), ready=ready)


def manual(count: int) -> decision.Decision:
    """spec.replicas is `count`: the decision is that count."""
    made = decided(mode=decision.Mode.MANUAL, reason=decision.Reason.MANUAL, wanted=count)
    return dataclasses.replace(made, desired=count)


def ready(count: int, occupancy: float | None = 0.5) -> decision.Decision:
    """A steady decision that counted `count` ready pods (what MetricsAvailable reads)."""
    steady = decided(reason=decision.Reason.STEADY)
    return dataclasses.replace(steady, ready=count, occupancy=occupancy)


R = decision.Reason


@pytest.mark.parametrize(
    ("tick", "status", "reason", "words"),
    [
        (
            outcome.Tick(1, blocked=outcome.Blocked("InvalidSpec", "spec.scaling: bad")),
            "False",
            "InvalidSpec",
            "spec.scaling: bad",
        ),
        (
            outcome.Tick(1, decision=decided(reason=R.SCALE_UP_OCCUPANCY), scale_error="403"),
            "False",
            "ScaleFailed",
            "403",
        ),
        (outcome.Tick(1, decision=manual(3)), "False", "ManualReplicas", "spec.replicas is 3"),
        (
            outcome.Tick(1, decision=hold(R.HOLD_PODS_STARTING, ready=0)),
            "False",
            "WaitingForReadyPods",
            "no engine pod is ready yet",
        ),
        (
            outcome.Tick(1, decision=hold(R.HOLD_STALE_DATA)),
            "False",
            "NoFreshMetrics",
            "missing data never scales down",
        ),
        (
            outcome.Tick(1, decision=decided(mode=decision.Mode.PANIC, reason=R.SCALE_UP_PANIC)),
            "True",
            "Active",
            "panic mode",
        ),
    ],
)
def test_scaling_active(tick: outcome.Tick, status: str, reason: str, words: str) -> None:
    found = outcome.scaling_active(tick)
    assert (found.status.value, found.reason) == (status, reason)
    assert words in found.message
    assert found.observed_generation == 1


@pytest.mark.parametrize(
    ("tick", "status", "reason", "message"),
    [
        (
            outcome.Tick(
                1,
                decision=dataclasses.replace(decided(reason=R.LIMITED_BY_MAX, wanted=5), desired=3),
                max_replicas=3,
                unschedulable=(("c", UNSCHEDULABLE),),
            ),
            "True",
            "PodsUnschedulable",
            f"1 of 3 replicas pending: {UNSCHEDULABLE}; and the autoscaler is at maxReplicas 3",
        ),
        (
            outcome.Tick(1, decision=manual(4), unschedulable=(("c", UNSCHEDULABLE),)),
            "True",
            "PodsUnschedulable",
            f"1 of 4 replicas pending: {UNSCHEDULABLE}",
        ),
        (
            outcome.Tick(1, decision=decided(reason=R.LIMITED_BY_MAX, wanted=5), max_replicas=3),
            "True",
            "AtMaxReplicas",
            "held at maxReplicas 3; occupancy asks for 5",
        ),
        (
            outcome.Tick(1, decision=decided(reason=R.LIMITED_BY_MIN, wanted=0), min_replicas=0),
            "True",
            "AtMinReplicas",
            "held at 1 replica (minReplicas 0: without a pod, no report could ask to scale up); "
            "occupancy asks for 0",
        ),
        (
            outcome.Tick(1, decision=manual(2)),
            "False",
            "ManualReplicas",
            "spec.replicas sets the count (2)",
        ),
        (
            outcome.Tick(1, decision=decided(reason=R.STEADY), min_replicas=1, max_replicas=4),
            "False",
            "DesiredWithinRange",
            "desired 2 is within minReplicas 1 and maxReplicas 4",
        ),
    ],
)
def test_scaling_limited(tick: outcome.Tick, status: str, reason: str, message: str) -> None:
    found = outcome.scaling_limited(tick)
    assert (found.status.value, found.reason, found.message) == (status, reason, message)


MISSING = tuple((f"p{index}", "report stale (older than 5 s)") for index in range(7))


@pytest.mark.parametrize(
    ("tick", "status", "reason", "message"),
    [
        (outcome.Tick(1), "False", "NoReadyPods", "no engine pod is ready to report"),
        (
            outcome.Tick(1, decision=ready(3), num_fresh=3, num_polled=3),
            "True",
            "AllPodsReporting",
            "fresh reports from all 3 pods ready",
        ),
        (
            outcome.Tick(1, decision=ready(40), num_fresh=12, num_polled=12),
            "True",
            "AllPodsReporting",
            "fresh reports from the 12 of 40 ready pods sampled",
        ),
        (
            outcome.Tick(1, decision=ready(9), num_fresh=2, num_polled=9, unreported=MISSING),
            "False",
            "SomePodsMissing",
            "no fresh report from 7 of 9 ready pods: "
            + "; ".join(f"p{index}: report stale (older than 5 s)" for index in range(5))
            + "; and 2 more",
        ),
        (
            outcome.Tick(1, decision=ready(1), num_fresh=0, num_polled=1, unreported=MISSING[:1]),
            "False",
            "NoReports",
            "no fresh report from any of the 1 pod ready: p0: report stale (older than 5 s)",
        ),
    ],
)
def test_metrics_available(tick: outcome.Tick, status: str, reason: str, message: str) -> None:
    found = outcome.metrics_available(tick)
    assert (found.status.value, found.reason, found.message) == (status, reason, message)


def test_a_blocked_tick_leaves_metrics_available_as_it_was() -> None:
    previous = {
        "conditions": [
            {"type": "MetricsAvailable", "status": "True", "reason": "AllPodsReporting",
             "message": "fresh reports from all 2 pods ready",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "AllReplicasReady",
             "message": "2 of 2 replicas ready", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]
    }  # fmt: skip
    tick = outcome.Tick(2, blocked=outcome.Blocked("DeploymentMissing", "gone"))
    fields = outcome.fields(previous, tick, [], NOW)
    by_type = {item["type"]: item for item in fields["conditions"]}
    assert by_type["MetricsAvailable"] == previous["conditions"][0]
    assert by_type["Ready"] == previous["conditions"][1]  # the reconciler's, untouched
    assert by_type["ScalingActive"]["reason"] == "DeploymentMissing"
    assert "occupancy" not in fields
    assert "desiredReplicas" not in fields


def test_occupancy_is_rounded_and_history_entries_are_typed() -> None:
    tick = outcome.Tick(1, decision=ready(2, occupancy=0.123456))
    entry = outcome.history_entry(NOW, 1, 2, "scale_up_panic", 1.23456)
    fields = outcome.fields({}, tick, [entry], NOW)
    assert fields["occupancy"] == 0.123
    assert fields["scalingHistory"] == [
        {
            "time": "2026-06-01T12:00:00Z",
            "fromReplicas": 1,
            "toReplicas": 2,
            "reason": "scale_up_panic",
            "occupancy": 1.235,
        }
    ]
    assert fields["lastScaleTime"] == "2026-06-01T12:00:00Z"


def test_the_rate_limits_view_puts_status_and_reason_first_and_numbers_second() -> None:
    calm = outcome.Tick(1, decision=ready(2, occupancy=0.41))
    busier = outcome.Tick(1, decision=ready(2, occupancy=0.47))
    flipped = outcome.Tick(1, decision=dataclasses.replace(hold(R.HOLD_STALE_DATA), occupancy=None))
    assert outcome.summary(calm)[0] == outcome.summary(busier)[0]
    assert outcome.summary(calm)[1] != outcome.summary(busier)[1]
    assert outcome.summary(calm)[0] != outcome.summary(flipped)[0]
