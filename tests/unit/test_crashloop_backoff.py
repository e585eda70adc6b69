"""Restarts follow the restart policy and kubelet's crash-loop backoff schedule."""

from __future__ import annotations

import pytest

from kvscale.localstack.nodeagent import backoff

KUBELET = backoff.Backoff()


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (0, 0.0),
        (1, 0.0),
        (2, 10.0),
        (3, 20.0),
        (4, 40.0),
        (5, 80.0),
        (6, 160.0),
        (7, 300.0),
        (8, 300.0),
        (1000, 300.0),
    ],
)
def test_kubelet_schedule(failures: int, delay: float) -> None:
    assert KUBELET.delay(failures) == delay


def test_a_shorter_schedule_keeps_the_shape() -> None:
    fast = backoff.Backoff(initial=0.5, maximum=2.0)
    assert [fast.delay(n) for n in range(1, 7)] == [0.0, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_long_run_forgets_earlier_failures() -> None:
    assert KUBELET.failures_after(5, run_seconds=3.0) == 6
    assert KUBELET.failures_after(5, run_seconds=KUBELET.reset_after - 1) == 6
    assert KUBELET.failures_after(5, run_seconds=KUBELET.reset_after) == 1
    assert KUBELET.reset_after == 600.0


@pytest.mark.parametrize(
    ("initial", "maximum", "message"),
    [(0.0, 10.0, "initial = 0.0"), (-1.0, 10.0, "initial = -1.0"), (10.0, 5.0, "maximum = 5.0")],
)
def test_bad_schedules_are_refused(initial: float, maximum: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backoff.Backoff(initial=initial, maximum=maximum)


@pytest.mark.parametrize(
    ("policy", "exit_code", "restarts"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 137, True),
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_restart_policy(policy: str, exit_code: int, restarts: bool) -> None:
    assert backoff.restarts(policy, exit_code) is restarts
