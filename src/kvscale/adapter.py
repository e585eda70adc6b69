"""Sidecar reports as the scaling decision's observations: the one adapter. Pure.

The operator and `kvscale simulate` both feed `kvscale.scaling.decision` through this module,
so the simulator's results are evidence about the operator's own path from report to decision:
`kvscale.report.OccupancyReport`s (fetched from `report.PATH`, or built by the simulator as a
sidecar would build them) go in, `kvscale.scaling.demand.Observation`s come out. Which pods
exist and in which phase is the caller's business (the operator reads Pod objects, the
simulator its fleet); the rules for the reports:

- Reports are kept across ticks (`Reports`): a poll that fails leaves the pod's last good
  report in place, growing older, and the decision calls it stale after `stale_after_seconds`.
  One slow answer therefore costs nothing, and a dead sidecar is noticed within that limit.
- `Sample.time` = the decision clock when the report arrived minus its `age_seconds`, so the
  sidecar's wall clock never meets the decision's; `healthy` = health is ok (the numbers of an
  unhealthy report are the last good ones); the preemption rate is 0 while the sidecar has
  fewer than two samples; `tokens_per_second` = the prompt plus the generation token rate,
  the one rate present when the engine exports only one counter, and None (unknown, never 0)
  when the report has neither; the v1 report says nothing about the waiting requests' blocks or
  tokens, so both stay None and the decision estimates them.
- A pod not asked this tick carries no sample: the decision assumes it at the asked pods' mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Protocol

from kvscale import histogram, report
from kvscale.scaling import demand, settings


class Engine(Protocol):
    """What the adapter needs to know of one engine pod."""

    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> str:
        """Tells two pods of the same name apart (a pod recreated under its old name)."""
        ...

    @property
    def phase(self) -> demand.Phase: ...

    @property
    def created_at(self) -> float | None:
        """When the pod was created, in seconds on the caller's wall clock; None if unknown."""
        ...

    @property
    def ready_since(self) -> float | None:
        """When its Ready condition last became True (wall clock); None while not ready."""
        ...


@dataclasses.dataclass(frozen=True)
class Received:
    """A report as it arrived."""

    report: report.OccupancyReport
    received_at: float
    """The decision clock when it arrived."""


def sample(received: Received) -> demand.Sample | None:
    """The decision's sample from a report; None when the report carries no sample."""
    found = received.report
    if (
        found.sampled_at is None
        or found.age_seconds is None
        or found.num_gpu_blocks is None
        or found.num_used_blocks is None
        or found.block_size is None
    ):
        return None
    return demand.Sample(
        time=received.received_at - found.age_seconds,
        num_gpu_blocks=found.num_gpu_blocks,
        num_used_blocks=found.num_used_blocks,
        block_size=found.block_size,
        num_requests_running=found.num_requests_running or 0,
        num_requests_waiting=found.num_requests_waiting or 0,
        preemptions_per_second=found.preemptions_per_second or 0.0,
        tokens_per_second=_tokens_per_second(found),
        healthy=found.health is report.Health.OK,
        ttft=_increase(found.time_to_first_token),
        itl=_increase(found.inter_token_latency),
        tpot=_increase(found.time_per_output_token),
        latency_since=_latency_since(received.received_at - found.age_seconds, found),
    )


def _increase(window: report.LatencyWindow | None) -> histogram.Histogram | None:
    return None if window is None else window.as_histogram()


def _latency_since(sampled: float, found: report.OccupancyReport) -> float | None:
    """When the latency windows began, on the decision's clock: the sample's time less the
    longest window (the histograms' windows end at the sample)."""
    spans = [
        window.window_seconds
        for window in (
            found.time_to_first_token,
            found.inter_token_latency,
            found.time_per_output_token,
        )
        if window is not None
    ]
    return sampled - max(spans) if spans else None


def _tokens_per_second(found: report.OccupancyReport) -> float | None:
    """Prompt plus generated tokens per second; the one known rate if the other is not."""
    known = [
        rate
        for rate in (found.prompt_tokens_per_second, found.generation_tokens_per_second)
        if rate is not None
    ]
    return sum(known) if known else None


class Reports:
    """Each pod's latest report and latest poll error, kept across ticks (by pod uid)."""

    def __init__(self) -> None:
        self._latest: dict[str, Received] = {}
        self._samples: dict[str, demand.Sample | None] = {}
        self._errors: dict[str, str] = {}

    def record(self, uid: str, received: Received) -> None:
        self._latest[uid] = received
        self._samples[uid] = sample(received)
        self._errors.pop(uid, None)

    def sample(self, uid: str) -> demand.Sample | None:
        """The latest report's sample (made once per report, not once per tick)."""
        return self._samples.get(uid)

    def fail(self, uid: str, error: str) -> None:
        """A poll that failed: the last good report stays, and grows older."""
        self._errors[uid] = error

    def latest(self, uid: str) -> Received | None:
        return self._latest.get(uid)

    def error(self, uid: str) -> str | None:
        return self._errors.get(uid)

    def keep_only(self, uids: Collection[str]) -> None:
        """Forget pods that are gone."""
        for store in (self._latest, self._samples, self._errors):
            for uid in [uid for uid in store if uid not in uids]:
                del store[uid]


def observations(
    pods: Sequence[Engine],
    polled: Collection[str],
    reports: Reports,
    wall_offset: float = 0.0,
) -> list[demand.Observation]:
    """One observation per pod; `polled` are the uids of the pods asked this tick.

    A pod not asked this tick carries no sample: the decision assumes it at the asked pods'
    mean whatever it last reported. `wall_offset` is the decision clock minus the wall clock
    the pods' timestamps are on (0 when they share one, as in the simulator).
    """
    found = []
    for pod in pods:
        asked = pod.uid in polled
        created, ready = pod.created_at, pod.ready_since
        found.append(
            demand.Observation(
                pod=pod.name,
                phase=pod.phase,
                sample=reports.sample(pod.uid) if asked else None,
                polled=asked,
                created_at=None if created is None else created + wall_offset,
                ready_since=None if ready is None else ready + wall_offset,
            )
        )
    return found


def why_unreported(
    reading: demand.Reading, uid: str, reports: Reports, config: settings.ScalingSettings
) -> str:
    """Why a ready pod has no fresh report, in words that do not change every tick.

    `reading` is the decision's own (`decision.Decision.missing`); `uid` finds the pod's
    latest report and poll error, which say more than the reading can.
    """
    latest = reports.latest(uid)
    error = reports.error(uid)
    polled = f"; last poll: {error}" if error else ""
    if latest is None:
        return f"no report yet{polled}"
    if reading.freshness is demand.Freshness.UNHEALTHY:
        return f"engine {latest.report.health.value}: {latest.report.reason}"
    if reading.freshness is demand.Freshness.STALE:
        return f"report stale (older than {config.stale_after_seconds:g} s){polled}"
    if reading.freshness is demand.Freshness.MISSING:
        return f"the report carries no sample: {latest.report.reason or 'engine not read yet'}"
    if reading.freshness is demand.Freshness.INVALID:
        return reading.detail
    return f"no fresh report{polled}"
