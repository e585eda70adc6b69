"""Which ready engine pod gets the next request: the least-loaded one. Pure.

The rule (an inference gateway's endpoint picker, reduced to what matters for KV scaling):

- Only ready pods are candidates (`view.Phase.READY`, with an IP); pending, starting and
  terminating pods never get a request, and the caller may exclude more (a pod that just
  refused a connection).
- A candidate's load is the larger of two fractions of its KV capacity:
    reported = the sidecar's last `usage_ratio` (used blocks / usable blocks), when the
               report is healthy; the cache as it really is, but up to a second or two old;
    sent     = the KV tokens of the requests the generator sent there and has not seen finish
               (prompt + output tokens each: what a request holds when it completes), over the
               pod's KV capacity in tokens; current at once, but blind to other clients,
               finished prefixes and preemption.
  Taking the larger means neither the report's lag nor a burst sent between two reports makes
  a busy pod look idle. Capacity comes from the pod's report (`kv_capacity_tokens`); a pod
  without one is assumed to have the router's `default_capacity_tokens` (engines of one
  deployment are alike).
- The least load wins; ties go to fewer requests in flight, then to the pod name, so the choice
  is deterministic.
- With `max_load` set, a pod at or above it gets nothing more until requests finish there;
  when every pod is that full there is no choice, and the caller holds the request (an
  inference gateway's saturation limit: a backlog waits at the gateway, where any pod that
  becomes ready can take it, not in one engine's queue, where only that engine can).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from kvscale import report
from kvscale.loadgen import view


@dataclasses.dataclass(frozen=True)
class InFlight:
    """What the generator has sent to one pod and not yet seen finish."""

    requests: int = 0
    tokens: int = 0

    def add(self, tokens: int) -> InFlight:
        return InFlight(self.requests + 1, self.tokens + tokens)

    def remove(self, tokens: int) -> InFlight:
        if self.requests < 1 or self.tokens < tokens:
            raise ValueError(f"remove({tokens}) from {self}: more than was added")
        return InFlight(self.requests - 1, self.tokens - tokens)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A ready pod the router may choose."""

    pod: str
    ip: str
    report: report.OccupancyReport | None = None


@dataclasses.dataclass(frozen=True)
class Choice:
    """The chosen pod and the load the rule saw there."""

    pod: str
    ip: str
    load: float


def candidates(snapshot: view.Snapshot) -> list[Candidate]:
    """The ready pods of a snapshot, with their reports where there are any."""
    return [
        Candidate(pod.name, pod.ip, snapshot.reports.get(pod.name))
        for pod in snapshot.in_phase(view.Phase.READY)
        if pod.ip
    ]


@dataclasses.dataclass(frozen=True)
class Router:
    """The least-loaded-pod rule (see the module docstring)."""

    default_capacity_tokens: int
    max_load: float | None = None

    def __post_init__(self) -> None:
        if self.default_capacity_tokens < 1:
            raise ValueError(
                f"default_capacity_tokens = {self.default_capacity_tokens}: must be >= 1"
            )
        if self.max_load is not None and not self.max_load > 0:
            raise ValueError(f"max_load = {self.max_load}: must be > 0")

    def load(self, candidate: Candidate, in_flight: InFlight) -> float:
        """The candidate's load as a fraction of its KV capacity (may exceed 1)."""
        capacity = self.default_capacity_tokens
        reported = 0.0
        sample = candidate.report
        if sample is not None and sample.health is report.Health.OK:
            if sample.kv_capacity_tokens:
                capacity = sample.kv_capacity_tokens
            reported = sample.usage_ratio or 0.0
        return max(reported, in_flight.tokens / capacity)

    def choose(
        self,
        pods: Iterable[Candidate],
        in_flight: Mapping[str, InFlight],
        exclude: frozenset[str] = frozenset(),
    ) -> Choice | None:
        """The least-loaded candidate not in `exclude` and below `max_load`; None if none."""
        best: tuple[float, int, str] | None = None
        chosen: Candidate | None = None
        for candidate in pods:
            if candidate.pod in exclude or not candidate.ip:
                continue
            mine = in_flight.get(candidate.pod, InFlight())
            load = self.load(candidate, mine)
            if self.max_load is not None and load >= self.max_load:
                continue
            key = (load, mine.requests, candidate.pod)
            if best is None or key < best:
                best, chosen = key, candidate
        if best is None or chosen is None:
            return None
        return Choice(chosen.pod, chosen.ip, best[0])
