"""vLLM's metric names, and the parse of its /metrics text into an `EngineSample`. Pure.

This is the one place kvscale spells vLLM's metric names. vLLM has renamed metrics before
(`vllm:gpu_cache_usage_perc` became `vllm:kv_cache_usage_perc`), so a required metric that is
absent is never read as zero: `parse` raises `BadMetricsError` naming it, and says so when the
engine exposes an old name instead.

The text is parsed by prometheus_client's exposition parser. vLLM's /metrics is about 600 lines
(mostly latency histograms); parsing all of it costs about 8 ms of CPU, parsing the dozen lines
kvscale reads about 1 ms without the three latency histograms and about 3 ms with them (measured
on the loaded capture in tests/data), which keeps a 250 ms poll near 1% of a core. So `parse` first
keeps only the lines of the metrics it reads (HELP/TYPE comments and samples, chosen by the
metric name that starts the line) and hands those to the parser. The values, labels and escapes
of every line kvscale uses are still parsed and checked by the real parser; lines of metrics it
does not read are not validated at all.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import parser
from prometheus_client import samples as prom_samples

from kvscale import histogram

# Required: without each of these there is no occupancy report.
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
CACHE_CONFIG_INFO = "vllm:cache_config_info"
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
NUM_PREEMPTIONS = "vllm:num_preemptions_total"
REQUIRED = (KV_CACHE_USAGE, CACHE_CONFIG_INFO, NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING,
            NUM_PREEMPTIONS)  # fmt: skip

# Labels of vllm:cache_config_info that kvscale reads.
BLOCK_SIZE_LABEL = "block_size"
NUM_GPU_BLOCKS_LABEL = "num_gpu_blocks"
PREFIX_CACHING_LABEL = "enable_prefix_caching"
OFFLOAD_SIZE_LABEL = "kv_offloading_size"  # GiB, or "None" when offloading is off
OFFLOAD_BACKEND_LABEL = "kv_offloading_backend"

# Optional: reported when present, None when not.
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"  # tokens
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"  # tokens
OFFLOAD_CPU_USAGE = "vllm:kv_offload_cpu_cache_usage_perc"
OFFLOAD_STORE_BYTES = "vllm:kv_offload_store_bytes_total"
OFFLOAD_LOAD_BYTES = "vllm:kv_offload_load_bytes_total"
# Token throughput. Optional because a vLLM without them still reports occupancy; an engine
# that exports neither leaves the autoscaler's throughput signal unknown, not zero.
PROMPT_TOKENS = "vllm:prompt_tokens_total"  # prompt tokens prefilled, cached ones included
GENERATION_TOKENS = "vllm:generation_tokens_total"  # tokens generated
# prometheus_client's process collector in the API server: a new value means a new process.
PROCESS_START_TIME = "process_start_time_seconds"
OPTIONAL = (PREFIX_CACHE_QUERIES, PREFIX_CACHE_HITS, OFFLOAD_CPU_USAGE, OFFLOAD_STORE_BYTES,
            OFFLOAD_LOAD_BYTES, PROMPT_TOKENS, GENERATION_TOKENS, PROCESS_START_TIME)  # fmt: skip

# Latency histograms (vllm/v1/metrics/loggers.py in vLLM 0.32). Optional: an engine without them
# still reports occupancy, and its latency is unknown, never zero. But one exposed under an old
# name fails the parse (see RENAMED), so a rename cannot silently turn the SLO signal off.
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"  # observed at each first token
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"  # observed at each later token
# Observed when a request finishes: its decode time over its output tokens after the first
# (what users call TPOT, a request's mean inter-token latency).
TIME_PER_OUTPUT_TOKEN = "vllm:request_time_per_output_token_seconds"
# Observed when a request finishes: from queued to first scheduled (preemptions not counted).
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"
HISTOGRAMS = (TIME_TO_FIRST_TOKEN, INTER_TOKEN_LATENCY, TIME_PER_OUTPUT_TOKEN, REQUEST_QUEUE_TIME)
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
_LE_LABEL = "le"

# Old names vLLM used for what kvscale reads today: old name -> current name.
RENAMED = {
    "vllm:gpu_cache_usage_perc": KV_CACHE_USAGE,
    "vllm:gpu_prefix_cache_queries_total": PREFIX_CACHE_QUERIES,
    "vllm:gpu_prefix_cache_hits_total": PREFIX_CACHE_HITS,
    # vLLM 0.11 renamed the per-token histogram; 0.32 has only the new name.
    "vllm:time_per_output_token_seconds": INTER_TOKEN_LATENCY,
}

_WANTED = frozenset(REQUIRED + OPTIONAL + HISTOGRAMS)
# Sample names: a histogram's samples carry suffixes its HELP/TYPE lines do not.
_WANTED_SAMPLES = _WANTED | {name + suffix for name in HISTOGRAMS for suffix in _HISTOGRAM_SUFFIXES}
# The label that tells data-parallel engines apart within one server.
_ENGINE_LABEL = "engine"
_MODEL_LABEL = "model_name"
_GIB = 1 << 30


class BadMetricsError(ValueError):
    """The exposition text does not yield a sample: unparseable, or a metric missing or wrong.

    `metric` names the metric at fault, or is None when the text as a whole is at fault.
    """

    def __init__(self, reason: str, metric: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metric = metric


@dataclasses.dataclass(frozen=True)
class EngineSample:
    """What one scrape of a vLLM engine's /metrics says, in kvscale's terms."""

    model_name: str | None
    """The `model_name` label vLLM puts on its metrics (the served model name)."""
    block_size: int
    """Tokens per KV block."""
    num_gpu_blocks: int
    """Blocks in the pool, the one reserved null block included."""
    kv_cache_usage: float
    """0..1; vLLM computes it as 1 - free / (num_gpu_blocks - 1)."""
    num_requests_running: int
    num_requests_waiting: int
    num_preemptions: int
    """The engine's cumulative preemption counter; restarts at 0 with the engine."""
    prefix_caching_enabled: bool | None
    prefix_cache_queries: float | None
    """Cumulative prompt tokens looked up in the prefix cache."""
    prefix_cache_hits: float | None
    """Cumulative prompt tokens found there."""
    process_start_time: float | None
    """Unix start time of the engine's API server process."""
    offload_backend: str | None
    offload_capacity_bytes: int | None
    offload_usage: float | None
    offload_store_bytes: float | None
    """Cumulative bytes offloaded from the KV cache to CPU memory."""
    offload_load_bytes: float | None
    """Cumulative bytes loaded back."""
    prompt_tokens: int | None
    """Cumulative prompt tokens the engine processed; restarts at 0 with the engine."""
    generation_tokens: int | None
    """Cumulative tokens the engine generated; restarts at 0 with the engine."""
    time_to_first_token: histogram.Histogram | None = None
    """Cumulative TTFT histogram (seconds) since the engine started; None if not exported."""
    inter_token_latency: histogram.Histogram | None = None
    """Cumulative inter-token latency histogram (seconds); None if not exported."""
    request_queue_time: histogram.Histogram | None = None
    """Cumulative queue time histogram (seconds) of finished requests; None if not exported."""
    time_per_output_token: histogram.Histogram | None = None
    """Cumulative histogram of finished requests' time per output token (seconds)."""

    @property
    def num_used_blocks(self) -> int:
        """Used blocks: vLLM's usage times the usable blocks (the null block is never used)."""
        return round(self.kv_cache_usage * (self.num_gpu_blocks - 1))

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the usable blocks hold."""
        return (self.num_gpu_blocks - 1) * self.block_size


def parse(text: str) -> EngineSample:
    """Read an `EngineSample` from exposition text; raise `BadMetricsError` on anything else."""
    if not text.strip():
        raise BadMetricsError("the engine's /metrics is empty")
    selected = _select(text)
    try:
        families = list(parser.text_string_to_metric_families(selected))
    except Exception as error:  # the parser raises assorted types
        raise BadMetricsError(_unparseable(selected, error)) from None
    by_name: dict[str, list[prom_samples.Sample]] = {}
    for family in families:
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append(sample)
    for name in REQUIRED:
        if not by_name.get(name):
            raise BadMetricsError(_missing(name, text), metric=name)
    _one_engine(by_name)

    config = _one(by_name, CACHE_CONFIG_INFO)
    usage = _one(by_name, KV_CACHE_USAGE)
    block_size = _int_label(config, BLOCK_SIZE_LABEL, minimum=1)
    num_gpu_blocks = _int_label(config, NUM_GPU_BLOCKS_LABEL, minimum=2)
    kv_cache_usage = _finite(usage)
    if not 0.0 <= kv_cache_usage <= 1.0:
        raise BadMetricsError(f"{KV_CACHE_USAGE}: {kv_cache_usage} is outside 0..1", KV_CACHE_USAGE)
    offload_size = _optional_float_label(config, OFFLOAD_SIZE_LABEL)
    offload_on = offload_size is not None and offload_size > 0
    offload_usage = _optional_max(by_name, OFFLOAD_CPU_USAGE)
    if offload_usage is not None and not 0.0 <= offload_usage <= 1.0:
        raise BadMetricsError(
            f"{OFFLOAD_CPU_USAGE}: {offload_usage} is outside 0..1", OFFLOAD_CPU_USAGE
        )
    return EngineSample(
        model_name=usage.labels.get(_MODEL_LABEL),
        block_size=block_size,
        num_gpu_blocks=num_gpu_blocks,
        kv_cache_usage=kv_cache_usage,
        num_requests_running=_count(_one(by_name, NUM_REQUESTS_RUNNING)),
        num_requests_waiting=_count(_one(by_name, NUM_REQUESTS_WAITING)),
        num_preemptions=_count(_one(by_name, NUM_PREEMPTIONS)),
        prefix_caching_enabled=_optional_bool_label(config, PREFIX_CACHING_LABEL),
        prefix_cache_queries=_optional_sum(by_name, PREFIX_CACHE_QUERIES),
        prefix_cache_hits=_optional_sum(by_name, PREFIX_CACHE_HITS),
        process_start_time=_optional_max(by_name, PROCESS_START_TIME),
        offload_backend=config.labels.get(OFFLOAD_BACKEND_LABEL) if offload_on else None,
        offload_capacity_bytes=round(offload_size * _GIB) if offload_size else None,
        offload_usage=offload_usage,
        offload_store_bytes=_optional_sum(by_name, OFFLOAD_STORE_BYTES),
        offload_load_bytes=_optional_sum(by_name, OFFLOAD_LOAD_BYTES),
        prompt_tokens=_optional_count(by_name, PROMPT_TOKENS),
        generation_tokens=_optional_count(by_name, GENERATION_TOKENS),
        time_to_first_token=_optional_histogram(by_name, TIME_TO_FIRST_TOKEN, text),
        inter_token_latency=_optional_histogram(by_name, INTER_TOKEN_LATENCY, text),
        request_queue_time=_optional_histogram(by_name, REQUEST_QUEUE_TIME, text),
        time_per_output_token=_optional_histogram(by_name, TIME_PER_OUTPUT_TOKEN, text),
    )


def _select(text: str) -> str:
    """Keep the HELP/TYPE comments and samples of the metrics kvscale reads, drop the rest."""
    kept = []
    for raw in text.split("\n"):
        line = raw.strip()
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in _WANTED:
                kept.append(line)
        elif _sample_name(line) in _WANTED_SAMPLES:
            kept.append(line)
    kept.append("")
    return "\n".join(kept)


def _sample_name(line: str) -> str:
    """The metric name a sample line starts with (text up to `{` or whitespace)."""
    head = line.split("{", 1)[0].split(None, 1)
    return head[0] if head else ""


def _names_in(text: str) -> tuple[set[str], set[str]]:
    """The metric names the text declares (HELP/TYPE) and the names its samples carry."""
    declared, sampled = set(), set()
    for raw in text.split("\n"):
        line = raw.strip()
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                declared.add(parts[2])
        elif line:
            sampled.add(_sample_name(line))
    return declared, sampled


def _missing(name: str, text: str) -> str:
    """Say that `name` is missing, and what the text has instead when that helps."""
    declared, sampled = _names_in(text)
    for old, new in RENAMED.items():
        if new == name and old in sampled:
            return (
                f"{name}: missing from the engine's /metrics, which has {old} instead "
                f"(the name vLLM used before renaming it to {name}); kvscale reads only the "
                "current name: run a vLLM that exposes it"
            )
    if name in declared:
        return f"{name}: declared in the engine's /metrics but has no samples"
    vllm_names = sorted(n for n in sampled if n.startswith("vllm:"))
    if not vllm_names:
        first = next((line.strip() for line in text.split("\n") if line.strip()), "")
        shown = first if len(first) <= 80 else first[:80] + "..."
        return (
            f"{name}: missing, and the engine's /metrics has no vllm:* sample at all "
            f"(it begins {shown!r})"
        )
    # Names kvscale reads under their own meaning are never offered as the renamed one.
    unknown = [n for n in vllm_names if n not in _WANTED]
    close = difflib.get_close_matches(name, unknown, n=3, cutoff=0.7)
    hint = f" (renamed? similar names present: {', '.join(close)})" if close else ""
    return f"{name}: missing from the engine's /metrics{hint}"


def _unparseable(selected: str, error: Exception) -> str:
    """Name the first line the parser refuses on its own, for a message a person can act on."""
    for line in selected.split("\n"):
        if not line or line.startswith("#"):
            continue
        try:
            list(parser.text_string_to_metric_families(line + "\n"))
        except Exception:  # same parser, same assorted errors
            shown = line if len(line) <= 160 else line[:160] + "..."
            return f"unparseable /metrics line: {shown!r}"
    return f"unparseable /metrics: {type(error).__name__}: {error}"[:300]


def _one_engine(by_name: Mapping[str, Sequence[prom_samples.Sample]]) -> None:
    engines = {
        sample.labels[_ENGINE_LABEL]
        for name in REQUIRED
        for sample in by_name[name]
        if _ENGINE_LABEL in sample.labels
    }
    if len(engines) > 1:
        raise BadMetricsError(
            f"the engine reports {len(engines)} data-parallel engines "
            f"(engine labels {', '.join(sorted(engines))}); kvscale reads one engine per pod"
        )


def _one(by_name: Mapping[str, Sequence[prom_samples.Sample]], name: str) -> prom_samples.Sample:
    found = by_name[name]
    if len(found) != 1:
        labels = "; ".join(_labels_text(s.labels) for s in found[:3])
        raise BadMetricsError(f"{name}: {len(found)} series ({labels}), expected one", name)
    return found[0]


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={v!r}" for k, v in sorted(labels.items())) + "}"


def _finite(sample: prom_samples.Sample) -> float:
    value = float(sample.value)
    if not math.isfinite(value):
        raise BadMetricsError(f"{sample.name}: value {value} is not a finite number", sample.name)
    return value


def _count(sample: prom_samples.Sample) -> int:
    value = _finite(sample)
    if value < 0 or not value.is_integer():
        raise BadMetricsError(f"{sample.name}: {value} is not a whole number >= 0", sample.name)
    return int(value)


def _int_label(sample: prom_samples.Sample, label: str, *, minimum: int) -> int:
    raw = sample.labels.get(label)
    if raw is None:
        raise BadMetricsError(f"{sample.name}: label {label} missing", f"{sample.name}{{{label}}}")
    try:
        value = int(raw)
    except ValueError:
        raise BadMetricsError(
            f"{sample.name}: label {label}={raw!r} is not an integer", f"{sample.name}{{{label}}}"
        ) from None
    if value < minimum:
        raise BadMetricsError(
            f"{sample.name}: label {label}={value} is below {minimum}", f"{sample.name}{{{label}}}"
        )
    return value


def _optional_float_label(sample: prom_samples.Sample, label: str) -> float | None:
    raw = sample.labels.get(label)
    if raw is None or raw == "None":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadMetricsError(
            f"{sample.name}: label {label}={raw!r} is not a number", f"{sample.name}{{{label}}}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise BadMetricsError(
            f"{sample.name}: label {label}={raw!r} is not a size >= 0", f"{sample.name}{{{label}}}"
        )
    return value


def _optional_bool_label(sample: prom_samples.Sample, label: str) -> bool | None:
    # vLLM writes Python's str() of the config field.
    return {"True": True, "False": False}.get(sample.labels.get(label, ""))


def _optional_values(
    by_name: Mapping[str, Sequence[prom_samples.Sample]], name: str
) -> Iterable[float] | None:
    found = by_name.get(name)
    if not found:
        return None
    values = [float(s.value) for s in found]
    for value in values:
        if not math.isfinite(value) or value < 0:
            raise BadMetricsError(f"{name}: value {value} is not a finite number >= 0", name)
    return values


def _optional_sum(by_name: Mapping[str, Sequence[prom_samples.Sample]], name: str) -> float | None:
    values = _optional_values(by_name, name)
    return None if values is None else sum(values)


def _optional_count(by_name: Mapping[str, Sequence[prom_samples.Sample]], name: str) -> int | None:
    total = _optional_sum(by_name, name)
    if total is None:
        return None
    if not total.is_integer():
        raise BadMetricsError(f"{name}: {total} is not a whole number >= 0", name)
    return int(total)


def _optional_histogram(
    by_name: Mapping[str, Sequence[prom_samples.Sample]], name: str, text: str
) -> histogram.Histogram | None:
    """The histogram `name` from its `_bucket`, `_count` and `_sum` samples; None if absent.

    Absent under its name but present under an old one is a rename: that fails loudly, as a
    missing required metric does, rather than leaving the latency signal off unnoticed.
    """
    buckets = by_name.get(name + "_bucket")
    if not buckets:
        declared, sampled = _names_in(text)
        for old, new in RENAMED.items():
            if new == name and (old in declared or old + "_bucket" in sampled):
                raise BadMetricsError(
                    f"{name}: missing from the engine's /metrics, which has {old} instead "
                    f"(the name vLLM used before renaming it to {name}); kvscale reads only "
                    "the current name: run a vLLM that exposes it",
                    name,
                )
        return None
    series = {_labels_text({k: v for k, v in b.labels.items() if k != _LE_LABEL}) for b in buckets}
    if len(series) != 1:
        raise BadMetricsError(
            f"{name}: {len(series)} series ({'; '.join(sorted(series)[:3])}), expected one", name
        )
    bounds: list[tuple[float, float]] = []
    infinite: float | None = None
    for bucket in buckets:
        raw = bucket.labels.get(_LE_LABEL)
        try:
            bound = float(raw) if raw is not None else math.nan
        except ValueError:
            bound = math.nan
        if math.isnan(bound):
            raise BadMetricsError(f"{name}_bucket: le={raw!r} is not a bucket bound", name)
        count = float(bucket.value)
        if bound == math.inf:
            infinite = count
        else:
            bounds.append((bound, count))
    if infinite is None:
        raise BadMetricsError(f'{name}_bucket: no le="+Inf" bucket', name)
    bounds.sort()
    total = _optional_sum(by_name, name + "_sum")
    try:
        return histogram.Histogram(
            tuple(b for b, _ in bounds),
            tuple(c for _, c in bounds),
            infinite,
            0.0 if total is None else total,
        )
    except ValueError as error:
        raise BadMetricsError(f"{name}: {error}", name) from None


def _optional_max(by_name: Mapping[str, Sequence[prom_samples.Sample]], name: str) -> float | None:
    values = _optional_values(by_name, name)
    return None if values is None else max(values)
