"""One tick's KV-cache demand of a deployment, from pod states and occupancy samples. Pure.

Inputs are plain frozen dataclasses, independent of the sidecar's report schema: an
`Observation` per engine pod (its name, its `Phase`, whether the collector polled it this tick,
and the `Sample` it reported, if any). `measure(now, observations, config)` turns them into a
`Signal`: the deployment's demand in "pods' worth" of KV cache, the mean occupancy, and which
ready pods had no usable report.

Per pod (ready pods only; starting, pending and terminating pods carry no load the decision
counts):
- capacity = num_gpu_blocks - 1 (vLLM reserves one null block; its usage ratio is
  used / (num_gpu_blocks - 1), and so is ours);
- demand = num_used_blocks + the blocks the waiting requests need. When the sample says how
  many (`num_waiting_blocks`), that; else from their prompt tokens (`num_waiting_tokens`,
  rounded up to blocks); else an estimate: each waiting request needs as many blocks as the
  running ones hold on average, and at least one. The estimate errs high on purpose, since a
  waiting request will also need blocks for its output; with nothing running it can only say
  one block per request, and the queue-pressure rule below covers that case;
- occupancy = demand / capacity. It may exceed 1: 1.5 means the queue needs half a cache more.
- load = occupancy, or, when the settings have a throughput target and the sample a token
  rate, the higher of occupancy and tokens_per_second / target_tokens_per_second x
  target_occupancy: a pod at its throughput target reads as a pod at its occupancy target.
  On a large GPU, compute saturates (latency rises) long before the KV cache fills; the
  throughput term sees that, and occupancy still sees long contexts and queues.
- pressure: preempting faster than `pressure_preemptions_per_second`, or at least
  `pressure_waiting_requests` requests waiting. A pod under pressure counts as at least full
  (occupancy >= 1): preemption means its cache overflowed, whatever its average says.

A ready pod's report is *fresh* when it exists, is valid, says the engine is healthy, and was
sampled at most `stale_after_seconds` before `now`. Otherwise it is missing, invalid, unhealthy
or stale, and the pod is *unreported*. Unreported pods never count as idle: in the demand they
count as saturated (max(1, mean occupancy of the fresh pods)), and the decision refuses to scale
down while any exists. A pod the collector did not poll this tick (it polls a subset when there
are many) is assumed to carry the fresh pods' mean occupancy, as Knative assumes of unsampled
pods; it is not unreported. With no fresh ready pod at all there is no demand (`demand is None`)
and the decision holds.

What the operator's adapter from `kvscale.report.OccupancyReport` must do (this module does not
import it, so the two can evolve apart):
- one Observation per pod the deployment's selector matches; `phase` from the pod:
  terminating when metadata.deletionTimestamp is set, ready when its Ready condition is True,
  pending while it is unscheduled or its containers have not started, starting otherwise;
- `polled=False` for a ready pod the collector chose not to ask this tick;
- `sample=None` when a polled pod's report could not be fetched or parsed, or carries no
  sample (`sampled_at` is None);
- `time` = the decision clock when the report arrived minus `report.age_seconds`, so that the
  sidecar's wall clock and the operator's never meet;
- `healthy` = (report.health == "ok"): the numbers of an unhealthy report are the last good
  ones and must not be read as current;
- `preemptions_per_second` = the report's rate, 0.0 while it is None (fewer than two samples);
- the v1 report carries neither waiting blocks nor waiting tokens: leave both None.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable

from kvscale import histogram
from kvscale.scaling import settings


class Phase(enum.StrEnum):
    """Where an engine pod is in its life, as far as capacity goes."""

    READY = "ready"  # serving: its report counts
    STARTING = "starting"  # scheduled and starting (model loading): capacity on the way
    PENDING = "pending"  # not scheduled or containers not started yet: capacity on the way
    TERMINATING = "terminating"  # going away: neither load nor capacity


@dataclasses.dataclass(frozen=True)
class Sample:
    """One occupancy reading of one engine, as its sidecar reported it."""

    time: float
    """When the engine was read, in seconds on the decision's clock (see the adapter notes)."""
    num_gpu_blocks: int
    """Blocks in the engine's KV pool as vLLM counts them, its reserved null block included."""
    num_used_blocks: int
    """Blocks held by running requests."""
    block_size: int = 16
    """Tokens per block."""
    num_requests_running: int = 0
    """Requests the engine is running."""
    num_requests_waiting: int = 0
    """Requests queued in the engine, not yet admitted (preempted ones included)."""
    num_waiting_blocks: int | None = None
    """Blocks the waiting requests need, when the engine can say; else None."""
    num_waiting_tokens: int | None = None
    """Prompt tokens of the waiting requests, when known; else None."""
    preemptions_per_second: float = 0.0
    """Recent preemption rate of the engine."""
    tokens_per_second: float | None = None
    """Recent token throughput of the engine, prompt plus generated tokens per second; None
    when unknown (fewer than two samples, or an engine without the counters)."""
    healthy: bool = True
    """False when the sidecar's latest scrape failed and these numbers are the last good ones."""
    ttft: histogram.Histogram | None = None
    """What the engine's time-to-first-token histogram gained over the sidecar's latency
    window; None when the engine exports none or the window is not two snapshots long yet."""
    itl: histogram.Histogram | None = None
    """Likewise for the inter-token latency histogram."""
    tpot: histogram.Histogram | None = None
    """Likewise for the finished requests' time-per-output-token histogram."""
    latency_since: float | None = None
    """When that latency window began, on the decision's clock; None without latency."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """One engine pod at this tick."""

    pod: str
    """The pod's name."""
    phase: Phase
    """The pod's state."""
    sample: Sample | None = None
    """Its sidecar's latest sample; None when there is none (see the adapter notes)."""
    polled: bool = True
    """False when the collector did not ask this pod this tick (it polls a subset)."""
    ready_since: float | None = None
    """When the pod became Ready, on the decision's clock; None when not known (not ready,
    or the caller cannot tell). Latency from a pod's first minutes teaches nothing."""
    created_at: float | None = None
    """When the pod was asked for (its creation), on the decision's clock; None when unknown.
    With `ready_since`, the time a new pod takes to serve (the scale-up's lead time)."""


class Freshness(enum.StrEnum):
    """Whether a ready pod's report can be used this tick."""

    FRESH = "fresh"
    UNPOLLED = "unpolled"  # not asked this tick: assumed like the fresh pods
    MISSING = "missing"  # asked, but no sample came back
    INVALID = "invalid"  # a sample with impossible numbers
    UNHEALTHY = "unhealthy"  # the sidecar could not read the engine; the numbers are old
    STALE = "stale"  # sampled longer ago than the staleness limit


SATURATED = 1.0
"""Occupancy of a full cache: the least a pod under pressure or without a report counts as."""


@dataclasses.dataclass(frozen=True)
class Reading:
    """What one ready pod contributes this tick."""

    pod: str
    freshness: Freshness
    occupancy: float | None
    """Demand / capacity from a fresh sample; None otherwise."""
    load: float | None
    """Occupancy, or the throughput equivalent when higher (see top); None without a fresh
    sample."""
    pressure: bool
    """Queue or preemptions at or over the pressure limits (fresh samples only)."""
    detail: str
    """Why the report cannot be used (empty when it can), naming the field or the age."""


@dataclasses.dataclass(frozen=True)
class Signal:
    """One tick's view of a deployment. Demands are in pods' worth of KV cache."""

    num_ready: int
    num_starting: int
    num_pending: int
    num_terminating: int
    readings: tuple[Reading, ...]
    """One per ready pod, in the order observed."""
    demand: float | None
    """Sum over ready pods of their load, pressure and unreported pods counted as
    saturated, unpolled pods at the fresh mean. None when no ready pod has a fresh report."""
    occupancy_demand: float | None
    """What KV occupancy alone says: the fresh mean times the ready pods, pressure and
    throughput ignored. Used to tell a scale-up for occupancy from the others."""
    load_demand: float | None
    """What load says (occupancy and throughput): the fresh mean load times the ready pods,
    pressure ignored. Used to tell a scale-up for throughput from one for pressure."""
    occupancy: float | None
    """Mean occupancy of the ready pods with fresh reports (what status shows)."""

    @property
    def num_fresh(self) -> int:
        return sum(1 for reading in self.readings if reading.freshness is Freshness.FRESH)

    @property
    def num_pressured(self) -> int:
        return sum(1 for reading in self.readings if reading.pressure)

    @property
    def unreported(self) -> tuple[Reading, ...]:
        """Ready pods whose report is missing, invalid, unhealthy or stale."""
        usable = (Freshness.FRESH, Freshness.UNPOLLED)
        return tuple(reading for reading in self.readings if reading.freshness not in usable)

    @property
    def removal_order(self) -> tuple[str, ...]:
        """Ready pods with a known load, least loaded first: the cheapest to remove.

        Pods with unknown load are left out: they are not known to be idle. (The ReplicaSet
        controller already removes pods that are not ready before ready ones.)
        """
        known = [r for r in self.readings if r.load is not None]
        known.sort(key=lambda r: (r.load, r.pod))
        return tuple(r.pod for r in known)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def problem(sample: Sample) -> str | None:
    """What is impossible about a sample, naming the field; None when it is plausible."""
    if not _is_number(sample.time):
        return f"time = {sample.time!r}, must be a finite number of seconds"
    counts = {
        "num_gpu_blocks": sample.num_gpu_blocks,
        "num_used_blocks": sample.num_used_blocks,
        "block_size": sample.block_size,
        "num_requests_running": sample.num_requests_running,
        "num_requests_waiting": sample.num_requests_waiting,
    }
    optional = {
        "num_waiting_blocks": sample.num_waiting_blocks,
        "num_waiting_tokens": sample.num_waiting_tokens,
    }
    counts.update({name: value for name, value in optional.items() if value is not None})
    for name, value in counts.items():
        if not _is_count(value):
            return f"{name} = {value!r}, must be an integer"
        if value < 0:
            return f"{name} = {value!r}, must be at least 0"
    if sample.num_gpu_blocks < 2:
        return (
            f"num_gpu_blocks = {sample.num_gpu_blocks!r}, must be at least 2 "
            "(one block is vLLM's reserved null block)"
        )
    if sample.block_size < 1:
        return f"block_size = {sample.block_size!r}, must be at least 1"
    if sample.num_used_blocks > sample.num_gpu_blocks - 1:
        return (
            f"num_used_blocks = {sample.num_used_blocks!r}, must be at most "
            f"num_gpu_blocks - 1 ({sample.num_gpu_blocks - 1})"
        )
    rate = sample.preemptions_per_second
    if not _is_number(rate) or rate < 0:
        return f"preemptions_per_second = {rate!r}, must be a finite number, at least 0"
    throughput = sample.tokens_per_second
    if throughput is not None and (not _is_number(throughput) or throughput < 0):
        return f"tokens_per_second = {throughput!r}, must be a finite number, at least 0"
    if not isinstance(sample.healthy, bool):
        return f"healthy = {sample.healthy!r}, must be true or false"
    return None


def waiting_blocks(sample: Sample) -> int:
    """Blocks the waiting requests need: reported, from their tokens, or estimated (see top)."""
    if sample.num_waiting_blocks is not None:
        return sample.num_waiting_blocks
    if sample.num_waiting_tokens is not None:
        from_tokens = -(-sample.num_waiting_tokens // sample.block_size)
        return max(from_tokens, sample.num_requests_waiting)
    per_request = 1
    if sample.num_requests_running > 0:
        per_request = max(1, -(-sample.num_used_blocks // sample.num_requests_running))
    return sample.num_requests_waiting * per_request


def occupancy(sample: Sample) -> float:
    """Demand over capacity: (used + waiting blocks) / (num_gpu_blocks - 1). Sample is valid."""
    return (sample.num_used_blocks + waiting_blocks(sample)) / (sample.num_gpu_blocks - 1)


def load(sample: Sample, config: settings.ScalingSettings) -> float:
    """Occupancy, or the throughput equivalent when that is higher (see top). Sample is valid."""
    kv = occupancy(sample)
    target = config.target_tokens_per_second
    if target is None or sample.tokens_per_second is None:
        return kv
    return max(kv, sample.tokens_per_second / target * config.target_occupancy)


def under_pressure(sample: Sample, config: settings.ScalingSettings) -> bool:
    """Queue or preemptions say the engine is saturated, whatever its occupancy."""
    return (
        sample.preemptions_per_second > config.pressure_preemptions_per_second
        or sample.num_requests_waiting >= config.pressure_waiting_requests
    )


def read(now: float, observation: Observation, config: settings.ScalingSettings) -> Reading:
    """Judge one ready pod's report at `now`."""
    pod, sample = observation.pod, observation.sample
    if not observation.polled:
        return Reading(pod, Freshness.UNPOLLED, None, None, False, "")
    if sample is None:
        return Reading(pod, Freshness.MISSING, None, None, False, "no report")
    invalid = problem(sample)
    if invalid is not None:
        return Reading(pod, Freshness.INVALID, None, None, False, f"invalid report: {invalid}")
    if not sample.healthy:
        return Reading(pod, Freshness.UNHEALTHY, None, None, False, "engine unhealthy")
    age = now - sample.time
    if age > config.stale_after_seconds:
        detail = f"stale: sampled {age:.1f} s ago (limit {config.stale_after_seconds:g} s)"
        return Reading(pod, Freshness.STALE, None, None, False, detail)
    if age < -config.stale_after_seconds:
        detail = f"invalid report: time is {-age:.1f} s in the future"
        return Reading(pod, Freshness.INVALID, None, None, False, detail)
    return Reading(
        pod,
        Freshness.FRESH,
        occupancy(sample),
        load(sample, config),
        under_pressure(sample, config),
        "",
    )


def _phase(observation: Observation) -> Phase:
    try:
        return Phase(observation.phase)
    except ValueError:
        known = ", ".join(phase.value for phase in Phase)
        raise ValueError(
            f"pod {observation.pod!r}: phase = {observation.phase!r}, must be one of {known}"
        ) from None


def measure(
    now: float,
    observations: Iterable[Observation],
    config: settings.ScalingSettings,
    pressure_floor: float = SATURATED,
) -> Signal:
    """This tick's demand of the deployment (see the module docstring for the rules).

    `pressure_floor` is the least a pod under pressure counts as (a full cache by default;
    sizing to an SLO counts it just over its target instead, `kvscale.scaling.sizing`)."""
    counts = dict.fromkeys(Phase, 0)
    readings = []
    for observation in observations:
        phase = _phase(observation)
        counts[phase] += 1
        if phase is Phase.READY:
            readings.append(read(now, observation, config))
    fresh = [r.occupancy for r in readings if r.occupancy is not None]
    loads = [r.load for r in readings if r.load is not None]
    demand = occupancy_demand = load_demand = mean = None
    if fresh:
        mean = math.fsum(fresh) / len(fresh)
        mean_load = math.fsum(loads) / len(loads)
        contributions = []
        for reading in readings:
            if reading.load is not None:
                own = reading.load
                contributions.append(max(own, pressure_floor) if reading.pressure else own)
            elif reading.freshness is Freshness.UNPOLLED:
                contributions.append(mean_load)
            else:
                contributions.append(max(SATURATED, mean_load))
        demand = math.fsum(contributions)
        occupancy_demand = mean * len(readings)
        load_demand = mean_load * len(readings)
    return Signal(
        num_ready=counts[Phase.READY],
        num_starting=counts[Phase.STARTING],
        num_pending=counts[Phase.PENDING],
        num_terminating=counts[Phase.TERMINATING],
        readings=tuple(readings),
        demand=demand,
        occupancy_demand=occupancy_demand,
        load_demand=load_demand,
        occupancy=mean,
    )
