"""The sidecar's own Prometheus metrics: conventional names, values from the report, no stale data.

Rendered through an isolated CollectorRegistry and read back with prometheus_client's parser.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

import pytest
from prometheus_client import exposition as prom_exposition
from prometheus_client import metrics_core, parser, registry

from kvscale import report
from kvscale_sidecar import exposition, sampler, settings

LOADED_PATH = pathlib.Path(__file__).resolve().parent.parent / "data" / "vllm_metrics_loaded.txt"


class _Fixed(registry.Collector):
    def __init__(self, state: sampler.Sampler, now: float) -> None:
        self._state = state
        self._now = now

    def collect(self) -> Iterable[metrics_core.Metric]:
        return exposition.families(self._state.report(self._now), self._state.outcome_counts)


def _render(
    state: sampler.Sampler, now: float
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    metrics = registry.CollectorRegistry()
    metrics.register(_Fixed(state, now))
    text = prom_exposition.generate_latest(metrics).decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _state() -> sampler.Sampler:
    if not LOADED_PATH.is_file():
        pytest.fail(f"{LOADED_PATH} is missing; `make engine-env` saves it", pytrace=False)
    return sampler.Sampler(sampler.Identity("p", "ns", None, "http://e:8000"), 5.0)


def _loaded(state: sampler.Sampler) -> report.OccupancyReport:
    state.observe(sampler.Answered(200, LOADED_PATH.read_text()), now=10.0)
    return state.report(now=10.0)


def test_names_follow_prometheus_conventions() -> None:
    state = _state()
    _loaded(state)
    names = _render(state, now=10.0)
    assert names
    for name in names:
        assert name.startswith(("kvscale_engine_", "kvscale_sidecar_")), name
        assert ":" not in name, name
    assert "kvscale_engine_kv_usage_ratio" in names
    assert "kvscale_engine_preemptions_total" in names
    assert "kvscale_sidecar_scrapes_total" in names


def test_ok_engine_exports_its_numbers() -> None:
    state = _state()
    current = _loaded(state)
    assert current.num_gpu_blocks is not None
    found = _render(state, now=10.5)
    blocks = {labels[0][1]: value for labels, value in found["kvscale_engine_kv_blocks"].items()}
    assert blocks["used"] == current.num_used_blocks
    assert sum(blocks.values()) == current.num_gpu_blocks
    assert blocks["reserved"] == 1
    assert found["kvscale_engine_kv_usage_ratio"][()] == current.usage_ratio
    assert found["kvscale_engine_kv_capacity_tokens"][()] == current.kv_capacity_tokens
    assert found["kvscale_engine_kv_block_size_tokens"][()] == current.block_size
    requests = {labels[0][1]: v for labels, v in found["kvscale_engine_requests"].items()}
    assert requests == {
        "running": current.num_requests_running,
        "waiting": current.num_requests_waiting,
    }
    assert found["kvscale_engine_preemptions_total"][()] == current.preemptions_total
    assert found["kvscale_engine_sample_age_seconds"][()] == pytest.approx(0.5)
    health = {labels[0][1]: v for labels, v in found["kvscale_engine_health"].items()}
    assert health == {"ok": 1.0, "starting": 0.0, "unreachable": 0.0, "bad_metrics": 0.0}


def test_a_missed_scrape_inside_the_grace_keeps_the_numbers_and_counts_the_miss() -> None:
    state = _state()
    _loaded(state)
    state.observe(sampler.TimedOut("GET /metrics: no answer within 1 s"), now=11.0, took=1.0)
    found = _render(state, now=11.0)
    health = {labels[0][1]: v for labels, v in found["kvscale_engine_health"].items()}
    assert health["ok"] == 1.0
    assert found["kvscale_sidecar_missed_scrapes"][()] == 1.0
    # The numbers are the last good sample's; its age says how old they are.
    assert "kvscale_engine_kv_usage_ratio" in found
    assert found["kvscale_engine_sample_age_seconds"][()] == pytest.approx(1.0)


def test_engine_numbers_vanish_when_the_engine_is_not_ok() -> None:
    state = _state()
    _loaded(state)
    for _ in range(settings.DEFAULT_UNREACHABLE_AFTER):
        state.observe(sampler.Refused("connection refused"), now=11.0)
    found = _render(state, now=12.0)
    assert "kvscale_engine_kv_usage_ratio" not in found
    assert "kvscale_engine_kv_blocks" not in found
    health = {labels[0][1]: v for labels, v in found["kvscale_engine_health"].items()}
    assert health["unreachable"] == 1.0
    assert found["kvscale_engine_sample_age_seconds"][()] == pytest.approx(2.0)
    scrapes = {labels[0][1]: v for labels, v in found["kvscale_sidecar_scrapes_total"].items()}
    assert scrapes["ok"] == 1
    assert scrapes["refused"] == settings.DEFAULT_UNREACHABLE_AFTER
    assert found["kvscale_sidecar_missed_scrapes"][()] == settings.DEFAULT_UNREACHABLE_AFTER


def test_nothing_is_invented_before_the_first_sample() -> None:
    found = _render(_state(), now=1.0)
    assert set(found) == {"kvscale_engine_health", "kvscale_sidecar_scrapes_total"}
