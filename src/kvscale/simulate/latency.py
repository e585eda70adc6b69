"""Latency records of a simulation: TTFT, inter-token latency, SLO attainment. Pure.

TTFT is measured from the request's arrival at the gateway (so time spent waiting for a
ready pod counts) to its first token. Per-request ITL is the mean gap between its tokens,
(last token - first token) / (output tokens - 1), what an SLO on "time per output token"
bounds. The token-level ITL distribution (every gap of every request, what vLLM's
`vllm:inter_token_latency_seconds` histogram shows) is kept in log-spaced bins 1.2% wide, so
its percentiles cost no memory per token.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

_BINS_PER_DECADE = 200
_LOW_S = 1e-4  # gaps under 0.1 ms land in the first bin
_NUM_BINS = 8 * _BINS_PER_DECADE  # up to 1e4 s


@dataclasses.dataclass(frozen=True)
class Slo:
    """A request meets the SLO when its TTFT and its mean ITL are both within these."""

    ttft_s: float = 2.0
    itl_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("ttft_s", "itl_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} = {value!r}, must be a finite number > 0")


@dataclasses.dataclass(frozen=True)
class Summary:
    """The latency side of a simulation's result."""

    num_requests: int
    ttft_p50_s: float
    ttft_p99_s: float
    itl_p50_s: float
    """Token-level ITL percentiles (every gap of every request)."""
    itl_p99_s: float
    slo_attainment: float
    """Fraction of requests meeting both the TTFT and the mean-ITL targets."""
    ttft_attainment: float
    itl_attainment: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, nearest rank; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Recorder:
    """Collects per-request latencies and token gaps while a simulation runs."""

    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.mean_itl: list[float] = []  # one per finished request; 0 for one-token outputs
        self._itl_bins = [0] * (_NUM_BINS + 1)
        self._scale = _BINS_PER_DECADE / math.log(10)

    def finished(self, ttft_s: float, mean_itl_s: float) -> None:
        self.ttft.append(ttft_s)
        self.mean_itl.append(mean_itl_s)

    def gaps(self, pairs: Iterable[tuple[float, int]]) -> None:
        """Token gaps as (seconds, how many tokens had that gap) pairs (the twin's `itl`)."""
        bins, scale, log = self._itl_bins, self._scale, math.log
        for seconds, count in pairs:
            if seconds <= _LOW_S:
                bins[0] += count
            else:
                bins[min(_NUM_BINS, int(log(seconds / _LOW_S) * scale))] += count

    def itl_percentile(self, q: float) -> float:
        """The q-th percentile of token gaps, at the centre of its 1.2% bin; NaN when none."""
        total = sum(self._itl_bins)
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100 * total))
        seen = 0
        for index, count in enumerate(self._itl_bins):
            seen += count
            if seen >= rank:
                return float(_LOW_S * 10 ** ((index + 0.5) / _BINS_PER_DECADE))
        raise AssertionError("a rank within the total was not reached")

    def summary(self, slo: Slo) -> Summary:
        ttft = sorted(self.ttft)
        count = len(ttft)
        ok_ttft = [t <= slo.ttft_s for t in self.ttft]
        ok_itl = [i <= slo.itl_s for i in self.mean_itl]
        both = sum(1 for a, b in zip(ok_ttft, ok_itl, strict=True) if a and b)
        return Summary(
            num_requests=count,
            ttft_p50_s=percentile(ttft, 50),
            ttft_p99_s=percentile(ttft, 99),
            itl_p50_s=self.itl_percentile(50),
            itl_p99_s=self.itl_percentile(99),
            slo_attainment=both / count if count else math.nan,
            ttft_attainment=sum(ok_ttft) / count if count else math.nan,
            itl_attainment=sum(ok_itl) / count if count else math.nan,
        )
