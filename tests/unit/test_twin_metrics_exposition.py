"""The twin's /metrics reads exactly like a real vLLM 0.32 engine's.

Compared with a real capture (tests/data/vllm_metrics_idle.txt, a CPU engine with block size
32, 64 blocks, max_model_len 1024): every `vllm:*` family the twin exports exists there with
the same type, help text, label names and histogram buckets, and `vllm:cache_config_info`
carries the same labels. The text parses with prometheus_client and with the sidecar's own
parser, which reads the twin's engine state from it.
"""

from __future__ import annotations

import math
import pathlib

import pytest
from prometheus_client import exposition as prom_exposition
from prometheus_client import metrics_core, parser

from kvscale.twinserver import api, driver, settings
from kvscale_sidecar import vllm_metrics

REAL = pathlib.Path(__file__).resolve().parents[1] / "data" / "vllm_metrics_idle.txt"
MODEL = "kvscale/tiny-llama"
# The real capture's engine configuration.
ARGS = ["--model", MODEL, "--block-size", "32", "--num-gpu-blocks-override", "64",
        "--max-model-len", "1024", "--gpu-memory-utilization", "0.5"]  # fmt: skip
REQUIRED = (
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:num_preemptions",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:cache_config_info",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _text(twin: driver.Twin) -> str:
    return prom_exposition.generate_latest(api.metrics_registry(twin)).decode()


def _families(text: str) -> dict[str, metrics_core.Metric]:
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def _loaded_twin(argv: list[str]) -> driver.Twin:
    """A twin in the middle of a burst that overfills its cache: some requests finished, some
    running, some waiting, preemptions behind it."""
    clock = Clock()
    twin = driver.Twin(settings.parse(argv), clock=clock, wall=lambda: 1.7e9)
    for _ in range(12):
        twin.submit(num_prompt_tokens=300, max_tokens=200)
    while twin.engine.num_requests_finished_total < 3:
        clock.t += 0.01
        twin.pump()
    return twin


@pytest.fixture(scope="module")
def real() -> dict[str, metrics_core.Metric]:
    return _families(REAL.read_text())


@pytest.fixture(scope="module")
def loaded() -> driver.Twin:
    return _loaded_twin(ARGS)


def test_every_vllm_family_matches_the_real_engine_in_type_help_and_labels(
    real: dict[str, metrics_core.Metric], loaded: driver.Twin
) -> None:
    twin = _families(_text(loaded))
    exported = sorted(name for name in twin if name.startswith("vllm:"))
    assert set(REQUIRED) <= set(exported)
    for name in exported:
        assert name in real, f"{name}: vLLM 0.32 has no such metric"
        ours, theirs = twin[name], real[name]
        assert ours.type == theirs.type, name
        assert ours.documentation == theirs.documentation, name
        for suffix in {s.name for s in ours.samples}:
            our_labels = {frozenset(s.labels) for s in ours.samples if s.name == suffix}
            their_labels = {frozenset(s.labels) for s in theirs.samples if s.name == suffix}
            assert our_labels == their_labels, f"{suffix}: labels differ from vLLM's"


def test_histogram_buckets_are_vllms(
    real: dict[str, metrics_core.Metric], loaded: driver.Twin
) -> None:
    twin = _families(_text(loaded))
    histograms = [n for n, f in twin.items() if f.type == "histogram" and n.startswith("vllm:")]
    assert "vllm:time_to_first_token_seconds" in histograms
    for name in histograms:
        ours = [s.labels["le"] for s in twin[name].samples if s.name == name + "_bucket"]
        theirs = [s.labels["le"] for s in real[name].samples if s.name == name + "_bucket"]
        assert ours == theirs, name


def test_cache_config_info_has_vllms_labels_with_the_twins_values(
    real: dict[str, metrics_core.Metric], loaded: driver.Twin
) -> None:
    (ours,) = _families(_text(loaded))["vllm:cache_config_info"].samples
    (theirs,) = real["vllm:cache_config_info"].samples
    assert set(ours.labels) == set(theirs.labels)
    # Same engine configuration as the capture: the labels that describe it agree too.
    for label in ("block_size", "num_gpu_blocks", "num_gpu_blocks_override", "cache_dtype",
                  "enable_prefix_caching", "kv_cache_size_tokens", "kv_cache_max_concurrency",
                  "kv_offloading_size", "kv_offloading_backend", "gpu_memory_utilization",
                  "kv_cache_memory_bytes", "user_specified_block_size"):  # fmt: skip
        assert ours.labels[label] == theirs.labels[label], label
    assert ours.value == 1.0


def test_the_sidecar_reads_the_twin_like_vllm(loaded: driver.Twin) -> None:
    sample = vllm_metrics.parse(_text(loaded))
    metrics = loaded.engine.metrics()
    assert metrics.num_requests_running > 0
    assert metrics.num_requests_waiting > 0
    assert sample.model_name == MODEL
    assert (sample.block_size, sample.num_gpu_blocks) == (32, 64)
    assert math.isclose(sample.kv_cache_usage, metrics.kv_cache_usage)
    assert sample.num_used_blocks == 63 - metrics.num_free_blocks
    assert sample.num_requests_running == metrics.num_requests_running
    assert sample.num_requests_waiting == metrics.num_requests_waiting
    assert sample.num_preemptions == metrics.num_preemptions_total > 0
    assert sample.prefix_caching_enabled is True
    assert sample.prefix_cache_queries == metrics.prefix_cache_queries_total > 0
    # The token counters come out as vLLM's vllm:prompt_tokens_total / _generation_tokens_total.
    assert sample.prompt_tokens == metrics.prompt_tokens_total > 0
    assert sample.generation_tokens == metrics.generation_tokens_total > 0
    assert sample.process_start_time is not None
    assert sample.offload_backend is None


def test_counters_and_histograms_follow_the_engine(loaded: driver.Twin) -> None:
    families = _families(_text(loaded))
    metrics = loaded.engine.metrics()

    def value(name: str, sample: str, **labels: str) -> float:
        return sum(
            float(s.value)
            for s in families[name].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    finished = metrics.num_requests_finished_total
    assert finished > 0
    assert value("vllm:request_success", "vllm:request_success_total",
                 finished_reason="length") == finished  # fmt: skip
    assert value("vllm:generation_tokens", "vllm:generation_tokens_total") == (
        metrics.generation_tokens_total
    )
    # Every finished request, and every live one past its first token, has a TTFT.
    sched = loaded.engine.scheduler
    live_started = sum(1 for r in [*sched.running, *sched.waiting] if r.first_token_time)
    ttft = "vllm:time_to_first_token_seconds"
    assert value(ttft, ttft + "_count") == finished + live_started
    e2e = "vllm:e2e_request_latency_seconds"
    assert value(e2e, e2e + "_count") == finished
    # One ITL per output token after a request's first.
    itl = "vllm:inter_token_latency_seconds"
    assert value(itl, itl + "_count") == metrics.generation_tokens_total - (finished + live_started)
    # Phase times of finished requests: one observation each.
    for phase in ("queue", "inference", "prefill", "decode"):
        name = f"vllm:request_{phase}_time_seconds"
        assert value(name, name + "_count") == finished, name


def test_queue_time_is_arrival_to_first_scheduled() -> None:
    # A burst larger than the batch: later requests wait for earlier ones to finish.
    clock = Clock()
    twin = driver.Twin(settings.parse([*ARGS, "--max-num-seqs", "2"]), clock=clock)
    streams = [twin.submit(num_prompt_tokens=40, max_tokens=5) for _ in range(6)]
    while twin.engine.num_requests_finished_total < 6:
        clock.t += 0.01
        twin.pump()
    waits = []
    for stream in streams:
        req = stream.request
        assert req.scheduled_time is not None
        assert req.first_token_time is not None
        assert req.arrival_time <= req.scheduled_time < req.first_token_time
        waits.append(req.scheduled_time - req.arrival_time)
    assert max(waits) > 0  # the last pair waited for two batches
    queue = twin.histograms.queue
    assert queue.count == 6
    assert math.isclose(queue.total, sum(waits))
    # The sidecar reads the same histogram back from the exposition text.
    sample = vllm_metrics.parse(_text(twin))
    assert sample.request_queue_time is not None
    assert sample.request_queue_time.count == 6
    assert math.isclose(sample.request_queue_time.total, sum(waits))
    assert sample.time_to_first_token is not None
    assert sample.time_to_first_token.count == 6


def test_swap_adds_vllms_offload_counters_and_the_sidecar_sees_the_offload_size() -> None:
    twin = _loaded_twin([*ARGS, "--kv-offloading-size", "0.25"])
    text = _text(twin)
    sample = vllm_metrics.parse(text)
    assert sample.offload_backend == "native"
    assert sample.offload_capacity_bytes == 256 * 1024**2
    families = _families(text)
    store = families["vllm:kv_offload_store_bytes"].samples[0].value
    assert store == twin.counters.swap_store_bytes > 0
    assert "kvscale_twin_cpu_kv_blocks_used" in families
