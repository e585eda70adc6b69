"""One pod's capacity on a trace's request mix, and what each policy's signal reads there. Pure.

A load test, as an operator would run one before tuning an autoscaler: a sample of the
trace's requests (every k-th, so the whole hour's mix is in it) arrives evenly at a fixed
rate on one pod; the highest rate at which the pod still meets the SLO for `attainment` of
the requests is its capacity (bisection on the rate). Then the test runs at `utilization` of
that rate (70%) and reads the signals the policies scale on: tokens per second (hpa-cpu's
"CPU"; counted as the engines see the requests, after `simulation.fit` cuts those longer
than the context), in-flight requests (Knative's concurrency), KV-cache usage and KV demand
(kvscale), waiting requests (KEDA).

`targets` turns that into every policy's per-pod target by one rule: a pod should carry 70% of
its SLO capacity, so each target is its signal's value at that load (for the throughput
targets, hpa-cpu's and kvscale's `targetTokensPerSecond`, linear in load, that is 70% of the
tokens per second at capacity). `recommended` is the subset a user should set on kvscale:
the throughput target beside the CRD's default occupancy target, the configuration the
simulate benchmark found best (docs/simulation.md). Reading the signals at
70% load rather than taking 70% of their value at capacity matters: in-flight requests and KV
occupancy grow faster than load near capacity (latency grows), so 70% of their value at
capacity is a load close to capacity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from kvscale import trace
from kvscale.simulate import fleet, latency, simulation
from kvscale.simulate import policy as policy_


@dataclasses.dataclass(frozen=True)
class Reading:
    """One pod under a steady load: the signals every policy scales on."""

    rate_per_s: float
    attainment: float
    tokens_per_s: float
    """Prompt and output tokens per second."""
    inflight: float
    """Mean requests in flight (time-averaged after the test's first fifth)."""
    occupancy: float
    """Mean KV-cache usage over the same span."""
    demand: float
    """Mean KV demand (used + waiting blocks) / capacity over the same span."""
    waiting: float
    """Mean waiting requests over the same span."""


@dataclasses.dataclass(frozen=True)
class Capacity:
    """One pod at its SLO capacity, and at `utilization` of it."""

    at_capacity: Reading
    at_target: Reading
    utilization: float
    max_model_len: int = 0
    """The context the load test's engines had (0: not recorded)."""
    num_cut: int = 0
    """Requests of the load test's mix cut to fit that context."""
    num_sampled: int = 0
    """Requests in the load test's mix."""
    attainment: float = 0.99
    """The SLO attainment the capacity was bisected for."""

    @property
    def reachable(self) -> bool:
        """Whether one pod met the SLO for `attainment` of the requests at some rate; when
        not, `at_capacity` is the lowest rate tried and every target from it is meaningless
        (the SLO is too tight for these requests on this pod, whatever the load)."""
        return self.at_capacity.attainment >= self.attainment


def sample(requests: Sequence[trace.TraceRequest], count: int) -> list[trace.TraceRequest]:
    """Every k-th request, about `count` of them, in trace order."""
    if count < 1:
        raise ValueError(f"count = {count}, must be >= 1")
    step = max(1, len(requests) // count)
    return list(requests[::step][:count])


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def context_length(settings: fleet.Settings) -> int:
    """The engines' max_model_len on this fleet."""
    return settings.engine.resolve(settings.profile).max_model_len


def seen_tokens(mix: Sequence[trace.TraceRequest], max_model_len: int) -> list[int]:
    """Each request's prompt + output tokens after `simulation.fit` cuts it to the context."""
    return [sum(simulation.fit(req, max_model_len)) for req in mix]


def measure(
    mix: Sequence[trace.TraceRequest], rate: float, settings: fleet.Settings, slo: latency.Slo
) -> Reading:
    """One pod under `mix` arriving evenly at `rate` requests per second."""
    run = simulation.Settings(
        fleet=settings, min_replicas=1, max_replicas=1, slo=slo, timeline_interval_s=1.0
    )
    result = simulation.simulate(trace.steady(mix, rate), run, policy_.Static())
    arrivals_end = (len(mix) - 1) / rate
    steady = [p for p in result.timeline if arrivals_end / 5 <= p.time <= arrivals_end]
    # Tokens as the engine sees them: a request longer than the context is cut to fit it
    # (`simulation.fit`), and counting the uncut tokens overstated tokens/s at capacity 2-3x
    # on long-context traces.
    tokens = sum(seen_tokens(mix, context_length(settings)))
    return Reading(
        rate_per_s=rate,
        attainment=result.latency.slo_attainment,
        tokens_per_s=tokens / result.duration_s if result.duration_s > 0 else math.nan,
        inflight=_mean([p.inflight for p in steady]),
        occupancy=_mean([p.occupancy for p in steady]),
        demand=_mean([p.demand for p in steady]),
        waiting=_mean([p.waiting for p in steady]),
    )


def capacity(
    requests: Sequence[trace.TraceRequest],
    settings: fleet.Settings,
    slo: latency.Slo,
    *,
    attainment: float = 0.99,
    utilization: float = 0.7,
    num_requests: int = 2000,
    low: float = 0.25,
    high: float = 128.0,
    iterations: int = 10,
) -> Capacity:
    """Bisect the steady rate (requests/s) one pod serves at `attainment` of the SLO, then
    read the signals at `utilization` of that rate."""
    if not 0 < attainment <= 1:
        raise ValueError(f"attainment = {attainment}, must be in (0, 1]")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization = {utilization}, must be in (0, 1]")
    mix = sample(requests, num_requests)
    best: Reading | None = None
    for _ in range(iterations):
        rate = math.sqrt(low * high)  # rates span decades: bisect geometrically
        reading = measure(mix, rate, settings, slo)
        if reading.attainment >= attainment:
            low, best = rate, reading
        else:
            high = rate
    if best is None:
        best = measure(mix, low, settings, slo)
    target = measure(mix, best.rate_per_s * utilization, settings, slo)
    context = context_length(settings)
    return Capacity(
        at_capacity=best,
        at_target=target,
        utilization=utilization,
        max_model_len=context,
        num_cut=simulation.count_cut(mix, context),
        num_sampled=len(mix),
        attainment=attainment,
    )


def peak(
    requests: Sequence[trace.TraceRequest],
    settings: fleet.Settings,
    slo: latency.Slo,
    *,
    num_requests: int = 2000,
) -> float:
    """One pod's tokens per second with a full queue: the load test's mix all arriving at
    once. The most a pod of this fleet serves of this mix, SLO or not; `oracle.bound` divides
    the trace's work by it (the steady-rate capacity is less: a burst batches more, and a
    fleet met the SLO serving a short burst at about twice it)."""
    mix = sample(requests, num_requests)
    return measure(mix, 1e9, settings, slo).tokens_per_s


RECOMMENDED_FOR_KVSCALE = ("targetTokensPerSecond",)
"""What `kvscale simulate --calibrate` sets on kvscale: its calibrated KV target (the KV demand
at 70% load) cost 14-107% more GPU-hours than the throughput target beside the CRD's default
`targetOccupancy` 0.7, for similar attainment, in the benchmark."""


def recommended(found: Capacity, utilization: float | None = None) -> dict[str, str]:
    """The calibrated kvscale settings to use (see RECOMMENDED_FOR_KVSCALE)."""
    every = targets(found, utilization)
    return {key: every[key] for key in RECOMMENDED_FOR_KVSCALE}


def baseline_targets(found: Capacity, utilization: float | None = None) -> dict[str, str]:
    """The calibrated targets of the baselines (prefixed keys)."""
    return {key: value for key, value in targets(found, utilization).items() if "." in key}


def targets(found: Capacity, utilization: float | None = None) -> dict[str, str]:
    """Every policy's per-pod target from one load test, as `--set` overrides.

    The throughput targets (kvscale's tokens/s, hpa-cpu's utilization) are a share of the
    tokens/s at capacity, `utilization` (default: the load test's own); the others are read
    at the load test's utilization."""
    share = found.utilization if utilization is None else utilization
    if not 0 < share <= 1:
        raise ValueError(f"utilization = {share}, must be in (0, 1]")
    at = found.at_target
    return {
        "targetOccupancy": f"{min(1.0, max(at.demand, 1e-4)):.4g}",
        "targetTokensPerSecond": f"{max(share * found.at_capacity.tokens_per_s, 1.0):.0f}",
        "hpa.maxTokensPerSecond": f"{found.at_capacity.tokens_per_s:.0f}",
        "hpa.targetUtilization": f"{100 * share:g}",
        "knative.target": f"{max(at.inflight, 0.01):.3g}",
        # Dynamo's target KV load is its signal (KV demand) at the load test's utilization.
        "dynamo.targetKvLoad": f"{min(1.0, max(at.demand, 1e-4)):.4g}",
    }
