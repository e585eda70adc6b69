"""Per-second rates of cumulative counters over a short window, surviving resets. Pure.

An engine's counters (preemptions, prefix-cache tokens) only ever grow, except when the engine
restarts and they start again from zero. A rate is the counter's increase over a window of recent
samples divided by the time the window spans. A drop in value, or a restart the caller detected
by other means, counts as "the counter began again at zero", as Prometheus' `rate()` does: the
increase is the new value. So a restart can never yield a negative rate or a spike of the old
total, and a long gap in samples simply falls out of the window.

Time is an argument (unix seconds); nothing here reads a clock.
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass(frozen=True)
class Rate:
    """A counter's increase over the span of a window, and that increase per second."""

    increase: float
    """How much the counter grew between the window's first and last samples."""
    window_seconds: float
    """The time between those two samples (> 0)."""

    @property
    def per_second(self) -> float:
        return self.increase / self.window_seconds


@dataclasses.dataclass(frozen=True)
class _Point:
    at: float
    """When the sample was taken."""
    increase: float
    """How much the counter grew since the sample before it (its value after a reset)."""


class CounterWindow:
    """The recent samples of one counter, enough to say how fast it grows.

    `window_seconds` is how far back samples count. The oldest sample kept is the window's
    starting point: its own increase (relative to a sample already dropped) is not counted.
    """

    def __init__(self, window_seconds: float) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds = {window_seconds}, must be greater than 0")
        self.window_seconds = window_seconds
        self._points: collections.deque[_Point] = collections.deque()
        self._last_value: float | None = None

    def observe(self, at: float, value: float, *, restarted: bool = False) -> None:
        """Record the counter's `value` at time `at`.

        `restarted` says the counter's source is a new process even if the value did not drop
        (it may have climbed past the old value before this sample).
        """
        if self._last_value is None or not self._points or at <= self._points[-1].at:
            # First sample, or the clock stepped back: nothing to compare with, start afresh.
            self._points.clear()
            self._points.append(_Point(at, 0.0))
        elif restarted or value < self._last_value:
            self._points.append(_Point(at, value))
        else:
            self._points.append(_Point(at, value - self._last_value))
        self._last_value = value
        horizon = at - self.window_seconds
        while len(self._points) > 1 and self._points[0].at < horizon:
            self._points.popleft()

    def clear(self) -> None:
        """Forget every sample (the counter went away)."""
        self._points.clear()
        self._last_value = None

    def rate(self) -> Rate | None:
        """The rate over the samples in the window; None until two samples span some time."""
        if len(self._points) < 2:
            return None
        span = self._points[-1].at - self._points[0].at
        increase = sum(point.increase for point in list(self._points)[1:])
        return Rate(increase=increase, window_seconds=span)
