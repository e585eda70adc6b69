"""The chaos tests' alert recorder (tests/support/prometheus.py): each unbroken run of polls
that saw an alert is one episode, so two faults in one watch read as two, not one span."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest
from tests.support import prometheus

MISSING = prometheus.Alert("KVScaleOccupancyReportsMissing", "pending", (("name", "a"),))
LEADERLESS = prometheus.Alert("KVScaleOperatorNotReconciling", "pending", ())


class Scripted:
    """Answers /api/v1/alerts polls from a script; a None entry is a failed poll."""

    def __init__(self, script: list[list[prometheus.Alert] | None]) -> None:
        self.script = list(script)
        self.done = threading.Event()

    def alerts(self) -> list[prometheus.Alert]:
        if not self.script:
            self.done.set()
            return []
        entry = self.script.pop(0)
        if entry is None:
            raise OSError("Prometheus busy")
        return entry


def record(script: list[list[prometheus.Alert] | None]) -> prometheus.AlertRecorder:
    source = Scripted(script)
    recorder = prometheus.AlertRecorder(cast(Any, source), poll_s=0.001)
    recorder.start()
    assert source.done.wait(timeout=10)
    recorder.stop()
    return recorder


@pytest.mark.parametrize(
    ("script", "episodes"),
    [
        ([[MISSING], [MISSING], [MISSING]], 1),
        ([[MISSING], [], [MISSING]], 2),
        ([[MISSING], [LEADERLESS], [MISSING], [], [MISSING]], 3),
        # A failed poll says nothing: the episode goes on through it.
        ([[MISSING], None, [MISSING]], 1),
    ],
    ids=["unbroken", "gap", "three", "failed-poll"],
)
def test_each_unbroken_run_of_polls_is_one_episode(
    script: list[list[prometheus.Alert] | None], episodes: int
) -> None:
    recorder = record(script)
    (seen,) = [item for item in recorder.seen() if item.alert == MISSING]
    assert len(seen.episodes) == episodes
    assert seen.first_s <= seen.last_s
    assert all(first <= last for first, last in seen.episodes)
    assert str(seen).count(" from ") == episodes
    assert recorder.failed_polls == script.count(None)


def test_alerts_are_kept_apart_by_name_and_labels() -> None:
    recorder = record([[MISSING, LEADERLESS], [LEADERLESS]])
    assert {item.alert for item in recorder.seen()} == {MISSING, LEADERLESS}
