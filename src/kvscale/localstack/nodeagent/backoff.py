"""Restart policy and the crash-loop backoff schedule, kubelet's. Pure.

kubelet restarts a container that exited at once the first time, then waits 10 s after its next
exit, then 20 s, 40 s, ... up to 5 minutes; a container that ran long enough (twice the cap, its
backoff entry expiring) starts the schedule over. `initial` and `maximum` are settings so tests
can use a shorter schedule; the shape stays kubelet's.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Backoff:
    """A doubling delay between restarts.

    initial: the delay before the second restart in a row, seconds.
    maximum: the cap on any delay, seconds.
    """

    initial: float = 10.0
    maximum: float = 300.0

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ValueError(f"crash-loop backoff initial = {self.initial}, must be above 0")
        if not self.maximum >= self.initial:
            raise ValueError(
                f"crash-loop backoff maximum = {self.maximum}, must be at least the initial "
                f"delay {self.initial}"
            )

    @property
    def reset_after(self) -> float:
        """A run at least this long (seconds) forgets earlier failures."""
        return 2 * self.maximum

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next start, after `failures` exits in a row."""
        if failures <= 1:
            return 0.0
        # Cap the exponent too: 2**failures overflows floats long before anyone waits that long.
        exponent = min(failures - 2, 64)
        return float(min(self.initial * 2**exponent, self.maximum))

    def failures_after(self, previous: int, run_seconds: float) -> int:
        """Exits in a row after one more exit, given how long that run lasted."""
        if run_seconds >= self.reset_after:
            return 1
        return previous + 1


def restarts(policy: str, exit_code: int) -> bool:
    """Whether a container that exited with `exit_code` is started again under `policy`."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False
