"""The twin's `vllm:*` metrics as Prometheus metric families, named and labelled as vLLM 0.32
names and labels them. Pure: families are built from values passed in.

Names, help texts, label names and histogram buckets are copied from a real vLLM 0.32 CPU
engine's /metrics (tests/data/vllm_metrics_idle.txt) and from vLLM's `v1/metrics/buckets.py`;
a unit test compares this module's output with that sample. Only what the twin models is
exported: the scheduler gauges, the KV-cache gauge and config, preemptions, prefix-cache and
token counters, finished requests, the latency and size histograms fed by step results, and
the phase times of finished requests (queue, inference, prefill, decode) as vLLM defines them
(vllm/v1/metrics/stats.py, `update_from_finished_request`). Metrics vLLM has but the twin does
not model (iteration tokens, multimodal and external caches, FLOP estimates) are left out
rather than faked.

With swap (`--kv-offloading-size`), the bytes swapped out and back in are
`vllm:kv_offload_store_bytes_total` / `vllm:kv_offload_load_bytes_total`, as vLLM's offloading
connector counts them; the CPU pool's occupancy, which vLLM does not export as such, is a
twin-only gauge (`kvscale_twin_cpu_kv_blocks_used`, next to its capacity and the swapped
requests), kept out of the `vllm:` namespace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from prometheus_client import metrics_core
from prometheus_client import samples as prom_samples

from kvscale import histogram
from kvscale.twin import buckets, engine

ENGINE_INDEX = "0"
LABEL_NAMES = ("engine", "model_name")

# vLLM 0.32's bucket bounds (kvscale.twin.buckets: the simulator's sidecar reports use them too).
REQUEST_LATENCY_BUCKETS = buckets.REQUEST_LATENCY
TIME_TO_FIRST_TOKEN_BUCKETS = buckets.TIME_TO_FIRST_TOKEN
INTER_TOKEN_LATENCY_BUCKETS = buckets.INTER_TOKEN_LATENCY
REQUEST_NUM_PREEMPTIONS_BUCKETS = buckets.REQUEST_NUM_PREEMPTIONS

# vllm:request_success_total's finished_reason values, in vLLM's order.
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")

_HELP = {
    "running": "Number of requests in model execution batches.",
    "waiting": "Number of requests waiting to be processed.",
    "waiting_by_reason": (
        "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
        "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV "
        "transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting."
    ),
    "usage": "KV-cache usage. 1 means 100 percent usage.",
    "prefix_queries": "Prefix cache queries, in terms of number of queried tokens.",
    "prefix_hits": "Prefix cache hits, in terms of number of cached tokens.",
    "preemptions": "Cumulative number of preemption from the engine.",
    "prompt_tokens": "Number of prefill tokens processed.",
    "generation_tokens": "Number of generation tokens processed.",
    "success": "Count of successfully processed requests.",
    "request_prompt_tokens": "Number of prefill tokens processed.",
    "request_generation_tokens": "Number of generation tokens processed.",
    "max_num_generation_tokens": "Histogram of maximum number of requested generation tokens.",
    "params_max_tokens": "Histogram of the max_tokens request parameter.",
    "ttft": "Histogram of time to first token in seconds.",
    "itl": "Histogram of inter-token latency in seconds.",
    "tpot": "Histogram of time_per_output_token_seconds per request.",
    "e2e": "Histogram of e2e request latency in seconds.",
    "queue": "Histogram of time spent in WAITING phase for request.",
    "inference": "Histogram of time spent in RUNNING phase for request.",
    "prefill": "Histogram of time spent in PREFILL phase for request.",
    "decode": "Histogram of time spent in DECODE phase for request.",
    "num_preemptions": "Histogram of the number of times a request was preempted.",
    "cache_config": "Information of the LLMEngine CacheConfig",
    "store_bytes": "Total bytes stored from GPU to offload storage.",
    "load_bytes": "Total bytes loaded from offload storage to GPU.",
}


def build_1_2_5_buckets(max_value: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to `max_value`: vLLM's token-count buckets."""
    found: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(found)
            found.append(float(value))
        exponent += 1


class Histogram(histogram.Recorder):
    """An engine's histogram (`kvscale.histogram.Recorder`), with the `le` labels of its
    exposition."""

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        found: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            found.append((_le(bound), float(running)))
        return found


def _le(bound: float) -> str:
    # As prometheus_client's Histogram writes these bounds ("0.5", "1.0", "7680.0", "+Inf").
    return "+Inf" if bound == float("inf") else repr(float(bound))


@dataclasses.dataclass
class Histograms:
    """The latency and size histograms the twin feeds from step results."""

    ttft: Histogram
    itl: Histogram
    tpot: Histogram
    e2e: Histogram
    queue: Histogram
    inference: Histogram
    prefill: Histogram
    decode: Histogram
    num_preemptions: Histogram
    prompt_tokens: Histogram
    generation_tokens: Histogram
    max_tokens: Histogram

    @classmethod
    def for_max_model_len(cls, max_model_len: int) -> Histograms:
        tokens = build_1_2_5_buckets(max_model_len)
        return cls(
            ttft=Histogram(TIME_TO_FIRST_TOKEN_BUCKETS),
            itl=Histogram(INTER_TOKEN_LATENCY_BUCKETS),
            tpot=Histogram(INTER_TOKEN_LATENCY_BUCKETS),
            e2e=Histogram(REQUEST_LATENCY_BUCKETS),
            queue=Histogram(REQUEST_LATENCY_BUCKETS),
            inference=Histogram(REQUEST_LATENCY_BUCKETS),
            prefill=Histogram(REQUEST_LATENCY_BUCKETS),
            decode=Histogram(REQUEST_LATENCY_BUCKETS),
            num_preemptions=Histogram(REQUEST_NUM_PREEMPTIONS_BUCKETS),
            prompt_tokens=Histogram(tokens),
            generation_tokens=Histogram(tokens),
            max_tokens=Histogram(tokens),
        )


@dataclasses.dataclass
class Counters:
    """Counters kept outside the engine twin's own metrics."""

    finished: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(FINISHED_REASONS, 0)
    )
    swap_store_bytes: int = 0
    swap_load_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything one scrape reports."""

    model_name: str
    metrics: engine.Metrics
    histograms: Histograms
    counters: Counters
    cache_config: Mapping[str, str]
    created: float  # unix time the metrics started (the `_created` samples)
    swap: bool


def cache_config_labels(
    *,
    block_size: int,
    user_specified_block_size: bool,
    num_gpu_blocks: int,
    num_gpu_blocks_override: int | None,
    gpu_memory_utilization: float,
    cache_dtype: str,
    enable_prefix_caching: bool,
    max_model_len: int,
    kv_cache_memory_bytes: int | None,
    kv_offloading_size: float | None,
    kv_offloading_backend: str,
    num_cpu_blocks: int | None,
) -> dict[str, str]:
    """vllm:cache_config_info's labels: every CacheConfig field, as vLLM writes them (str()).

    The fields the twin has are filled from its configuration; the rest carry the values a
    vLLM 0.32 engine reports for a plain dense model (attention only, no Mamba, no sliding
    window), so the label set is exactly vLLM's.
    """
    kv_cache_size_tokens = num_gpu_blocks * block_size
    return {
        "_block_size_resolved": "True",
        "block_size": str(block_size),
        "cache_dtype": cache_dtype,
        "cache_hit_alignment_tokens": "None",
        "effective_attention_block_size": str(block_size),
        "enable_mamba_shared_prefix_checkpoint": "False",
        "enable_prefix_caching": str(enable_prefix_caching),
        "engine": ENGINE_INDEX,
        "gpu_memory_utilization": str(float(gpu_memory_utilization)),
        "hash_block_size": "None",
        "is_attention_free": "False",
        "kv_cache_dtype_skip_layers": "[]",
        "kv_cache_layout": "None",
        "kv_cache_max_concurrency": str(kv_cache_size_tokens / max_model_len),
        "kv_cache_memory_bytes": str(kv_cache_memory_bytes),
        "kv_cache_size_tokens": str(kv_cache_size_tokens),
        "kv_offloading_backend": kv_offloading_backend,
        "kv_offloading_size": str(kv_offloading_size),
        "kv_sharing_fast_prefill": "False",
        "mamba_block_size": "None",
        "mamba_cache_dtype": "auto",
        "mamba_cache_mode": "none",
        "mamba_page_size_padded": "None",
        "mamba_ssm_cache_dtype": "float32",
        "num_cpu_blocks": str(num_cpu_blocks),
        "num_gpu_blocks": str(num_gpu_blocks),
        "num_gpu_blocks_override": str(num_gpu_blocks_override),
        "prefix_cache_retention_interval": "0",
        "prefix_caching_hash_algo": "sha256",
        "prefix_match_unit": "None",
        "replayssm_buffer_len": "16",
        "skip_page_size_padded": "None",
        "sliding_window": "None",
        "swa_bounded_replay": "True",
        "use_kda_recoverssm": "False",
        "use_replayssm": "False",
        "user_specified_block_size": str(user_specified_block_size),
    }


def families(snapshot: Snapshot) -> list[metrics_core.Metric]:
    """The metric families of one scrape, in the order vLLM registers them."""
    m = snapshot.metrics
    labels = [ENGINE_INDEX, snapshot.model_name]
    created = snapshot.created
    found: list[metrics_core.Metric] = []

    def gauge(name: str, help_key: str, value: float) -> None:
        family = metrics_core.GaugeMetricFamily(name, _HELP[help_key], labels=LABEL_NAMES)
        family.add_metric(labels, value)
        found.append(family)

    def counter(name: str, help_key: str, value: float) -> None:
        family = metrics_core.CounterMetricFamily(name, _HELP[help_key], labels=LABEL_NAMES)
        family.add_metric(labels, value, created=created)
        found.append(family)

    def histogram(name: str, help_key: str, hist: Histogram) -> None:
        family = metrics_core.HistogramMetricFamily(name, _HELP[help_key], labels=LABEL_NAMES)
        family.add_metric(labels, hist.cumulative(), hist.total)
        family.samples.append(
            prom_samples.Sample(name + "_created", dict(zip(LABEL_NAMES, labels, strict=True)),
                                created)
        )  # fmt: skip
        found.append(family)

    gauge("vllm:num_requests_running", "running", m.num_requests_running)
    gauge("vllm:num_requests_waiting", "waiting", m.num_requests_waiting)
    by_reason = metrics_core.GaugeMetricFamily(
        "vllm:num_requests_waiting_by_reason",
        _HELP["waiting_by_reason"],
        labels=(*LABEL_NAMES, "reason"),
    )
    # The twin defers nothing (no LoRA, no KV transfer): every waiting request waits for room.
    by_reason.add_metric([*labels, "capacity"], m.num_requests_waiting)
    by_reason.add_metric([*labels, "deferred"], 0.0)
    found.append(by_reason)
    gauge("vllm:kv_cache_usage_perc", "usage", m.kv_cache_usage)
    counter("vllm:prefix_cache_queries", "prefix_queries", m.prefix_cache_queries_total)
    counter("vllm:prefix_cache_hits", "prefix_hits", m.prefix_cache_hits_total)
    counter("vllm:num_preemptions", "preemptions", m.num_preemptions_total)
    counter("vllm:prompt_tokens", "prompt_tokens", m.prompt_tokens_total)
    counter("vllm:generation_tokens", "generation_tokens", m.generation_tokens_total)
    success = metrics_core.CounterMetricFamily(
        "vllm:request_success", _HELP["success"], labels=("engine", "finished_reason", "model_name")
    )
    for reason in FINISHED_REASONS:
        success.add_metric(
            [ENGINE_INDEX, reason, snapshot.model_name],
            snapshot.counters.finished.get(reason, 0),
            created=created,
        )
    found.append(success)
    hists = snapshot.histograms
    histogram("vllm:request_prompt_tokens", "request_prompt_tokens", hists.prompt_tokens)
    histogram("vllm:request_generation_tokens", "request_generation_tokens",
              hists.generation_tokens)  # fmt: skip
    histogram("vllm:request_max_num_generation_tokens", "max_num_generation_tokens",
              hists.max_tokens)  # fmt: skip
    histogram("vllm:request_params_max_tokens", "params_max_tokens", hists.max_tokens)
    histogram("vllm:time_to_first_token_seconds", "ttft", hists.ttft)
    histogram("vllm:inter_token_latency_seconds", "itl", hists.itl)
    histogram("vllm:request_time_per_output_token_seconds", "tpot", hists.tpot)
    histogram("vllm:e2e_request_latency_seconds", "e2e", hists.e2e)
    histogram("vllm:request_queue_time_seconds", "queue", hists.queue)
    histogram("vllm:request_inference_time_seconds", "inference", hists.inference)
    histogram("vllm:request_prefill_time_seconds", "prefill", hists.prefill)
    histogram("vllm:request_decode_time_seconds", "decode", hists.decode)
    histogram("vllm:request_num_preemptions", "num_preemptions", hists.num_preemptions)
    if snapshot.swap:
        counter("vllm:kv_offload_store_bytes", "store_bytes", snapshot.counters.swap_store_bytes)
        counter("vllm:kv_offload_load_bytes", "load_bytes", snapshot.counters.swap_load_bytes)
    info = metrics_core.GaugeMetricFamily(
        "vllm:cache_config_info", _HELP["cache_config"], labels=sorted(snapshot.cache_config)
    )
    info.add_metric([snapshot.cache_config[k] for k in sorted(snapshot.cache_config)], 1.0)
    found.append(info)
    found.extend(_twin_only(m, snapshot.swap))
    return found


def _twin_only(m: engine.Metrics, swap: bool) -> Sequence[metrics_core.Metric]:
    if not swap:
        return []
    used = metrics_core.GaugeMetricFamily(
        "kvscale_twin_cpu_kv_blocks_used",
        "Engine twin only: KV blocks of preempted requests held in CPU memory (swap).",
        value=m.num_cpu_blocks_used,
    )
    total = metrics_core.GaugeMetricFamily(
        "kvscale_twin_cpu_kv_blocks",
        "Engine twin only: KV blocks the CPU swap space holds.",
        value=m.num_cpu_blocks,
    )
    swapped = metrics_core.GaugeMetricFamily(
        "kvscale_twin_requests_swapped",
        "Engine twin only: waiting requests whose KV sits in CPU memory.",
        value=m.num_requests_swapped,
    )
    fallbacks = metrics_core.CounterMetricFamily(
        "kvscale_twin_swap_fallbacks",
        "Engine twin only: preemptions that recomputed because the CPU swap space was full.",
        value=m.num_swap_fallbacks_total,
    )
    return [used, total, swapped, fallbacks]
