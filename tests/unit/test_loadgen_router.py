"""The load generator's router: the least-loaded ready pod, from reports and its own requests."""

from __future__ import annotations

import pytest

from kvscale import report
from kvscale.loadgen import router, view

CAPACITY = 255 * 32  # tokens of the example engine: 256 blocks of 32, one reserved


def _report(
    pod: str, usage: float, *, health: report.Health = report.Health.OK
) -> report.OccupancyReport:
    if health is not report.Health.OK:
        return report.OccupancyReport(
            pod=pod, health=health, reason="engine gone", served_at=100.0, checked_at=100.0
        )
    return report.OccupancyReport(
        pod=pod,
        health=health,
        sampled_at=100.0,
        served_at=100.1,
        block_size=32,
        num_gpu_blocks=256,
        num_used_blocks=round(usage * 255),
        usage_ratio=usage,
        kv_capacity_tokens=CAPACITY,
        num_requests_running=1,
        num_requests_waiting=0,
        preemptions_total=0,
    )


def _pods(*specs: tuple[str, float | None]) -> list[router.Candidate]:
    return [
        router.Candidate(name, f"127.1.0.{i + 2}", None if usage is None else _report(name, usage))
        for i, (name, usage) in enumerate(specs)
    ]


# (pods with reported usage, in flight tokens per pod, excluded, expected pod)
TABLE = [
    pytest.param([("a", 0.9), ("b", 0.2)], {}, frozenset(), "b", id="lowest-reported-usage"),
    pytest.param(
        [("a", 0.1), ("b", 0.2)],
        {"a": (3, CAPACITY // 2)},
        frozenset(),
        "b",
        id="requests-sent-since-the-report-count",
    ),
    pytest.param(
        [("a", 0.6), ("b", 0.5)],
        {"a": (1, CAPACITY // 10), "b": (1, CAPACITY // 10)},
        frozenset(),
        "b",
        id="report-above-in-flight-wins",
    ),
    pytest.param(
        [("a", 0.3), ("b", 0.3)],
        {"a": (4, 100), "b": (2, 100)},
        frozenset(),
        "b",
        id="tie-goes-to-fewer-requests",
    ),
    pytest.param([("b", 0.3), ("a", 0.3)], {}, frozenset(), "a", id="then-to-the-name"),
    pytest.param([("a", 0.0), ("b", 0.9)], {}, frozenset({"a"}), "b", id="excluded-pod-skipped"),
    pytest.param(
        [("a", None), ("b", 0.05)],
        {"a": (1, CAPACITY // 2)},
        frozenset(),
        "b",
        id="no-report-uses-in-flight-over-default-capacity",
    ),
    pytest.param([("a", None), ("b", 0.05)], {}, frozenset(), "a", id="no-report-and-idle-is-idle"),
]


@pytest.mark.parametrize(("pods", "in_flight", "exclude", "expected"), TABLE)
def test_least_loaded_table(
    pods: list[tuple[str, float | None]],
    in_flight: dict[str, tuple[int, int]],
    exclude: frozenset[str],
    expected: str,
) -> None:
    books = {name: router.InFlight(*value) for name, value in in_flight.items()}
    choice = router.Router(CAPACITY).choose(_pods(*pods), books, exclude)
    assert choice is not None
    assert choice.pod == expected


def test_no_candidate_is_none() -> None:
    assert router.Router(CAPACITY).choose([], {}) is None
    only = _pods(("a", 0.1))
    assert router.Router(CAPACITY).choose(only, {}, frozenset({"a"})) is None


def test_unhealthy_report_is_not_read_as_usage() -> None:
    # An unhealthy report carries old numbers (or none): the router falls back to its books.
    sick = router.Candidate("a", "127.1.0.2", _report("a", 0.0, health=report.Health.UNREACHABLE))
    rule = router.Router(CAPACITY)
    assert rule.load(sick, router.InFlight(2, CAPACITY // 4)) == pytest.approx(0.25)


def test_load_is_the_larger_fraction() -> None:
    rule = router.Router(CAPACITY)
    pod = _pods(("a", 0.4))[0]
    assert rule.load(pod, router.InFlight()) == pytest.approx(0.4)
    assert rule.load(pod, router.InFlight(5, CAPACITY)) == pytest.approx(1.0)


def test_in_flight_books_balance() -> None:
    books = router.InFlight().add(100).add(50).remove(100)
    assert books == router.InFlight(1, 50)
    with pytest.raises(ValueError, match="more than was added"):
        router.InFlight().remove(1)


def test_only_ready_pods_with_an_ip_are_candidates() -> None:
    pods = (
        view.Pod("ready", view.Phase.READY, "127.1.0.2", 0.0, 1.0),
        view.Pod("starting", view.Phase.STARTING, "127.1.0.3", 0.0, None),
        view.Pod("pending", view.Phase.PENDING, None, 0.0, None),
        view.Pod("leaving", view.Phase.TERMINATING, "127.1.0.4", 0.0, None),
    )
    snapshot = view.Snapshot(
        time=10.0,
        pods=pods,
        reports={"ready": _report("ready", 0.5), "leaving": _report("leaving", 0.0)},
        report_errors={},
        resource=None,
        deployment_replicas=4,
        decisions=(),
    )
    found = router.candidates(snapshot)
    assert [c.pod for c in found] == ["ready"]
    assert found[0].report is not None


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="default_capacity_tokens"):
        router.Router(0)


def test_full_pods_are_skipped_and_all_full_is_no_choice() -> None:
    rule = router.Router(CAPACITY, max_load=2.0)
    pods = _pods(("a", 0.1), ("b", 0.9))
    full_a = {"a": router.InFlight(9, 2 * CAPACITY)}
    choice = rule.choose(pods, full_a)
    assert choice is not None
    assert choice.pod == "b"
    both_full = {**full_a, "b": router.InFlight(9, 2 * CAPACITY + 1)}
    assert rule.choose(pods, both_full) is None
    # Without a limit the least loaded of the full ones still gets it.
    unlimited = router.Router(CAPACITY).choose(pods, both_full)
    assert unlimited is not None
    assert unlimited.pod == "a"


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_load"):
        router.Router(CAPACITY, max_load=0.0)
