"""The sidecar's own Prometheus metrics, built from an occupancy report. Pure.

Names follow Prometheus conventions: a `kvscale_` prefix, no colons, base units, `_total` on
counters, `_ratio` for 0..1 values. The engine's numbers are exported only while the engine is
`ok`: a stale value would look current to an alert, so when the engine is not ok its series are
absent and `kvscale_engine_health{state=...}` and `kvscale_engine_sample_age_seconds` say why.
Pod and namespace are not labels here; Prometheus adds them from the scrape target.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import core, metrics_core

from kvscale import report


def families(
    current: report.OccupancyReport, outcome_counts: Mapping[str, int]
) -> list[metrics_core.Metric]:
    """Every metric family the sidecar serves, for the report `current`."""
    health = core.GaugeMetricFamily(
        "kvscale_engine_health",
        "1 for the engine's current state as the sidecar sees it, 0 for the others.",
        labels=["state"],
    )
    for state in report.Health:
        health.add_metric([state.value], 1.0 if current.health is state else 0.0)
    scrapes = core.CounterMetricFamily(
        "kvscale_sidecar_scrapes",
        "Scrapes of the engine by the sidecar, by outcome.",
        labels=["outcome"],
    )
    for outcome, count in sorted(outcome_counts.items()):
        scrapes.add_metric([outcome], float(count))
    result: list[metrics_core.Metric] = [health, scrapes]
    if current.missed_scrapes is not None:
        result.append(
            core.GaugeMetricFamily(
                "kvscale_sidecar_missed_scrapes",
                "Scrapes of the engine in a row without an answer (0 once one answers); the "
                "engine is unreachable when they reach the sidecar's --unreachable-after.",
                value=float(current.missed_scrapes),
            )
        )
    if current.age_seconds is not None:
        result.append(
            core.GaugeMetricFamily(
                "kvscale_engine_sample_age_seconds",
                "Seconds since the last good sample of the engine's metrics.",
                value=current.age_seconds,
            )
        )
    if current.health is report.Health.OK:
        result.extend(_engine(current))
    return result


def _engine(current: report.OccupancyReport) -> list[metrics_core.Metric]:
    # A report with health ok carries every required number (the report model enforces it).
    assert current.num_gpu_blocks is not None
    assert current.num_used_blocks is not None
    assert current.usage_ratio is not None
    assert current.block_size is not None
    assert current.kv_capacity_tokens is not None
    assert current.num_requests_running is not None
    assert current.num_requests_waiting is not None
    assert current.preemptions_total is not None
    blocks = core.GaugeMetricFamily(
        "kvscale_engine_kv_blocks",
        "KV-cache blocks by state; they add up to the pool (one block is vLLM's reserved null "
        "block).",
        labels=["state"],
    )
    usable = current.num_gpu_blocks - 1
    blocks.add_metric(["used"], float(current.num_used_blocks))
    blocks.add_metric(["free"], float(usable - current.num_used_blocks))
    blocks.add_metric(["reserved"], 1.0)
    requests = core.GaugeMetricFamily(
        "kvscale_engine_requests", "Requests in the engine by state.", labels=["state"]
    )
    requests.add_metric(["running"], float(current.num_requests_running))
    requests.add_metric(["waiting"], float(current.num_requests_waiting))
    result: list[metrics_core.Metric] = [
        blocks,
        core.GaugeMetricFamily(
            "kvscale_engine_kv_usage_ratio",
            "Used KV blocks over usable blocks (vLLM's kv_cache_usage_perc).",
            value=current.usage_ratio,
        ),
        core.GaugeMetricFamily(
            "kvscale_engine_kv_block_size_tokens",
            "Tokens per KV block.",
            value=float(current.block_size),
        ),
        core.GaugeMetricFamily(
            "kvscale_engine_kv_capacity_tokens",
            "Tokens the engine's usable KV blocks hold.",
            value=float(current.kv_capacity_tokens),
        ),
        requests,
        core.CounterMetricFamily(
            "kvscale_engine_preemptions",
            "The engine's preemption counter as last seen (starts again at 0 with the engine).",
            value=float(current.preemptions_total),
        ),
    ]
    optional = (
        (
            "kvscale_engine_prefix_cache_hit_ratio",
            "Prefix-cache hit tokens over queried tokens, over the rate window.",
            current.prefix_cache_hit_ratio,
        ),
        (
            "kvscale_engine_offload_usage_ratio",
            "Fraction of the CPU offload cache in use by transfers.",
            current.offload_usage_ratio,
        ),
        (
            "kvscale_engine_offload_capacity_bytes",
            "Bytes of CPU memory configured for KV offloading.",
            None
            if current.offload_capacity_bytes is None
            else float(current.offload_capacity_bytes),
        ),
    )
    for name, documentation, value in optional:
        if value is not None:
            result.append(core.GaugeMetricFamily(name, documentation, value=value))
    # A kind whose rate is unknown (one sample so far, or no counter) has no series, not a 0.
    token_rates = (
        ("prompt", current.prompt_tokens_per_second),
        ("generation", current.generation_tokens_per_second),
    )
    if any(value is not None for _, value in token_rates):
        tokens = core.GaugeMetricFamily(
            "kvscale_engine_tokens_per_second",
            "Tokens the engine processed per second over the rate window, by kind (prompt: "
            "prefilled prompt tokens, cached ones included; generation: generated tokens).",
            labels=["kind"],
        )
        for kind, value in token_rates:
            if value is not None:
                tokens.add_metric([kind], value)
        result.append(tokens)
    result.extend(_latency(current))
    return result


def _latency(current: report.OccupancyReport) -> list[metrics_core.Metric]:
    """The engine's latency quantiles over the sidecar's window, by signal and quantile."""
    signals = (
        ("time_to_first_token", current.time_to_first_token),
        ("inter_token_latency", current.inter_token_latency),
        ("request_queue_time", current.request_queue_time),
        ("time_per_output_token", current.time_per_output_token),
    )
    present = [(name, window) for name, window in signals if window is not None]
    if not present:
        return []
    quantiles = core.GaugeMetricFamily(
        "kvscale_engine_latency_seconds",
        "The engine's latency quantiles over the sidecar's latency window, from the increase "
        "of vLLM's histograms (as histogram_quantile computes them); no series while the "
        "window holds no observation.",
        labels=["signal", "quantile"],
    )
    observations = core.GaugeMetricFamily(
        "kvscale_engine_latency_observations",
        "Observations in the sidecar's latency window, by signal.",
        labels=["signal"],
    )
    for name, window in present:
        observations.add_metric([name], float(window.count))
        for label, value in (("0.5", window.p50), ("0.9", window.p90), ("0.99", window.p99)):
            if value is not None:
                quantiles.add_metric([name, label], value)
    return [quantiles, observations]
