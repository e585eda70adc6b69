"""The sidecar's state machine: scrape outcomes in, occupancy reports out. Pure.

The poll loop hands every scrape's outcome to `Sampler.observe` with the time it ended and how
long it took; a request for the report calls `Sampler.report(now)`. Neither does I/O or reads a
clock. `next_start` is the loop's schedule, here so the detection bound can be tested with it.

Health follows the latest answer; a scrape that gets no answer (no connection, reset, or no
answer within the deadline) is *missed*, and a slow engine and a dead one look alike for one
scrape. So missed scrapes change health only once there are `unreachable_after` of them in a
row; until then health stays what the latest answer said and the report carries
`scrape_status = missed`, the count, and the last good sample growing older (the operator's
staleness rule decides whether it is still usable).

| latest outcome                                        | engine never up | engine was up    |
|-------------------------------------------------------|-----------------|------------------|
| no answer, fewer than `unreachable_after` in a row    | starting        | unchanged        |
| no answer, `unreachable_after` or more in a row       | starting        | unreachable      |
| /health answers 503                                   | starting        | unreachable      |
| /health answers something else than 200 or 503        | bad_metrics     | bad_metrics      |
| /health 200, /metrics not 200 or not text             | bad_metrics     | bad_metrics      |
| /health 200, /metrics lacks or garbles a metric       | bad_metrics     | bad_metrics      |
| /health 200, /metrics complete                        | ok              | ok               |

"Up" means /health once answered 200. A 503 is an answer (vLLM's engine is not serving), so it
takes no grace. An answer that took longer than the poll interval is `slow`: a good sample
all the same. The numbers in a report are always the last good sample's, with its time and
age; a bad outcome never erases them and never turns them into zeros.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kvscale import histogram, rate, report
from kvscale_sidecar import settings, vllm_metrics


@dataclasses.dataclass(frozen=True)
class Refused:
    """No connection could be made (nothing listens, host unreachable, name unknown)."""

    detail: str


@dataclasses.dataclass(frozen=True)
class TimedOut:
    """The engine did not answer within the scrape timeout."""

    detail: str


@dataclasses.dataclass(frozen=True)
class Failed:
    """A connection was made but broke, or the answer was not HTTP."""

    detail: str


@dataclasses.dataclass(frozen=True)
class Unhealthy:
    """/health answered, but not 200 (vLLM answers 503 while its engine is not serving)."""

    status: int
    detail: str


@dataclasses.dataclass(frozen=True)
class Answered:
    """/health answered 200 and /metrics answered: its status, and its body when it is text."""

    status: int
    text: str | None
    detail: str = ""
    """Why `text` is None (body too large, not UTF-8), or what was fetched."""


Outcome = Refused | TimedOut | Failed | Unhealthy | Answered

# Labels for the sidecar's own count of scrape outcomes.
OUTCOME_LABELS = ("ok", "bad_metrics", "refused", "timeout", "failed", "unhealthy")


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who the reports are about."""

    pod: str
    namespace: str | None
    model: str | None
    """The configured served-model name; None to take the engine's `model_name` label."""
    engine_url: str


class Sampler:
    """Holds the last good sample, the counters' windows and the current health.

    Fields (all private, read through `report`):
    - `_health`, `_reason`: what the latest answer said, or `unreachable` after enough misses;
    - `_ever_up`: /health has answered 200 at least once;
    - `_scrape`, `_scrape_seconds`, `_scrape_detail`: how the latest scrape went;
    - `_missed`: scrapes in a row without an answer;
    - `_sample`, `_sampled_at`: the last good sample and when it was taken;
    - `_checked_at`: when the latest outcome, of any kind, arrived;
    - one `rate.CounterWindow` per counter the report turns into a rate;
    - one `histogram.Window` per latency histogram the report turns into windowed quantiles;
    - `outcome_counts`: how many scrapes ended each way (for the sidecar's own metrics).
    """

    def __init__(
        self,
        identity: Identity,
        rate_window_seconds: float,
        throughput_window_seconds: float = settings.DEFAULT_THROUGHPUT_WINDOW,
        latency_window_seconds: float = settings.DEFAULT_LATENCY_WINDOW,
        *,
        unreachable_after: int = settings.DEFAULT_UNREACHABLE_AFTER,
        slow_after_seconds: float = settings.DEFAULT_POLL_INTERVAL,
    ) -> None:
        if unreachable_after < 1:
            raise ValueError(f"unreachable_after = {unreachable_after}, must be at least 1")
        self.identity = identity
        self._unreachable_after = unreachable_after
        self._slow_after = slow_after_seconds
        self._health = report.Health.STARTING
        self._reason = "no scrape of the engine yet"
        self._ever_up = False
        self._scrape: report.ScrapeStatus | None = None
        self._scrape_seconds: float | None = None
        self._scrape_detail: str | None = None
        self._missed = 0
        self._sample: vllm_metrics.EngineSample | None = None
        self._sampled_at: float | None = None
        self._checked_at: float | None = None
        self._preemptions = rate.CounterWindow(rate_window_seconds)
        self._prefix_queries = rate.CounterWindow(rate_window_seconds)
        self._prefix_hits = rate.CounterWindow(rate_window_seconds)
        self._offload_stores = rate.CounterWindow(rate_window_seconds)
        self._offload_loads = rate.CounterWindow(rate_window_seconds)
        self._prompt_tokens = rate.CounterWindow(throughput_window_seconds)
        self._generation_tokens = rate.CounterWindow(throughput_window_seconds)
        self._time_to_first_token = histogram.Window(latency_window_seconds)
        self._inter_token_latency = histogram.Window(latency_window_seconds)
        self._request_queue_time = histogram.Window(latency_window_seconds)
        self._time_per_output_token = histogram.Window(latency_window_seconds)
        self.outcome_counts = dict.fromkeys(OUTCOME_LABELS, 0)

    @property
    def health(self) -> report.Health:
        return self._health

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def missed(self) -> int:
        """Scrapes in a row without an answer, up to the latest."""
        return self._missed

    def observe(self, outcome: Outcome, now: float, took: float = 0.0) -> report.Health:
        """Take one scrape's outcome, which ended at `now` after `took` seconds; return health."""
        self._checked_at = now
        self._scrape_seconds = max(0.0, took)
        if isinstance(outcome, Refused | TimedOut | Failed):
            label = {Refused: "refused", TimedOut: "timeout", Failed: "failed"}[type(outcome)]
            self._miss(label, outcome.detail)
            return self._health
        # Any answer, even a bad one, shows the engine alive: the count of misses starts over.
        self._missed = 0
        slow = took > self._slow_after
        self._scrape = report.ScrapeStatus.SLOW if slow else report.ScrapeStatus.ON_TIME
        self._scrape_detail = (
            f"the engine answered after {took:.3g} s, more than the poll interval "
            f"{self._slow_after:g} s"
            if slow
            else None
        )
        match outcome:
            case Unhealthy(status=503, detail=detail):
                down = report.Health.UNREACHABLE if self._ever_up else report.Health.STARTING
                self._set("unhealthy", down, detail)
            case Unhealthy(detail=detail):
                self._set("unhealthy", report.Health.BAD_METRICS, detail)
            case Answered(status=status, text=text, detail=detail):
                self._ever_up = True
                if status != 200 or text is None:
                    self._set("bad_metrics", report.Health.BAD_METRICS, detail)
                else:
                    self._take(text, now)
        return self._health

    def _miss(self, label: str, detail: str) -> None:
        """A scrape without an answer: a dead engine only after enough of them in a row."""
        self.outcome_counts[label] += 1
        self._missed += 1
        self._scrape = report.ScrapeStatus.MISSED
        self._scrape_detail = detail
        if not self._ever_up:
            self._health, self._reason = report.Health.STARTING, detail
        elif self._missed >= self._unreachable_after:
            self._health = report.Health.UNREACHABLE
            scrapes = "scrape" if self._missed == 1 else "scrapes"
            self._reason = f"{detail} ({self._missed} {scrapes} in a row without an answer)"
        # Otherwise health and reason stay the latest answer's: one lost answer is no verdict.

    def _set(self, label: str, health: report.Health, reason: str) -> None:
        self.outcome_counts[label] += 1
        self._health = health
        self._reason = reason

    def _take(self, text: str, now: float) -> None:
        try:
            sample = vllm_metrics.parse(text)
        except vllm_metrics.BadMetricsError as problem:
            self._set("bad_metrics", report.Health.BAD_METRICS, problem.reason)
            return
        previous = self._sample
        restarted = (
            previous is not None
            and previous.process_start_time is not None
            and sample.process_start_time != previous.process_start_time
        )
        self._preemptions.observe(now, sample.num_preemptions, restarted=restarted)
        _observe_optional(self._prefix_queries, now, sample.prefix_cache_queries, restarted)
        _observe_optional(self._prefix_hits, now, sample.prefix_cache_hits, restarted)
        _observe_optional(self._offload_stores, now, sample.offload_store_bytes, restarted)
        _observe_optional(self._offload_loads, now, sample.offload_load_bytes, restarted)
        _observe_optional(self._prompt_tokens, now, sample.prompt_tokens, restarted)
        _observe_optional(self._generation_tokens, now, sample.generation_tokens, restarted)
        _observe_histogram(self._time_to_first_token, now, sample.time_to_first_token, restarted)
        _observe_histogram(self._inter_token_latency, now, sample.inter_token_latency, restarted)
        _observe_histogram(self._request_queue_time, now, sample.request_queue_time, restarted)
        tpot = sample.time_per_output_token
        _observe_histogram(self._time_per_output_token, now, tpot, restarted)
        self._sample = sample
        self._sampled_at = now
        self._set("ok", report.Health.OK, "")

    def report(self, now: float) -> report.OccupancyReport:
        """The report as of `now`: the current health and the last good sample, with its age."""
        identity = self.identity
        sample = self._sample
        if sample is None or self._sampled_at is None:
            return report.OccupancyReport(
                pod=identity.pod,
                namespace=identity.namespace,
                model=identity.model,
                engine_url=identity.engine_url,
                health=self._health,
                reason=self._reason,
                checked_at=self._checked_at,
                served_at=now,
                **self._scrape_fields(),
            )
        preemptions = self._preemptions.rate()
        prompt_tokens = self._prompt_tokens.rate()
        generation_tokens = self._generation_tokens.rate()
        token_window = prompt_tokens or generation_tokens
        return report.OccupancyReport(
            pod=identity.pod,
            namespace=identity.namespace,
            model=identity.model or sample.model_name,
            engine_url=identity.engine_url,
            health=self._health,
            reason=self._reason,
            sampled_at=self._sampled_at,
            checked_at=self._checked_at,
            served_at=now,
            **self._scrape_fields(),
            # The clock may have stepped back since the sample; an age is never negative.
            age_seconds=max(0.0, now - self._sampled_at),
            engine_started_at=sample.process_start_time,
            block_size=sample.block_size,
            num_gpu_blocks=sample.num_gpu_blocks,
            num_used_blocks=sample.num_used_blocks,
            usage_ratio=sample.kv_cache_usage,
            kv_capacity_tokens=sample.kv_capacity_tokens,
            num_requests_running=sample.num_requests_running,
            num_requests_waiting=sample.num_requests_waiting,
            preemptions_total=sample.num_preemptions,
            preemptions_per_second=_per_second(preemptions),
            prefix_caching_enabled=sample.prefix_caching_enabled,
            prefix_cache_hit_ratio=self._hit_ratio(),
            rate_window_seconds=None if preemptions is None else preemptions.window_seconds,
            offload_backend=sample.offload_backend,
            offload_capacity_bytes=sample.offload_capacity_bytes,
            offload_usage_ratio=sample.offload_usage,
            offload_store_bytes_per_second=_per_second(self._offload_stores.rate()),
            offload_load_bytes_per_second=_per_second(self._offload_loads.rate()),
            prompt_tokens_total=sample.prompt_tokens,
            generation_tokens_total=sample.generation_tokens,
            prompt_tokens_per_second=_per_second(prompt_tokens),
            generation_tokens_per_second=_per_second(generation_tokens),
            throughput_window_seconds=None if token_window is None else token_window.window_seconds,
            time_to_first_token=_latency(self._time_to_first_token),
            inter_token_latency=_latency(self._inter_token_latency),
            request_queue_time=_latency(self._request_queue_time),
            time_per_output_token=_latency(self._time_per_output_token),
        )

    def _scrape_fields(self) -> dict[str, Any]:
        if self._scrape is None:
            return {}
        return {
            "scrape_status": self._scrape,
            "scrape_seconds": self._scrape_seconds,
            "missed_scrapes": self._missed,
            "scrape_detail": self._scrape_detail,
        }

    def _hit_ratio(self) -> float | None:
        queries = self._prefix_queries.rate()
        hits = self._prefix_hits.rate()
        if queries is None or hits is None or queries.increase <= 0:
            return None
        ratio = hits.increase / queries.increase
        # More hits than lookups means the two counters disagree (a reset between them): unknown.
        return ratio if ratio <= 1.0 else None


def next_start(due: float, poll_interval: float, ended: float) -> float:
    """When the poll loop starts its next scrape: one interval after the last one was due, or
    at once when the last one ended later than that. Scrapes never overlap or pile up, so
    starts are at most max(poll_interval, the scrape's duration) apart."""
    return max(due + poll_interval, ended)


def _observe_optional(
    window: rate.CounterWindow, now: float, value: float | None, restarted: bool
) -> None:
    if value is None:
        window.clear()
    else:
        window.observe(now, value, restarted=restarted)


def _observe_histogram(
    window: histogram.Window, now: float, value: histogram.Histogram | None, restarted: bool
) -> None:
    if value is None:
        window.clear()
    else:
        window.observe(now, value, restarted=restarted)


def _latency(window: histogram.Window) -> report.LatencyWindow | None:
    change = window.change()
    return None if change is None else report.LatencyWindow.of(change)


def _per_second(found: rate.Rate | None) -> float | None:
    return None if found is None else found.per_second
