"""The occupancy report: the one contract between an engine sidecar and the operator. Pure.

A sidecar next to each vLLM engine serves one `OccupancyReport` as JSON at `GET /v1/occupancy`;
the operator fetches it and feeds it to its scaling decision. This module is the only place the
report's shape is defined: the sidecar builds it with `OccupancyReport(...)` and writes it with
`to_json()`, the operator reads it with `from_json()`.

Versioning. Every document carries `schema_version`, `"kvscale.dev/occupancy/v1"` today. Within a
major version fields may only be added, and only as optional ones, so an older reader ignores
fields it does not know (a sidecar and an operator of different releases meet during a rolling
upgrade). Removing a field or changing its meaning or unit makes a new major version, and a reader
refuses a major version it does not know with `ReportError` rather than guess.

Honesty rules the model enforces, so a consumer cannot mistake "no data" for "idle":
- the engine numbers describe the last good sample, taken at `sampled_at`; when there has never
  been one, they are all None together with `sampled_at` (never zeros);
- `health` describes the latest scrape attempt (`checked_at`); when it is not `ok` the numbers are
  the last good ones, growing older (`age_seconds`), and `reason` says what went wrong;
- a report with `health == ok` always carries every required number;
- a scrape that does not answer is not at once a dead engine: `health` turns `unreachable` only
  after the sidecar's grace of missed scrapes in a row, and until then stays what the latest
  answer said while `scrape_status` is `missed`, `missed_scrapes` counts them and `age_seconds`
  grows, so the reader's own staleness rule decides whether the last numbers are still usable.

Units: times are unix seconds (floats), sizes are blocks, tokens or bytes as named, rates are per
second, ratios are 0..1.
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from kvscale import histogram, problem

SCHEMA_GROUP = "kvscale.dev/occupancy"
MAJOR_VERSION = "v1"
SCHEMA_VERSION = f"{SCHEMA_GROUP}/{MAJOR_VERSION}"
PATH = "/v1/occupancy"
"""Where a sidecar serves its report (the operator, `kvscale status` and loadgen ask here)."""


class ReportError(ValueError):
    """A document that is not a valid occupancy report this reader understands."""


class Health(enum.StrEnum):
    """The engine's state as the sidecar last saw it."""

    OK = "ok"
    """The engine answered /health with 200 and /metrics with every required metric."""
    STARTING = "starting"
    """The engine has not been up yet: nothing listens, or /health answers 503."""
    UNREACHABLE = "unreachable"
    """The engine was up before and now does not answer (refused, timed out, 503)."""
    BAD_METRICS = "bad_metrics"
    """The engine answers, but its /metrics is unparseable or lacks a required metric."""


class ScrapeStatus(enum.StrEnum):
    """How the sidecar's latest scrape of the engine went, apart from what it said (added in v1).

    A slow engine and a dead one look alike for one scrape; this says which way the latest one
    went, while `health` waits for the sidecar's grace of missed scrapes before saying
    `unreachable`.
    """

    ON_TIME = "on_time"
    """The engine answered within the sidecar's poll interval."""
    SLOW = "slow"
    """The engine answered, but after the poll interval (within the scrape deadline)."""
    MISSED = "missed"
    """No answer: refused, broken, or not within the scrape deadline."""


_Count = Annotated[int, Field(ge=0)]
_Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
_Seconds = Annotated[float, Field(ge=0.0)]
_Rate = Annotated[float, Field(ge=0.0)]


class LatencyWindow(BaseModel):
    """One engine latency histogram's change over the sidecar's latency window (added in v1).

    The quantiles are Prometheus' `histogram_quantile` of the window's bucket increases; the
    buckets themselves are carried too, so a reader can take another percentile or merge pods
    (`as_histogram`, then `histogram.merge`: a fleet's p90 is the p90 of its summed buckets,
    not an average of pods' p90s). A quantile past the highest finite bound reads as that
    bound ("at least").
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    window_seconds: Annotated[float, Field(gt=0.0)] = Field(
        description="The span of the two snapshots the increase is taken between."
    )
    count: _Count = Field(description="Observations in the window.")
    sum_seconds: _Seconds = Field(description="Sum of the observations in the window.")
    p50: _Seconds | None = Field(default=None, description="Median; None when count is 0.")
    p90: _Seconds | None = Field(default=None, description="90th percentile; None when count is 0.")
    p99: _Seconds | None = Field(default=None, description="99th percentile; None when count is 0.")
    bucket_bounds: list[float] = Field(
        description="The engine's finite bucket upper bounds (le), seconds, strictly increasing."
    )
    bucket_counts: list[_Count] = Field(
        description="Observations in the window <= each bound (cumulative, like le buckets)."
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> LatencyWindow:
        try:
            self.as_histogram()
        except ValueError as error:
            raise ValueError(f"bucket_bounds, bucket_counts, count: {error}") from None
        if self.count == 0 and any(q is not None for q in (self.p50, self.p90, self.p99)):
            raise ValueError("p50, p90, p99: set, but count is 0")
        return self

    def as_histogram(self) -> histogram.Histogram:
        """The window's increase as a histogram, for `histogram.quantile` and `merge`."""
        return histogram.Histogram(
            tuple(self.bucket_bounds),
            tuple(float(c) for c in self.bucket_counts),
            float(self.count),
            self.sum_seconds,
        )

    @classmethod
    def of(cls, change: histogram.Change) -> LatencyWindow:
        """The report's form of a histogram window's change."""
        increase = change.histogram
        return cls(
            window_seconds=change.window_seconds,
            count=round(increase.count),
            sum_seconds=increase.total,
            p50=histogram.quantile(0.5, increase),
            p90=histogram.quantile(0.9, increase),
            p99=histogram.quantile(0.99, increase),
            bucket_bounds=list(increase.bounds),
            bucket_counts=[round(c) for c in increase.cumulative],
        )


# The numbers a good sample always has; all of them are None together when there is none.
REQUIRED_SAMPLE_FIELDS = (
    "block_size",
    "num_gpu_blocks",
    "num_used_blocks",
    "usage_ratio",
    "kv_capacity_tokens",
    "num_requests_running",
    "num_requests_waiting",
    "preemptions_total",
)


class OccupancyReport(BaseModel):
    """One engine's KV-cache occupancy and health, as served by its sidecar."""

    model_config = ConfigDict(
        frozen=True,
        # Fields added later within v1 are optional; an older reader skips them.
        extra="ignore",
        allow_inf_nan=False,
        use_enum_values=False,
    )

    schema_version: str = Field(
        default=SCHEMA_VERSION, description="`kvscale.dev/occupancy/<major>`; v1 today."
    )

    # Identity.
    pod: Annotated[str, Field(min_length=1)] = Field(description="The engine pod's name.")
    namespace: str | None = Field(default=None, description="The engine pod's namespace.")
    model: str | None = Field(
        default=None, description="Served model name (configured, else the engine's label)."
    )
    engine_url: str | None = Field(default=None, description="Base URL the sidecar scrapes.")

    # State and time.
    health: Health
    reason: str = Field(default="", description="Why health is not ok; empty when it is.")
    sampled_at: float | None = Field(
        default=None, description="When the last good sample was taken; None if never."
    )
    checked_at: float | None = Field(
        default=None, description="When the latest scrape attempt ended, whatever its outcome."
    )
    served_at: float = Field(description="When this report was produced.")
    age_seconds: _Seconds | None = Field(
        default=None, description="served_at - sampled_at; None if there is no sample."
    )
    engine_started_at: float | None = Field(
        default=None, description="The engine process's start time, when it exposes one."
    )

    # The latest scrape (added within v1, so optional): None before the first scrape, and from
    # sidecars older than these fields.
    scrape_status: ScrapeStatus | None = Field(
        default=None,
        description="How the latest scrape went: on_time, slow (answered after the poll "
        "interval) or missed (no answer); health says unreachable only after missed_scrapes "
        "reaches the sidecar's grace.",
    )
    scrape_seconds: _Seconds | None = Field(
        default=None, description="How long the latest scrape (/health then /metrics) took."
    )
    missed_scrapes: _Count | None = Field(
        default=None,
        description="Scrapes in a row without an answer, up to the latest; 0 once one answers.",
    )
    scrape_detail: str | None = Field(
        default=None,
        description="What the latest scrape said when it was slow or missed; None when on time.",
    )

    # KV cache, from the last good sample.
    block_size: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Tokens per KV block."
    )
    num_gpu_blocks: Annotated[int, Field(gt=1)] | None = Field(
        default=None,
        description="KV blocks in the engine's pool, the reserved null block included.",
    )
    num_used_blocks: _Count | None = Field(
        default=None, description="round(usage_ratio * (num_gpu_blocks - 1))."
    )
    usage_ratio: _Ratio | None = Field(
        default=None, description="vLLM's kv_cache_usage_perc: used / (num_gpu_blocks - 1)."
    )
    kv_capacity_tokens: _Count | None = Field(
        default=None, description="Usable KV capacity: (num_gpu_blocks - 1) * block_size."
    )

    # Requests and pressure.
    num_requests_running: _Count | None = None
    num_requests_waiting: _Count | None = None
    preemptions_total: _Count | None = Field(
        default=None,
        description="The engine's preemption counter as last seen (resets on restart).",
    )
    preemptions_per_second: _Rate | None = Field(
        default=None, description="Over rate_window_seconds; None until two samples exist."
    )
    prefix_caching_enabled: bool | None = None
    prefix_cache_hit_ratio: _Ratio | None = Field(
        default=None, description="Hit tokens / queried tokens over the window; None if no queries."
    )
    rate_window_seconds: _Seconds | None = Field(
        default=None, description="The span of samples the rates were computed over."
    )

    # Token throughput (added within v1, so optional): None where the engine exports no counter.
    prompt_tokens_total: _Count | None = Field(
        default=None,
        description="The engine's prompt-token counter as last seen (cached prompt tokens "
        "included; resets on restart); None when the engine does not export it.",
    )
    generation_tokens_total: _Count | None = Field(
        default=None,
        description="The engine's generated-token counter as last seen (resets on restart); "
        "None when the engine does not export it.",
    )
    prompt_tokens_per_second: _Rate | None = Field(
        default=None,
        description="Prompt tokens processed per second over throughput_window_seconds; None "
        "until two samples exist or when the engine does not export the counter.",
    )
    generation_tokens_per_second: _Rate | None = Field(
        default=None,
        description="Tokens generated per second over throughput_window_seconds; None until "
        "two samples exist or when the engine does not export the counter.",
    )
    throughput_window_seconds: _Seconds | None = Field(
        default=None,
        description="The span of samples the token rates were computed over (a longer window "
        "than rate_window_seconds: throughput is a load level, not an alarm).",
    )

    # Latency from the engine's histograms (added within v1, so optional): None where the
    # engine exports no such histogram or the window has fewer than two snapshots yet.
    time_to_first_token: LatencyWindow | None = Field(
        default=None,
        description="vllm:time_to_first_token_seconds over the latency window (seconds).",
    )
    inter_token_latency: LatencyWindow | None = Field(
        default=None,
        description="vllm:inter_token_latency_seconds over the latency window (seconds).",
    )
    request_queue_time: LatencyWindow | None = Field(
        default=None,
        description="vllm:request_queue_time_seconds over the latency window (seconds): queued "
        "to first scheduled, observed when a request finishes.",
    )
    time_per_output_token: LatencyWindow | None = Field(
        default=None,
        description="vllm:request_time_per_output_token_seconds over the latency window "
        "(seconds): each finished request's decode time over its output tokens after the first.",
    )

    # KV offloading to CPU memory (vLLM V1's form of swap); None where the engine exposes none.
    offload_backend: str | None = None
    offload_capacity_bytes: _Count | None = None
    offload_usage_ratio: _Ratio | None = None
    offload_store_bytes_per_second: _Rate | None = None
    offload_load_bytes_per_second: _Rate | None = None

    @pydantic.field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        check_schema_version(value)
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> OccupancyReport:
        present = [getattr(self, name) is not None for name in REQUIRED_SAMPLE_FIELDS]
        if self.sampled_at is None and any(present):
            raise ValueError("sampled_at: None, but the report carries sample numbers")
        if self.sampled_at is not None and not all(present):
            missing = [n for n, p in zip(REQUIRED_SAMPLE_FIELDS, present, strict=True) if not p]
            raise ValueError(f"{', '.join(missing)}: None, but sampled_at is set")
        if self.health is Health.OK and self.sampled_at is None:
            raise ValueError("health: ok needs a sample, but sampled_at is None")
        if self.health is not Health.OK and not self.reason:
            raise ValueError(f"reason: empty, but health is {self.health.value}")
        if self.scrape_status is not None and self.missed_scrapes is not None:
            missed = self.scrape_status is ScrapeStatus.MISSED
            if missed != (self.missed_scrapes > 0):
                raise ValueError(
                    f"missed_scrapes: {self.missed_scrapes}, but scrape_status is "
                    f"{self.scrape_status.value}"
                )
        if (
            self.num_used_blocks is not None
            and self.num_gpu_blocks is not None
            and self.num_used_blocks > self.num_gpu_blocks - 1
        ):
            raise ValueError(
                f"num_used_blocks: {self.num_used_blocks} exceeds the usable blocks "
                f"{self.num_gpu_blocks - 1} (num_gpu_blocks - 1)"
            )
        return self

    def to_json(self) -> str:
        """The report as one JSON object, every field present (None as null)."""
        return self.model_dump_json()


def check_schema_version(value: object) -> None:
    """Raise `ReportError` unless `value` names this module's group and a major it knows."""
    if not isinstance(value, str):
        raise ReportError(f"schema_version: expected a string, got {type(value).__name__}")
    group, _, major = value.rpartition("/")
    if group != SCHEMA_GROUP:
        raise ReportError(f"schema_version: {value!r} is not a {SCHEMA_GROUP}/<major> version")
    if major != MAJOR_VERSION:
        raise ReportError(
            f"schema_version: unsupported major version {major!r} "
            f"(this reader understands {SCHEMA_VERSION})"
        )


def from_json(data: str | bytes) -> OccupancyReport:
    """Parse and validate a report; `ReportError` names the offending field on any problem."""
    try:
        document: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ReportError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ReportError(f"expected a JSON object, got {type(document).__name__}")
    if "schema_version" not in document:
        raise ReportError("schema_version: missing")
    check_schema_version(document["schema_version"])
    try:
        # Strict JSON validation: "5" is not a count and 5.0 is not an integer on this wire.
        return OccupancyReport.model_validate_json(data, strict=True)
    except pydantic.ValidationError as error:
        raise ReportError(problem.describe(error, whole="report")) from None
