"""Reading real vLLM /metrics text into an EngineSample, and refusing text that lacks what we read.

The texts are real captures from a vLLM CPU engine (tests/data, saved by the engine-env build),
idle and under load; faults are made by editing those captures line by line. Expected values
come from parsing the whole capture with prometheus_client (no line selection), an independent
path to the same numbers.
"""

from __future__ import annotations

import pathlib

import pytest
from prometheus_client import parser

from kvscale_sidecar import vllm_metrics

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"


def _capture(name: str) -> str:
    path = DATA / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: it is a real vLLM /metrics capture saved by "
            "`make engine-env` (scripts/build-engine-env.sh)",
            pytrace=False,
        )
    return path.read_text()


IDLE = _capture("vllm_metrics_idle.txt")
LOADED = _capture("vllm_metrics_loaded.txt")


def _name(line: str) -> str:
    return line.split("{", 1)[0].split(" ", 1)[0]


def _set_value(text: str, name: str, value: str) -> str:
    """Replace the value of every sample of `name`."""
    lines = []
    for line in text.split("\n"):
        if not line.startswith("#") and _name(line) == name:
            line = line.rsplit(" ", 1)[0] + " " + value
        lines.append(line)
    return "\n".join(lines)


def _drop_samples(text: str, name: str) -> str:
    return "\n".join(
        line for line in text.split("\n") if line.startswith("#") or _name(line) != name
    )


def _rename(text: str, old: str, new: str) -> str:
    """Rename a metric everywhere it is spelled: HELP, TYPE and samples."""
    lines = []
    for line in text.split("\n"):
        if line.startswith(("# HELP ", "# TYPE ")) and line.split(" ")[2] == old:
            line = line.replace(old, new, 1)
        elif _name(line) == old:
            line = new + line[len(old) :]
        lines.append(line)
    return "\n".join(lines)


def _oracle(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample in the text by name, from a full parse without line selection."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, float(sample.value)))
    return found


@pytest.mark.parametrize("text", [IDLE, LOADED], ids=["idle", "loaded"])
def test_real_capture_reads_the_same_numbers_as_a_full_parse(text: str) -> None:
    sample = vllm_metrics.parse(text)
    oracle = _oracle(text)
    [(config_labels, _)] = oracle[vllm_metrics.CACHE_CONFIG_INFO]
    [(usage_labels, usage)] = oracle[vllm_metrics.KV_CACHE_USAGE]
    assert sample.block_size == int(config_labels["block_size"])
    assert sample.num_gpu_blocks == int(config_labels["num_gpu_blocks"])
    assert sample.kv_cache_usage == usage
    assert sample.model_name == usage_labels["model_name"]
    assert sample.num_requests_running == oracle[vllm_metrics.NUM_REQUESTS_RUNNING][0][1]
    assert sample.num_requests_waiting == oracle[vllm_metrics.NUM_REQUESTS_WAITING][0][1]
    assert sample.num_preemptions == oracle[vllm_metrics.NUM_PREEMPTIONS][0][1]
    assert sample.prefix_cache_queries == oracle[vllm_metrics.PREFIX_CACHE_QUERIES][0][1]
    assert sample.prefix_cache_hits == oracle[vllm_metrics.PREFIX_CACHE_HITS][0][1]
    assert sample.process_start_time == oracle[vllm_metrics.PROCESS_START_TIME][0][1]
    assert sample.prompt_tokens == oracle[vllm_metrics.PROMPT_TOKENS][0][1]
    assert sample.generation_tokens == oracle[vllm_metrics.GENERATION_TOKENS][0][1]
    assert sample.prefix_caching_enabled is (config_labels["enable_prefix_caching"] == "True")
    # The CPU build cannot offload; its cache config says so and no offload metric exists.
    assert config_labels["kv_offloading_size"] == "None"
    assert sample.offload_backend is None
    assert sample.offload_capacity_bytes is None
    assert sample.offload_usage is None


def test_idle_capture_uses_no_blocks() -> None:
    sample = vllm_metrics.parse(IDLE)
    assert sample.kv_cache_usage == 0.0
    assert sample.num_used_blocks == 0
    assert sample.num_requests_running == 0


def test_loaded_capture_blocks_follow_vllms_usage_formula() -> None:
    sample = vllm_metrics.parse(LOADED)
    usable = sample.num_gpu_blocks - 1  # vLLM's reserved null block is never used
    assert sample.num_used_blocks == round(sample.kv_cache_usage * usable)
    assert 0 < sample.num_used_blocks <= usable
    assert sample.kv_capacity_tokens == usable * sample.block_size
    assert sample.num_requests_waiting > 0


def test_lines_of_metrics_not_read_are_not_validated() -> None:
    # Documented trade-off of parsing only the lines kvscale reads (8 ms -> 1 ms per scrape).
    broken = IDLE.replace("python_gc_objects_collected_total{", "python_gc_objects{{{ broken ", 1)
    assert vllm_metrics.parse(broken) == vllm_metrics.parse(IDLE)


FAULTS = [
    pytest.param(
        _drop_samples(IDLE, vllm_metrics.KV_CACHE_USAGE),
        vllm_metrics.KV_CACHE_USAGE,
        "declared in the engine's /metrics but has no samples",
        id="usage-samples-gone",
    ),
    pytest.param(
        _rename(IDLE, vllm_metrics.KV_CACHE_USAGE, "vllm:gpu_cache_usage_perc"),
        vllm_metrics.KV_CACHE_USAGE,
        "which has vllm:gpu_cache_usage_perc instead",
        id="old-usage-name",
    ),
    pytest.param(
        _rename(IDLE, vllm_metrics.NUM_REQUESTS_WAITING, "vllm:num_requests_queued"),
        vllm_metrics.NUM_REQUESTS_WAITING,
        "vllm:num_requests_queued",
        id="waiting-renamed",
    ),
    pytest.param(
        _rename(IDLE, vllm_metrics.NUM_PREEMPTIONS, "vllm:num_preempted_total"),
        vllm_metrics.NUM_PREEMPTIONS,
        "missing from the engine's /metrics",
        id="preemptions-renamed",
    ),
    pytest.param(
        _drop_samples(IDLE, vllm_metrics.CACHE_CONFIG_INFO),
        vllm_metrics.CACHE_CONFIG_INFO,
        "has no samples",
        id="no-cache-config",
    ),
    pytest.param(
        IDLE.replace('num_gpu_blocks="64"', 'num_gpu_blocks="None"'),
        "vllm:cache_config_info{num_gpu_blocks}",
        "num_gpu_blocks='None' is not an integer",
        id="blocks-unknown",
    ),
    pytest.param(
        IDLE.replace('block_size="32",', ""),
        "vllm:cache_config_info{block_size}",
        "label block_size missing",
        id="no-block-size",
    ),
    pytest.param(
        _set_value(IDLE, vllm_metrics.KV_CACHE_USAGE, "1.5"),
        vllm_metrics.KV_CACHE_USAGE,
        "outside 0..1",
        id="usage-above-1",
    ),
    pytest.param(
        _set_value(IDLE, vllm_metrics.KV_CACHE_USAGE, "NaN"),
        vllm_metrics.KV_CACHE_USAGE,
        "not a finite number",
        id="usage-nan",
    ),
    pytest.param(
        _set_value(IDLE, vllm_metrics.NUM_REQUESTS_RUNNING, "2.5"),
        vllm_metrics.NUM_REQUESTS_RUNNING,
        "not a whole number",
        id="running-fraction",
    ),
    pytest.param(
        _set_value(IDLE, vllm_metrics.NUM_PREEMPTIONS, "-1"),
        vllm_metrics.NUM_PREEMPTIONS,
        "not a whole number",
        id="preemptions-negative",
    ),
    pytest.param(
        IDLE.replace(
            'vllm:num_requests_running{engine="0",',
            'vllm:num_requests_running{engine="1",model_name="x"} 1.0\n'
            'vllm:num_requests_running{engine="0",',
        ),
        None,
        "2 data-parallel engines",
        id="two-engines",
    ),
    pytest.param(
        IDLE.replace(
            'vllm:num_requests_waiting{engine="0",',
            'vllm:num_requests_waiting{engine="0",model_name="other"} 1.0\n'
            'vllm:num_requests_waiting{engine="0",',
        ),
        vllm_metrics.NUM_REQUESTS_WAITING,
        "2 series",
        id="two-series",
    ),
    pytest.param(
        IDLE.replace(
            'vllm:kv_cache_usage_perc{engine="0",model_name="',
            "vllm:kv_cache_usage_perc{engine=",
            1,
        ),
        None,
        "unparseable /metrics line: 'vllm:kv_cache_usage_perc{engine=",
        id="garbled-labels",
    ),
    pytest.param(
        IDLE[: IDLE.index(vllm_metrics.CACHE_CONFIG_INFO + "{") + 60],
        None,
        "unparseable /metrics line",
        id="truncated-mid-line",
    ),
    pytest.param(
        IDLE[: IDLE.index("# HELP " + vllm_metrics.CACHE_CONFIG_INFO)],
        vllm_metrics.CACHE_CONFIG_INFO,
        "missing",
        id="truncated-between-lines",
    ),
    pytest.param("", None, "empty", id="empty"),
    pytest.param(
        "<html><body>502 Bad Gateway</body></html>\n",
        vllm_metrics.KV_CACHE_USAGE,
        "no vllm:* sample at all (it begins '<html><body>502 Bad Gateway",
        id="html-page",
    ),
    pytest.param(
        "# HELP up whether\n# TYPE up gauge\nup 1\n",
        vllm_metrics.KV_CACHE_USAGE,
        "no vllm:* sample at all",
        id="not-vllm",
    ),
]


@pytest.mark.parametrize(("text", "metric", "says"), FAULTS)
def test_faulty_text_is_refused_naming_the_metric(text: str, metric: str | None, says: str) -> None:
    with pytest.raises(vllm_metrics.BadMetricsError) as caught:
        vllm_metrics.parse(text)
    assert caught.value.metric == metric
    assert says in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_missing_optional_metrics_are_none_not_zero() -> None:
    text = IDLE
    for name in (
        vllm_metrics.PREFIX_CACHE_QUERIES,
        vllm_metrics.PREFIX_CACHE_HITS,
        vllm_metrics.PROCESS_START_TIME,
        vllm_metrics.PROMPT_TOKENS,
        vllm_metrics.GENERATION_TOKENS,
    ):
        text = _drop_samples(text, name)
    sample = vllm_metrics.parse(text)
    assert sample.prefix_cache_queries is None
    assert sample.prefix_cache_hits is None
    assert sample.process_start_time is None
    assert sample.prompt_tokens is None
    assert sample.generation_tokens is None


def test_offload_is_read_where_the_engine_exposes_it() -> None:
    # The CPU build refuses KV offloading, so this is the GPU engine's exposition, hand-made:
    # the cache config names a size in GiB and the offload connector's metrics appear.
    gib = 2.5
    store_bytes = [1.0e9, 2.0e9]
    text = (
        IDLE.replace('kv_offloading_size="None"', f'kv_offloading_size="{gib}"')
        + "# TYPE vllm:kv_offload_cpu_cache_usage_perc gauge\n"
        + 'vllm:kv_offload_cpu_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
        + "# TYPE vllm:kv_offload_store_bytes_total counter\n"
        + "".join(
            f'vllm:kv_offload_store_bytes_total{{engine="0",kind="{i}"}} {value}\n'
            for i, value in enumerate(store_bytes)
        )
        + "# TYPE vllm:kv_offload_load_bytes_total counter\n"
        + 'vllm:kv_offload_load_bytes_total{engine="0"} 7.0\n'
    )
    sample = vllm_metrics.parse(text)
    assert sample.offload_capacity_bytes == round(gib * (1 << 30))
    assert sample.offload_backend == "native"
    assert sample.offload_usage == 0.25
    assert sample.offload_store_bytes == sum(store_bytes)
    assert sample.offload_load_bytes == 7.0


def test_offload_size_that_is_not_a_size_is_refused() -> None:
    text = IDLE.replace('kv_offloading_size="None"', 'kv_offloading_size="lots"')
    with pytest.raises(vllm_metrics.BadMetricsError, match="kv_offloading_size='lots'"):
        vllm_metrics.parse(text)


def test_required_and_optional_names_are_vllm_names_listed_once() -> None:
    names = vllm_metrics.REQUIRED + vllm_metrics.OPTIONAL + vllm_metrics.HISTOGRAMS
    assert len(set(names)) == len(names)
    assert all(n.startswith("vllm:") for n in names if n != vllm_metrics.PROCESS_START_TIME)
    assert set(vllm_metrics.RENAMED.values()) <= set(names)
    assert not set(vllm_metrics.RENAMED) & set(names)


def _histogram_oracle(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(bound, cumulative) of every finite bucket, the count and the sum, from a full parse."""
    oracle = _oracle(text)
    buckets = sorted(
        (float(labels["le"]), value)
        for labels, value in oracle[name + "_bucket"]
        if labels["le"] != "+Inf"
    )
    [(_, count)] = oracle[name + "_count"]
    [(_, total)] = oracle[name + "_sum"]
    return buckets, count, total


@pytest.mark.parametrize("text", [IDLE, LOADED], ids=["idle", "loaded"])
@pytest.mark.parametrize("name", vllm_metrics.HISTOGRAMS)
def test_real_capture_latency_histograms_read_as_a_full_parse(text: str, name: str) -> None:
    field = {
        vllm_metrics.TIME_TO_FIRST_TOKEN: "time_to_first_token",
        vllm_metrics.INTER_TOKEN_LATENCY: "inter_token_latency",
        vllm_metrics.REQUEST_QUEUE_TIME: "request_queue_time",
        vllm_metrics.TIME_PER_OUTPUT_TOKEN: "time_per_output_token",
    }[name]
    read = getattr(vllm_metrics.parse(text), field)
    buckets, count, total = _histogram_oracle(text, name)
    assert read is not None
    assert list(zip(read.bounds, read.cumulative, strict=True)) == buckets
    assert (read.count, read.total) == (count, total)


def test_loaded_capture_has_latency_observations() -> None:
    sample = vllm_metrics.parse(LOADED)
    assert sample.time_to_first_token is not None
    assert sample.time_to_first_token.count > 0
    assert sample.request_queue_time is not None
    assert sample.request_queue_time.count > 0


def test_an_engine_without_latency_histograms_reports_them_unknown() -> None:
    text = IDLE
    for name in vllm_metrics.HISTOGRAMS:
        for suffix in ("_bucket", "_count", "_sum", "_created"):
            text = _drop_samples(text, name + suffix)
    sample = vllm_metrics.parse(text)
    assert sample.time_to_first_token is None
    assert sample.inter_token_latency is None
    assert sample.request_queue_time is None


def _rename_histogram(text: str, old: str, new: str) -> str:
    for suffix in ("", "_bucket", "_count", "_sum", "_created"):
        text = _rename(text, old + suffix, new + suffix)
    return text


def test_the_old_inter_token_latency_name_fails_loudly() -> None:
    text = _rename_histogram(
        LOADED, vllm_metrics.INTER_TOKEN_LATENCY, "vllm:time_per_output_token_seconds"
    )
    with pytest.raises(vllm_metrics.BadMetricsError) as caught:
        vllm_metrics.parse(text)
    assert caught.value.metric == vllm_metrics.INTER_TOKEN_LATENCY
    assert "which has vllm:time_per_output_token_seconds instead" in caught.value.reason


_TTFT_01 = (
    'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="kvscale/tiny-llama"}'
)
HISTOGRAM_FAULTS = [
    pytest.param(
        _drop_samples(LOADED, vllm_metrics.TIME_TO_FIRST_TOKEN + "_bucket").replace(
            "vllm:time_to_first_token_seconds_count{",
            'vllm:time_to_first_token_seconds_bucket{le="0.5",',
            1,
        ),
        'no le="+Inf" bucket',
        id="no-inf-bucket",
    ),
    pytest.param(
        LOADED.replace(_TTFT_01 + " 125.0", _TTFT_01 + " 12.0"),
        "must never decrease",
        id="not-cumulative",
    ),
    pytest.param(
        LOADED.replace(
            'vllm:request_queue_time_seconds_bucket{engine="0",le="0.3",model_name="kvscale/tiny-llama"}',
            'vllm:request_queue_time_seconds_bucket{engine="1",le="0.3",model_name="kvscale/tiny-llama"}',
        ),
        "2 series",
        id="two-series",
    ),
]


@pytest.mark.parametrize(("text", "says"), HISTOGRAM_FAULTS)
def test_a_garbled_latency_histogram_is_refused_naming_it(text: str, says: str) -> None:
    with pytest.raises(vllm_metrics.BadMetricsError) as caught:
        vllm_metrics.parse(text)
    assert says in caught.value.reason
    assert caught.value.metric in vllm_metrics.HISTOGRAMS
