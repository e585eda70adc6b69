"""What a replay achieved: per-request outcomes and the run's summary. Pure.

An `Outcome` is one trace request as the generator saw it. Latencies are measured from the
request's *scheduled* arrival, not from when it was sent, so time a request spent waiting in
the generator (for a ready pod, or for a concurrency slot) counts as the user would feel it.
`summarize(outcomes, timeline)` reduces a run to the numbers the demo prints.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence

from kvscale.loadgen import timeline


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One request: where it went, how long it took, what came back."""

    index: int
    scheduled_s: float
    """Its arrival in the replay, seconds after the load started."""
    prompt_tokens: int
    output_tokens: int
    """Tokens asked for (max_tokens with ignore_eos: the engine generates exactly these)."""
    pod: str | None = None
    """The pod of the last attempt; None if no pod was ever chosen."""
    sent_s: float | None = None
    ttft_s: float | None = None
    """First streamed token, seconds after scheduled_s."""
    latency_s: float | None = None
    """End of the response, seconds after scheduled_s."""
    received_tokens: int | None = None
    """completion_tokens of the response's usage, when it reported one."""
    retried: bool = False
    error: str = ""
    """Empty when the request succeeded; else what went wrong, briefly."""

    @property
    def ok(self) -> bool:
        return not self.error


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q = {q}: must be in [0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclasses.dataclass(frozen=True)
class Summary:
    sent: int
    ok: int
    failed: int
    errors: tuple[tuple[str, int], ...]
    """The most frequent errors, with counts."""
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    max_ready: int
    max_desired: int | None
    scale_ups: int
    scale_downs: int
    first_scale_up_s: float | None
    """Seconds from the start of the load to the first scale-up, if any came after it."""
    first_new_pod_ready_s: float | None
    """Seconds from the start of the load until more pods were ready than at its start."""
    peak_waiting: int | None
    peak_preemptions_per_second: float | None


def _first_more_ready(record: timeline.Timeline) -> float | None:
    if not record.samples:
        return None
    baseline = record.samples[0].ready
    for sample in record.samples:
        if sample.ready > baseline:
            return sample.t
    return None


def summarize(outcomes: Sequence[Outcome], record: timeline.Timeline) -> Summary:
    ok = [o for o in outcomes if o.ok]
    ttfts = [o.ttft_s for o in ok if o.ttft_s is not None]
    latencies = [o.latency_s for o in ok if o.latency_s is not None]
    errors = collections.Counter(o.error for o in outcomes if not o.ok)
    # Actions before the load (the operator's history reaches back) are not this run's.
    ups = [mark for mark in record.scale_ups() if mark.t >= 0]
    downs = [mark for mark in record.scale_downs() if mark.t >= 0]
    waiting = [s.waiting for s in record.samples if s.waiting is not None]
    preemptions = [
        s.preemptions_per_second for s in record.samples if s.preemptions_per_second is not None
    ]
    return Summary(
        sent=sum(1 for o in outcomes if o.sent_s is not None),
        ok=len(ok),
        failed=len(outcomes) - len(ok),
        errors=tuple(errors.most_common(3)),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p99_s=percentile(ttfts, 99),
        latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99),
        max_ready=record.max_ready(),
        max_desired=record.max_desired(),
        scale_ups=len(ups),
        scale_downs=len(downs),
        first_scale_up_s=ups[0].t if ups else None,
        first_new_pod_ready_s=_first_more_ready(record),
        peak_waiting=max(waiting) if waiting else None,
        peak_preemptions_per_second=max(preemptions) if preemptions else None,
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}/s"


def lines(summary: Summary) -> list[str]:
    """The summary as the demo prints it."""
    out = [
        f"requests      {summary.sent} sent, {summary.ok} ok, {summary.failed} failed",
        f"TTFT          p50 {_seconds(summary.ttft_p50_s)}, p99 {_seconds(summary.ttft_p99_s)}",
        f"latency       p50 {_seconds(summary.latency_p50_s)}, "
        f"p99 {_seconds(summary.latency_p99_s)}  (end to end, from the scheduled arrival)",
        f"replicas      max ready {summary.max_ready}, max desired {_count(summary.max_desired)}",
        f"scaling       {summary.scale_ups} scale-up(s), {summary.scale_downs} scale-down(s); "
        f"first scale-up {_seconds(summary.first_scale_up_s)} after the load started, "
        f"first added pod ready after {_seconds(summary.first_new_pod_ready_s)}",
        f"pressure      peak waiting {_count(summary.peak_waiting)}, "
        f"peak preemptions {_rate(summary.peak_preemptions_per_second)}",
    ]
    for error, count in summary.errors:
        out.append(f"error         {count} x {error}")
    return out
