"""The per-second record of a demo run: replicas, occupancy, queue, preemptions, scaling. Pure.

`Timeline.observe(snapshot, counters)` turns one poll of the deployment (`view.Snapshot`) and
the generator's request counters into a `Sample` at `t` seconds after the timeline's origin
(the start of the load), and keeps every scaling action (`status.scalingHistory`, which the
operator bounds, so entries are merged by identity as they appear) and every decision (Events)
it has not seen before. The plot, the live line and the summary read only this record.
"""

from __future__ import annotations

import dataclasses
import statistics

from kvscale.loadgen import view


@dataclasses.dataclass(frozen=True)
class Counters:
    """The generator's requests so far."""

    arrived: int = 0
    """Requests whose arrival time has come."""
    held: int = 0
    """Arrived, and waiting in the generator for a pod with room (the gateway's queue)."""
    finished: int = 0
    """Completed with every requested token."""
    failed: int = 0

    @property
    def in_flight(self) -> int:
        """Sent to an engine and not finished."""
        return self.arrived - self.held - self.finished - self.failed


@dataclasses.dataclass(frozen=True)
class PodSample:
    """One pod at one sample; the numbers are its sidecar's report (None without one)."""

    pod: str
    phase: view.Phase
    usage: float | None = None
    """KV blocks used / usable (the report's usage_ratio)."""
    running: int | None = None
    waiting: int | None = None
    preemptions_per_second: float | None = None


@dataclasses.dataclass(frozen=True)
class Sample:
    """The deployment at `t` seconds after the origin."""

    t: float
    desired: int | None
    pods: tuple[PodSample, ...]
    operator_occupancy: float | None
    """The operator's own signal (status.occupancy): KV demand over capacity of ready pods."""
    counters: Counters

    def count(self, *phases: view.Phase) -> int:
        return sum(1 for pod in self.pods if pod.phase in phases)

    @property
    def ready(self) -> int:
        return self.count(view.Phase.READY)

    @property
    def reported(self) -> list[PodSample]:
        """Ready pods with a report."""
        return [p for p in self.pods if p.phase is view.Phase.READY and p.usage is not None]

    @property
    def mean_usage(self) -> float | None:
        usages = [p.usage for p in self.reported if p.usage is not None]
        return statistics.fmean(usages) if usages else None

    @property
    def waiting(self) -> int | None:
        counts = [p.waiting for p in self.reported if p.waiting is not None]
        return sum(counts) if counts else None

    @property
    def preemptions_per_second(self) -> float | None:
        rates = [p.preemptions_per_second for p in self.reported]
        known = [rate for rate in rates if rate is not None]
        return sum(known) if known else None


@dataclasses.dataclass(frozen=True)
class Mark:
    """A replica change, at `t` seconds after the origin."""

    t: float
    from_replicas: int
    to_replicas: int
    reason: str

    @property
    def up(self) -> bool:
        return self.to_replicas > self.from_replicas


@dataclasses.dataclass(frozen=True)
class Note:
    """An Event about the resource, at `t` seconds after the origin."""

    t: float
    reason: str
    message: str


def pod_samples(snapshot: view.Snapshot) -> tuple[PodSample, ...]:
    samples = []
    for pod in snapshot.pods:
        found = snapshot.reports.get(pod.name) if pod.phase is view.Phase.READY else None
        if found is None or found.sampled_at is None:
            samples.append(PodSample(pod.name, pod.phase))
            continue
        samples.append(
            PodSample(
                pod.name,
                pod.phase,
                usage=found.usage_ratio,
                running=found.num_requests_running,
                waiting=found.num_requests_waiting,
                preemptions_per_second=found.preemptions_per_second,
            )
        )
    return tuple(samples)


class Timeline:
    """Samples, scaling marks and decisions, in the order they were observed."""

    def __init__(self, origin: float) -> None:
        """`origin`: unix seconds of t = 0 (the start of the load)."""
        self.origin = origin
        self.samples: list[Sample] = []
        self.marks: list[Mark] = []
        self.notes: list[Note] = []
        self.target: float | None = None
        self._seen_actions: set[view.ScalingAction] = set()
        self._seen_decisions: set[str] = set()

    def observe(self, snapshot: view.Snapshot, counters: Counters) -> list[Note]:
        """Record one poll; return the decisions it brought that were not seen before."""
        t = snapshot.time - self.origin
        if self.samples and t < self.samples[-1].t:
            raise ValueError(f"t = {t:.3f}: earlier than the last sample {self.samples[-1].t:.3f}")
        resource = snapshot.resource
        self.samples.append(
            Sample(
                t=t,
                desired=snapshot.desired,
                pods=pod_samples(snapshot),
                operator_occupancy=None if resource is None else resource.occupancy,
                counters=counters,
            )
        )
        if resource is not None:
            self.target = resource.target_occupancy
            for action in resource.history:
                if action not in self._seen_actions:
                    self._seen_actions.add(action)
                    self.marks.append(
                        Mark(
                            action.time - self.origin,
                            action.from_replicas,
                            action.to_replicas,
                            action.reason,
                        )
                    )
            self.marks.sort(key=lambda mark: mark.t)
        fresh = []
        for decision in snapshot.decisions:
            if decision.key not in self._seen_decisions:
                self._seen_decisions.add(decision.key)
                fresh.append(Note(decision.time - self.origin, decision.reason, decision.message))
        self.notes.extend(fresh)
        return fresh

    def times(self) -> list[float]:
        return [sample.t for sample in self.samples]

    def pod_names(self) -> list[str]:
        """Every pod that was ever seen, in order of first appearance."""
        names: dict[str, None] = {}
        for sample in self.samples:
            for pod in sample.pods:
                names.setdefault(pod.pod, None)
        return list(names)

    def usage_of(self, pod: str) -> list[float | None]:
        """One pod's KV usage at each sample; None while it was not ready or unreported."""
        series: list[float | None] = []
        for sample in self.samples:
            found = [p.usage for p in sample.pods if p.pod == pod and p.phase is view.Phase.READY]
            series.append(found[0] if found else None)
        return series

    def scale_ups(self) -> list[Mark]:
        return [mark for mark in self.marks if mark.up]

    def scale_downs(self) -> list[Mark]:
        return [mark for mark in self.marks if not mark.up]

    def max_ready(self) -> int:
        return max((sample.ready for sample in self.samples), default=0)

    def max_desired(self) -> int | None:
        values = [sample.desired for sample in self.samples if sample.desired is not None]
        return max(values) if values else None
