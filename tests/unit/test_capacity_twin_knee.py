"""The learner finds the load at which a twin engine breaks its SLO, without being told.

An engine twin (Llama-3-8B on an H100 SXM, vLLM's defaults) serves Poisson arrivals of 1,000-
token prompts and 50-token answers at a grid of request rates. At each rate we measure what its
sidecar would report over a 30 s latency window (the TTFT histogram's increase, tokens per
second, KV usage) and, from the same runs, the true knee: the highest rate whose p90 TTFT is
within the SLO (`ttft: {p90: 500ms}`). Here compute binds first (the cache is about 10% full at
the knee). The learner, fed samples drawn from those runs in a random order, must end between
the token rates of the last rate that met the SLO and the first that broke it (5% slack), from a
prior three times too high or three times too low.
"""

from __future__ import annotations

import dataclasses
import functools
import random

import pytest

from kvscale import histogram
from kvscale.scaling import capacity
from kvscale.twin import engine, profile, request
from kvscale.twinserver import exposition

PROMPT_TOKENS, OUTPUT_TOKENS = 1000, 50
RATES = (20.0, 24.0, 27.0, 30.0, 33.0, 36.0, 42.0)  # requests per second
WARMUP_S, END_S = 30.0, 60.0  # the sample's latency window is [WARMUP_S, END_S]
OBJECTIVE = capacity.Objective(ttft=((0.9, 0.5),))


@dataclasses.dataclass(frozen=True)
class Run:
    rate: float
    tokens_per_second: float
    kv_usage: float
    ttft: histogram.Histogram


@functools.cache
def run(rate: float, seed: int = 0) -> Run:
    """One engine at `rate` requests/s: what its sidecar reports over the window."""
    rng = random.Random(seed)
    twin = engine.EngineTwin(engine.EngineConfig(), profile.get("h100-sxm", "llama-3-8b"))
    requests: list[request.Request] = []
    at, before = 0.0, None
    while True:
        at += rng.expovariate(rate)
        if before is None and at >= WARMUP_S:
            twin.advance_until(WARMUP_S)
            before = twin.metrics(WARMUP_S)
        if at > END_S:
            break
        twin.advance_until(at)
        req = request.Request(f"r{len(requests)}", PROMPT_TOKENS, OUTPUT_TOKENS)
        twin.add_request(req, at)
        requests.append(req)
    twin.advance_until(END_S)
    after = twin.metrics(END_S)
    assert before is not None
    tokens = (after.prompt_tokens_total + after.generation_tokens_total) - (
        before.prompt_tokens_total + before.generation_tokens_total
    )
    # vLLM observes a TTFT when the first token comes out: those that came out in the window.
    ttft = [
        r.first_token_time - r.arrival_time
        for r in requests
        if r.first_token_time is not None and WARMUP_S <= r.first_token_time <= END_S
    ]
    return Run(
        rate=rate,
        tokens_per_second=tokens / (END_S - WARMUP_S),
        kv_usage=after.kv_cache_usage,
        ttft=histogram.Histogram.of(exposition.TIME_TO_FIRST_TOKEN_BUCKETS, ttft),
    )


def _p90(found: Run) -> float:
    value = histogram.quantile(0.9, found.ttft)
    assert value is not None
    return value


@pytest.mark.slow
@pytest.mark.parametrize("prior_factor", [3.0, 1 / 3], ids=["prior-3x-high", "prior-3x-low"])
def test_the_learner_finds_the_twins_knee(prior_factor: float) -> None:
    runs = [run(rate) for rate in RATES]
    meeting = [r for r in runs if _p90(r) <= 0.5]
    breaking = [r for r in runs if _p90(r) > 0.5]
    # The grid brackets the knee, latency grows with load, and compute is what binds there.
    assert meeting
    assert breaking
    knee, broken = meeting[-1], breaking[0]
    assert knee.rate < broken.rate
    assert all(r.rate < broken.rate for r in meeting)
    assert knee.kv_usage < 0.5
    low, high = knee.tokens_per_second, broken.tokens_per_second

    learner = capacity.Learner(
        OBJECTIVE,
        {capacity.Resource.COMPUTE: low * prior_factor, capacity.Resource.KV: 0.7},
        settings=capacity.Settings(min_observations=20),
    )
    rng = random.Random(7)
    for index in range(300):
        found = rng.choice(runs)
        at = 1000.0 + 20.0 * index
        learner.observe(
            [
                capacity.Sample(
                    pod=f"pod-{index % 4}",
                    at=at,
                    started_at=0.0,
                    latency_since=at - (END_S - WARMUP_S),
                    kv_demand=found.kv_usage,
                    tokens_per_second=found.tokens_per_second,
                    ttft=found.ttft,
                    itl=None,
                )
            ]
        )
    estimate = learner.estimate(capacity.Resource.COMPUTE, 1000.0 + 20.0 * 300)
    assert estimate is not None
    for found in runs:
        print(f"rate {found.rate:4.0f}/s: {found.tokens_per_second:6.0f} tokens/s, KV "
              f"{found.kv_usage:.2f}, p90 TTFT {_p90(found):6.3f} s")  # fmt: skip
    print(f"prior {low * prior_factor:.0f} -> learned {estimate.capacity:.0f} tokens/s "
          f"({estimate.use.value}, scale down to {estimate.scale_down_capacity})")  # fmt: skip
    assert 0.95 * low <= estimate.capacity <= 1.05 * high, (
        f"learned {estimate.capacity:.0f} tokens/s; the knee is between {low:.0f} "
        f"(rate {knee.rate:g}/s, p90 {_p90(knee):.3f} s) and {high:.0f} "
        f"(rate {broken.rate:g}/s, p90 {_p90(broken):.3f} s)"
    )
    # Violations above the knee were compute's: the KV estimate was never lowered for them.
    kv = learner.estimate(capacity.Resource.KV, 1000.0 + 20.0 * 300)
    assert kv is not None
    assert kv.capacity >= 0.7
