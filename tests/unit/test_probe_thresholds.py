"""Probe results change a probe's state only after its thresholds, like kubelet's."""

from __future__ import annotations

import pytest

from kvscale.localstack.nodeagent import podspec, probe

HTTP = podspec.HttpGet(port=8080, path="/ready")


def run(tracker: probe.Tracker, results: str) -> list[bool]:
    """Feed results ('+' success, '-' failure); the state after each."""
    states = []
    for mark in results:
        tracker = tracker.observe(mark == "+")
        states.append(tracker.passing)
    return states


def test_initial_states_are_kubelets() -> None:
    spec = podspec.Probe(action=HTTP)
    assert probe.Tracker.for_probe(spec, probe.Kind.READINESS).passing is False
    assert probe.Tracker.for_probe(spec, probe.Kind.LIVENESS).passing is True
    assert probe.Tracker.for_probe(spec, probe.Kind.STARTUP).passing is False


@pytest.mark.parametrize(
    ("success", "failure", "results", "states"),
    [
        (1, 3, "+", "T"),
        (1, 3, "-+", "FT"),
        (1, 3, "+--+", "TTTT"),
        (1, 3, "+---", "TTTF"),
        (1, 3, "+---+", "TTTFT"),
        (2, 1, "+-++", "FFFT"),
        (2, 1, "++-", "FTF"),
        (3, 2, "++-+++--", "FFFFFTTF"),
    ],
)
def test_readiness_thresholds(success: int, failure: int, results: str, states: str) -> None:
    spec = podspec.Probe(action=HTTP, success_threshold=success, failure_threshold=failure)
    tracker = probe.Tracker.for_probe(spec, probe.Kind.READINESS)
    assert run(tracker, results) == [s == "T" for s in states]


def test_liveness_fails_after_failure_threshold_in_a_row() -> None:
    spec = podspec.Probe(action=HTTP, failure_threshold=3)
    tracker = probe.Tracker.for_probe(spec, probe.Kind.LIVENESS)
    assert run(tracker, "--+---") == [True, True, True, True, True, False]


def test_liveness_and_startup_use_a_success_threshold_of_one() -> None:
    spec = podspec.Probe(action=HTTP, success_threshold=5)
    assert probe.Tracker.for_probe(spec, probe.Kind.STARTUP).success_threshold == 1
    assert probe.Tracker.for_probe(spec, probe.Kind.LIVENESS).success_threshold == 1
    assert probe.Tracker.for_probe(spec, probe.Kind.READINESS).success_threshold == 5


def test_an_adopted_container_keeps_its_readiness_until_results_say_otherwise() -> None:
    spec = podspec.Probe(action=HTTP, failure_threshold=2)
    tracker = probe.Tracker.for_probe(spec, probe.Kind.READINESS, passing=True)
    assert run(tracker, "-+--") == [True, True, True, False]


def test_the_run_counts_equal_results_in_a_row() -> None:
    spec = podspec.Probe(action=HTTP)
    tracker = probe.Tracker.for_probe(spec, probe.Kind.READINESS)
    for mark in "++-":
        tracker = tracker.observe(mark == "+")
    assert (tracker.last, tracker.run) == (False, 1)
