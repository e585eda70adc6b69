"""Waiting for a condition in a real system: one `eventually`. Sleeps and runs the probe.

Integration tests poll a cluster, a sidecar or a process until it reaches a state. Every wait
names what it waits for and how long it may take (`timeout_s`, no default: a wait for a pod
to start and a wait for an Event differ by minutes), and says which errors mean "not yet"
(`retry_on`): any other error fails the test at once. The timeout is a deadline to give up
by, never a timing assertion: a slow machine waits longer, it does not fail sooner.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

NOT_MADE_YET: tuple[type[Exception], ...] = (
    subprocess.CalledProcessError,
    KeyError,
    IndexError,
    ValueError,
)
"""What a probe of a Kubernetes object still being made raises: kubectl's NotFound (a
CalledProcessError, as `cluster.KubectlError` is), a field or list item not set yet, a JSON
document not written yet."""


def eventually(
    probe: Callable[[], T | bool | None],
    what: str,
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `probe` until it returns something other than None or False, and return that.

    An error of a type in `retry_on` counts as "not yet". After `timeout_s` it fails with
    `what` and the last value or error; the last error is chained, so its traceback shows.
    """
    deadline = time.monotonic() + timeout_s
    last_value: object = None
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
        except retry_on as error:
            last_value, last_error = None, error
        else:
            if value is not None and value is not False:
                return value  # type: ignore[return-value]  # neither None nor False: a T
            last_value, last_error = value, None
        if time.monotonic() > deadline:
            last = f"last error: {last_error!r}" if last_error else f"last: {last_value!r}"
            raise AssertionError(f"gave up waiting for {what} after {timeout_s:g} s; {last}") from (
                last_error
            )
        time.sleep(interval_s)
