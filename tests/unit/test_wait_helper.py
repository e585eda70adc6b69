"""The one `eventually`: what counts as "not yet", and what a failure says."""

from __future__ import annotations

import subprocess

import pytest
from tests.support import wait


def _probe(answers: list[object]) -> object:
    """The next answer; an exception instance is raised instead of returned."""
    answer = answers.pop(0)
    if isinstance(answer, Exception):
        raise answer
    return answer


def test_none_and_false_mean_not_yet() -> None:
    answers: list[object] = [None, False, 0, "later"]
    # 0 is an answer, not "not yet": only None and False are.
    assert wait.eventually(lambda: _probe(answers), "zero", timeout_s=60, interval_s=0) == 0
    assert answers == ["later"]


def test_errors_named_in_retry_on_mean_not_yet() -> None:
    answers: list[object] = [KeyError("status"), subprocess.CalledProcessError(1, "kubectl"), "ok"]
    found = wait.eventually(
        lambda: _probe(answers), "ok", timeout_s=60, interval_s=0, retry_on=wait.NOT_MADE_YET
    )
    assert found == "ok"


def test_other_errors_fail_at_once() -> None:
    answers: list[object] = [None, ZeroDivisionError("a bug"), "never reached"]
    with pytest.raises(ZeroDivisionError, match="a bug"):
        wait.eventually(lambda: _probe(answers), "x", timeout_s=60, interval_s=0)
    assert answers == ["never reached"]


def test_giving_up_names_the_wait_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"^gave up waiting for a pod after 0 s; last: False$"):
        wait.eventually(lambda: False, "a pod", timeout_s=0, interval_s=0)


def test_giving_up_shows_the_last_error_with_its_traceback() -> None:
    error = KeyError("readyReplicas")
    with pytest.raises(AssertionError, match=r"last error: KeyError\('readyReplicas'\)$") as caught:
        wait.eventually(
            lambda: _probe([error]), "ready", timeout_s=0, interval_s=0, retry_on=(KeyError,)
        )
    assert caught.value.__cause__ is error
