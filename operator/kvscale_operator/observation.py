"""Engine pods and their sidecars' reports, as the scaling decision's observations. Pure.

The adapter between two contracts that evolve apart: Pod objects as the API server returns
them plus `kvscale.report.OccupancyReport`s on one side, `kvscale.scaling.demand.Observation`s
on the other. `kvscale.scaling.demand`'s docstring lists what it expects; the rules here:

- Phase. `terminating` when the pod has a deletionTimestamp, or has Failed or Succeeded (an
  evicted pod stays until it is collected, and serves nothing); `ready` when its Ready
  condition is True; `pending` while it is not scheduled or none of its containers runs;
  `starting` otherwise.
- A pod that was ready at an earlier tick and is not ready now, but is not terminating either,
  stays `ready` for the decision: its engine or its sidecar crashed or stopped answering, and
  its load is unknown, not zero. The decision then counts it as unreported (saturated for
  scale-up, and no scale-down while it lasts) until a fresh report says otherwise, instead of
  treating it as capacity on the way and its load as gone. A pod that never was ready (still
  loading its model, or crash-looping at start) is capacity on the way, never "saturated",
  so a broken rollout cannot make the autoscaler buy pods. The loop remembers which pods were
  ready (`Memory`) and marks each one once with the annotation `READY_ONCE_ANNOTATION`, so a
  restarted operator still knows.
- Reports are kept across ticks (`Reports`): a poll that fails leaves the pod's last good
  report in place, growing older, and the decision calls it stale after `stale_after_seconds`.
  One slow answer therefore costs nothing, and a dead sidecar is noticed within that limit.
- `Sample.time` = the decision clock when the report arrived minus its `age_seconds`, so the
  sidecar's wall clock never meets the operator's; `healthy` = health is ok (the numbers of an
  unhealthy report are the last good ones); the preemption rate is 0 while the sidecar has
  fewer than two samples; `tokens_per_second` = the prompt plus the generation token rate,
  the one rate present when the engine exports only one counter, and None (unknown, never 0)
  when the report has neither; the v1 report says nothing about the waiting requests' blocks or
  tokens, so both stay None and the decision estimates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from kvscale import report
from kvscale.scaling import demand, settings

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
READY_ONCE_ANNOTATION = "kvscale.dev/ready-once"
"""Set by the autoscaler on an engine pod the first time it sees it ready (value: when)."""
_GONE_PHASES = frozenset({"Failed", "Succeeded"})


# Pods arrive as plain dicts (JSON); `dict` checks are several times cheaper than `Mapping`
# ones, which matters at thousands of pods per tick.


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _condition(pod: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in _get(pod, "status", "conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


@dataclasses.dataclass(frozen=True)
class Pod:
    """What the autoscaler needs from one engine pod."""

    name: str
    uid: str
    ip: str | None
    """status.podIP; None until the pod has one."""
    phase: demand.Phase
    """The phase the decision sees (see the module docstring)."""
    ready: bool
    """The Ready condition is True now."""
    unschedulable: str | None
    """The scheduler's message while PodScheduled is False."""
    deletion_cost: str | None
    """The pod-deletion-cost annotation as it is now."""
    marked_ready: bool = False
    """It carries `READY_ONCE_ANNOTATION`."""

    @property
    def lost(self) -> bool:
        """Counted as ready by the decision, but not ready now (see the module docstring)."""
        return self.phase is demand.Phase.READY and not self.ready


def read_pod(obj: Mapping[str, Any], was_ready: bool) -> Pod:
    """One Pod object as the API server returns it; missing fields mean "not yet"."""
    metadata = obj.get("metadata") or {}
    ready_condition = _condition(obj, "Ready")
    ready = ready_condition is not None and ready_condition.get("status") == "True"
    scheduled = _condition(obj, "PodScheduled")
    unschedulable = None
    if scheduled is not None and scheduled.get("status") == "False":
        unschedulable = str(scheduled.get("message") or scheduled.get("reason") or "unschedulable")
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    marked = READY_ONCE_ANNOTATION in annotations
    running = any(
        isinstance(_get(status, "state", "running"), dict)
        for status in _get(obj, "status", "containerStatuses") or []
    )
    if metadata.get("deletionTimestamp") or _get(obj, "status", "phase") in _GONE_PHASES:
        phase = demand.Phase.TERMINATING
    elif ready or was_ready or marked:
        phase = demand.Phase.READY
    elif not (scheduled is not None and scheduled.get("status") == "True") or not running:
        phase = demand.Phase.PENDING
    else:
        phase = demand.Phase.STARTING
    cost = annotations.get(DELETION_COST_ANNOTATION)
    ip = _get(obj, "status", "podIP")
    return Pod(
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or metadata.get("name") or ""),
        ip=str(ip) if ip else None,
        phase=phase,
        ready=ready,
        unschedulable=unschedulable,
        deletion_cost=str(cost) if cost is not None else None,
        marked_ready=marked,
    )


class Memory:
    """Which pods have been ready while this loop has watched them (by uid)."""

    def __init__(self) -> None:
        self._ready: set[str] = set()

    def was_ready(self, uid: str) -> bool:
        return uid in self._ready

    def update(self, pods: Iterable[Pod]) -> None:
        """Remember the pods ready now; forget pods that are gone or terminating."""
        present = {pod.uid for pod in pods if pod.phase is not demand.Phase.TERMINATING}
        now_ready = {pod.uid for pod in pods if pod.ready}
        self._ready = (self._ready & present) | (now_ready & present)


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
    )


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
    pods: Sequence[Pod], polled: Collection[str], reports: Reports
) -> list[demand.Observation]:
    """One observation per pod; `polled` are the uids of the pods asked this tick.

    A pod not asked this tick carries no sample: the decision assumes it at the asked pods'
    mean whatever it last reported.
    """
    found = []
    for pod in pods:
        asked = pod.uid in polled
        found.append(
            demand.Observation(
                pod=pod.name,
                phase=pod.phase,
                sample=reports.sample(pod.uid) if asked else None,
                polled=asked,
            )
        )
    return found


def why_unreported(
    now: float,
    pod: Pod,
    reports: Reports,
    config: settings.ScalingSettings,
) -> str:
    """Why a ready pod has no fresh report, in words that do not change every tick."""
    latest = reports.latest(pod.uid)
    error = reports.error(pod.uid)
    polled = f"; last poll: {error}" if error else ""
    if latest is None:
        return f"no report yet{polled}"
    observed = demand.Observation(pod.name, demand.Phase.READY, sample(latest))
    reading = demand.read(now, observed, config)
    if reading.freshness is demand.Freshness.UNHEALTHY:
        return f"engine {latest.report.health.value}: {latest.report.reason}"
    if reading.freshness is demand.Freshness.STALE:
        return f"report stale (older than {config.stale_after_seconds:g} s){polled}"
    if reading.freshness is demand.Freshness.MISSING:
        return f"the report carries no sample: {latest.report.reason or 'engine not read yet'}"
    if reading.freshness is demand.Freshness.INVALID:
        return reading.detail
    return f"no fresh report{polled}"
