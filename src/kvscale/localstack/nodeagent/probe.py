"""Probe results turned into a probe's state, with kubelet's thresholds. Pure.

A probe's state changes only after `success_threshold` successes in a row (to passing) or
`failure_threshold` failures in a row (to failing); a result that agrees with the current state
just extends the run. Initial states are kubelet's: readiness starts failing (a container is
not ready until its probe passes), liveness starts passing, startup starts failing.
"""

from __future__ import annotations

import dataclasses
import enum

from kvscale.localstack.nodeagent import podspec


class Kind(enum.Enum):
    READINESS = "readiness"
    LIVENESS = "liveness"
    STARTUP = "startup"


def initial(kind: Kind) -> bool:
    """The state a probe of this kind is in before its first result."""
    return kind is Kind.LIVENESS


@dataclasses.dataclass(frozen=True)
class Tracker:
    """One probe's state.

    passing: the state others act on (ready, alive, started).
    last: the latest single result, None before the first.
    run: how many results in a row equal `last`.
    """

    success_threshold: int
    failure_threshold: int
    passing: bool
    last: bool | None = None
    run: int = 0

    @classmethod
    def for_probe(cls, probe: podspec.Probe, kind: Kind, passing: bool | None = None) -> Tracker:
        """A fresh tracker; `passing` overrides the initial state (an adopted container keeps
        the readiness it had before the agent restarted)."""
        # kubelet forces liveness and startup probes to a success threshold of 1.
        successes = probe.success_threshold if kind is Kind.READINESS else 1
        return cls(
            success_threshold=successes,
            failure_threshold=probe.failure_threshold,
            passing=initial(kind) if passing is None else passing,
        )

    def observe(self, ok: bool) -> Tracker:
        """The state after one more result."""
        run = self.run + 1 if ok == self.last else 1
        threshold = self.success_threshold if ok else self.failure_threshold
        passing = ok if run >= threshold else self.passing
        return dataclasses.replace(self, passing=passing, last=ok, run=run)
