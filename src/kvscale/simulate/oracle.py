"""A clairvoyant bound and a peak-sized static pool, both planned from the whole trace. Pure.

The oracle knows the future load and nothing else about the fleet. Definition (also in
docs/simulation.md, "The oracle"):

- cut time into buckets of `bucket_s` (60 s) from the first arrival;
- the work of bucket k, W_k, is the prompt + output tokens (as the engines see them, after
  `simulation.fit`) of the requests arriving in it;
- the pods bucket k needs are n_k = max(min_replicas, ceil(W_k / (C x bucket_s))), capped at
  max_replicas, where C is one pod's tokens per second at its SLO capacity, measured by the
  same load test every policy is tuned with (`calibrate.capacity`);
- at every tick t (5 s) it asks for max(n(t), n(t + startup_delay)): the pods of the bucket
  under way, and those of the bucket one start-up delay ahead, so that they are ready when its
  load arrives.

It pays the same start-up delay and draining as any policy, so its GPU-hours are what a
policy that knew the load per minute and the pod's capacity would spend: a bound to measure
the others against ("GPU-hours over the oracle"), not a proof of optimality (a fleet may
meet the SLO a little under C for a burst shorter than a bucket).

`StaticPeak` is the fleet the peers report against: max_k n_k pods for the whole run.

The `oracle` policy is a clairvoyant *plan* (an achievable schedule), and its rounding up per
bucket and its look-ahead over-provision. What the others are measured against is `bound`: a
lower bound on the GPU-hours any policy needs to meet the SLO on the trace,

    bound = gpus_per_pod x max(min_replicas x (last arrival - first arrival), W / P) / 3600

with W the trace's whole work in tokens (after `simulation.fit`) and P one pod's tokens per
second with a full queue (`calibrate.peak`: the load test's mix all arriving at once):
fractional pods, no buckets, no look-ahead, start-up delay and draining counted as free, and
the SLO not even asked for. It is a bound under two stated assumptions: no pod serves faster
than with a full queue, and the trace's mix costs what the load test's sample of it costs.
Not C, the capacity at the SLO from the steady-rate load test: a pod meets the SLO on a short
burst at about twice C (it batches more), and the property test found runs under W / C.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from kvscale import trace
from kvscale.simulate import policy as policy_
from kvscale.simulate import simulation

NAMES = ("oracle", "static-peak")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Pods needed per bucket of the trace."""

    bucket_s: float
    needs: tuple[int, ...]
    min_replicas: int

    def need(self, time: float) -> int:
        """The pods the bucket holding `time` needs (min_replicas after the trace)."""
        index = math.floor(time / self.bucket_s)
        if 0 <= index < len(self.needs):
            return self.needs[index]
        return self.min_replicas

    @property
    def peak(self) -> int:
        return max(self.needs, default=self.min_replicas)


def plan(
    requests: Sequence[trace.TraceRequest],
    *,
    tokens_per_second: float,
    max_model_len: int,
    min_replicas: int,
    max_replicas: int,
    bucket_s: float = 60.0,
) -> Plan:
    """The pods each bucket's work needs at `tokens_per_second` per pod (see the module doc)."""
    if not (tokens_per_second > 0 and math.isfinite(tokens_per_second)):
        raise ValueError(f"tokensPerSecond = {tokens_per_second!r}, must be a finite number > 0")
    if not bucket_s > 0:
        raise ValueError(f"bucketSeconds = {bucket_s!r}, must be > 0")
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(f"min_replicas = {min_replicas}, must be in [1, {max_replicas}]")
    if not requests:
        return Plan(bucket_s, (), min_replicas)
    count = math.floor(requests[-1].arrival_s / bucket_s) + 1
    work = [0] * count
    for req in requests:
        work[math.floor(req.arrival_s / bucket_s)] += sum(simulation.fit(req, max_model_len))
    per_bucket = tokens_per_second * bucket_s
    needs = tuple(
        min(max_replicas, max(min_replicas, math.ceil(tokens / per_bucket - 1e-9)))
        for tokens in work
    )
    return Plan(bucket_s, needs, min_replicas)


def bound(
    requests: Sequence[trace.TraceRequest],
    *,
    tokens_per_second: float,
    max_model_len: int,
    min_replicas: int,
    gpus_per_pod: int = 1,
) -> float:
    """The lower bound on GPU-hours for this trace, `tokens_per_second` one pod's full-queue
    throughput, `calibrate.peak` (see the module doc)."""
    if not (tokens_per_second > 0 and math.isfinite(tokens_per_second)):
        raise ValueError(f"tokensPerSecond = {tokens_per_second!r}, must be a finite number > 0")
    if min_replicas < 0:
        raise ValueError(f"min_replicas = {min_replicas}, must be >= 0")
    if gpus_per_pod < 1:
        raise ValueError(f"gpus_per_pod = {gpus_per_pod}, must be >= 1")
    if not requests:
        return 0.0
    work = sum(sum(simulation.fit(req, max_model_len)) for req in requests)
    span = requests[-1].arrival_s - requests[0].arrival_s
    # The floor holds min_replicas pods while requests arrive; the work term is the fewest
    # pod-seconds that serve every token at the pod's full-queue throughput. Either alone is
    # a bound, so the larger is.
    return gpus_per_pod * max(min_replicas * span, work / tokens_per_second) / 3600.0


class Oracle:
    """Asks for the pods of the current bucket and of the bucket one start-up delay ahead."""

    name = "oracle"
    tick_s = 5.0

    def __init__(self, made: Plan, startup_delay_s: float) -> None:
        if not startup_delay_s >= 0:
            raise ValueError(f"startup_delay_s = {startup_delay_s!r}, must be >= 0")
        self.plan = made
        self.startup_delay_s = startup_delay_s

    def describe(self) -> str:
        return (
            f"clairvoyant: per {self.plan.bucket_s:g}s bucket, pods at SLO capacity, asked "
            f"{self.startup_delay_s:g}s ahead (peak {self.plan.peak})"
        )

    def desired(self, now: float) -> int:
        return max(self.plan.need(now), self.plan.need(now + self.startup_delay_s))

    def decide(self, view: policy_.View) -> policy_.Scale:
        return policy_.Scale(self.desired(view.now), reason="clairvoyant")


class StaticPeak:
    """A fixed pool sized for the trace's busiest bucket, asked for at t = 0."""

    name = "static-peak"
    tick_s = 60.0

    def __init__(self, made: Plan) -> None:
        self.plan = made

    def describe(self) -> str:
        return f"{self.plan.peak} pods, the busiest {self.plan.bucket_s:g}s bucket at SLO capacity"

    def decide(self, view: policy_.View) -> policy_.Scale:
        return policy_.Scale(self.plan.peak)


def build(
    name: str,
    requests: Sequence[trace.TraceRequest],
    *,
    tokens_per_second: float,
    max_model_len: int,
    min_replicas: int,
    max_replicas: int,
    startup_delay_s: float,
    overrides: dict[str, str] | None = None,
) -> Oracle | StaticPeak:
    """`oracle` or `static-peak` for this trace; `oracle.tokensPerSecond` and
    `oracle.bucketSeconds` overrides (unprefixed here) win over the arguments."""
    mine = dict(overrides or {})
    known = ("tokensPerSecond", "bucketSeconds")
    values: dict[str, float] = {}
    for key, text in mine.items():
        if key not in known:
            raise ValueError(f"oracle.{key}: unknown key, known: {', '.join(known)}")
        try:
            values[key] = float(text)
        except ValueError:
            raise ValueError(f"oracle.{key} = {text!r}, must be a number") from None
    made = plan(
        requests,
        tokens_per_second=values.get("tokensPerSecond", tokens_per_second),
        max_model_len=max_model_len,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        bucket_s=values.get("bucketSeconds", 60.0),
    )
    if name == "oracle":
        return Oracle(made, startup_delay_s)
    if name == "static-peak":
        return StaticPeak(made)
    raise ValueError(f"policy = {name!r}, must be one of {', '.join(NAMES)}")
