"""The occupancy report's wire format: round trips, versioning, and refusal of malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvscale import report


def _ok_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema_version": report.SCHEMA_VERSION,
        "pod": "chat-7d9f-abcde",
        "namespace": "serving",
        "model": "kvscale/tiny-llama",
        "engine_url": "http://10.0.0.7:8000",
        "health": "ok",
        "reason": "",
        "sampled_at": 1_800_000_000.0,
        "checked_at": 1_800_000_000.0,
        "served_at": 1_800_000_000.1,
        "age_seconds": 0.1,
        "engine_started_at": 1_799_999_000.0,
        "block_size": 32,
        "num_gpu_blocks": 64,
        "num_used_blocks": 60,
        "usage_ratio": 60 / 63,
        "kv_capacity_tokens": 63 * 32,
        "num_requests_running": 5,
        "num_requests_waiting": 70,
        "preemptions_total": 900,
        "preemptions_per_second": 21.5,
        "prefix_caching_enabled": True,
        "prefix_cache_hit_ratio": 0.78,
        "rate_window_seconds": 5.0,
        "prompt_tokens_total": 1_250_000,
        "generation_tokens_total": 310_000,
        "prompt_tokens_per_second": 4_100.0,
        "generation_tokens_per_second": 950.5,
        "throughput_window_seconds": 15.0,
        "offload_backend": None,
        "offload_capacity_bytes": None,
        "offload_usage_ratio": None,
        "offload_store_bytes_per_second": None,
        "offload_load_bytes_per_second": None,
    }
    document.update(changes)
    return document


def _starting_document() -> dict[str, Any]:
    document = _ok_document(health="starting", reason="GET /health: connection refused")
    for name in (*report.REQUIRED_SAMPLE_FIELDS, "sampled_at", "age_seconds"):
        document[name] = None
    return document


def test_round_trip_keeps_every_field() -> None:
    document = _ok_document()
    parsed = report.from_json(json.dumps(document))
    assert parsed.health is report.Health.OK
    assert json.loads(parsed.to_json()) == document
    assert report.from_json(parsed.to_json()) == parsed


def test_a_report_without_a_sample_has_nulls_not_zeros() -> None:
    parsed = report.from_json(json.dumps(_starting_document()))
    assert parsed.health is report.Health.STARTING
    written = json.loads(parsed.to_json())
    for name in report.REQUIRED_SAMPLE_FIELDS:
        assert written[name] is None


def test_every_field_is_written_even_when_null() -> None:
    written = json.loads(report.from_json(json.dumps(_starting_document())).to_json())
    assert set(written) == set(report.OccupancyReport.model_fields)


def test_health_states_are_the_contracts_four() -> None:
    assert {state.value for state in report.Health} == {
        "ok",
        "starting",
        "unreachable",
        "bad_metrics",
    }


def test_fields_added_within_the_major_version_are_ignored() -> None:
    newer = _ok_document(kv_blocks_by_tier={"hbm": 60}, schema_version="kvscale.dev/occupancy/v1")
    assert report.from_json(json.dumps(newer)) == report.from_json(json.dumps(_ok_document()))


REFUSED = [
    pytest.param("{not json", "not JSON", id="not-json"),
    pytest.param("[1, 2]", "expected a JSON object, got list", id="array"),
    pytest.param(
        json.dumps(_ok_document(schema_version=None)), "schema_version", id="null-version"
    ),
    pytest.param(
        json.dumps({k: v for k, v in _ok_document().items() if k != "schema_version"}),
        "schema_version: missing",
        id="no-version",
    ),
    pytest.param(
        json.dumps(_ok_document(schema_version="kvscale.dev/occupancy/v2")),
        "unsupported major version 'v2' (this reader understands kvscale.dev/occupancy/v1)",
        id="major-v2",
    ),
    pytest.param(
        json.dumps(_ok_document(schema_version="example.com/occupancy/v1")),
        "is not a kvscale.dev/occupancy/<major> version",
        id="other-group",
    ),
    pytest.param(
        json.dumps(_ok_document(num_requests_waiting="70")),
        "num_requests_waiting",
        id="count-as-text",
    ),
    pytest.param(json.dumps(_ok_document(num_gpu_blocks=64.0)), "num_gpu_blocks", id="float-count"),
    pytest.param(json.dumps(_ok_document(usage_ratio=1.5)), "usage_ratio", id="ratio-above-1"),
    pytest.param(json.dumps(_ok_document(usage_ratio=float("nan"))), "usage_ratio", id="ratio-nan"),
    pytest.param(
        json.dumps(_ok_document(preemptions_per_second=-1.0)),
        "preemptions_per_second",
        id="negative-rate",
    ),
    pytest.param(json.dumps(_ok_document(health="fine")), "health", id="unknown-health"),
    pytest.param(json.dumps(_ok_document(pod="")), "pod", id="empty-pod"),
    pytest.param(json.dumps(_ok_document(served_at=None)), "served_at", id="no-served-at"),
    pytest.param(
        json.dumps(_ok_document(num_used_blocks=64)),
        "num_used_blocks: 64 exceeds the usable blocks 63",
        id="more-used-than-usable",
    ),
    pytest.param(
        json.dumps(_ok_document(usage_ratio=None)),
        "usage_ratio: None, but sampled_at is set",
        id="partial-sample",
    ),
    pytest.param(
        json.dumps({**_starting_document(), "health": "ok", "reason": ""}),
        "health: ok needs a sample",
        id="ok-without-sample",
    ),
    pytest.param(
        json.dumps({**_starting_document(), "num_used_blocks": 0}),
        "sampled_at: None, but the report carries sample numbers",
        id="zeros-without-sample",
    ),
    pytest.param(
        json.dumps(_ok_document(health="unreachable", reason="")),
        "reason: empty, but health is unreachable",
        id="bad-health-without-reason",
    ),
]


@pytest.mark.parametrize(("text", "says"), REFUSED)
def test_malformed_reports_are_refused_naming_the_field(text: str, says: str) -> None:
    with pytest.raises(report.ReportError) as caught:
        report.from_json(text)
    assert says in str(caught.value)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(report.ReportError, match="not JSON"):
        report.from_json(b"\xff\xfe{}")


def test_building_a_report_in_python_checks_the_same_rules() -> None:
    with pytest.raises(ValueError, match="reason: empty"):
        report.OccupancyReport(pod="p", health=report.Health.UNREACHABLE, served_at=1.0)
    with pytest.raises(ValueError, match="unsupported major version"):
        report.OccupancyReport(
            schema_version="kvscale.dev/occupancy/v9",
            pod="p",
            health=report.Health.STARTING,
            reason="x",
            served_at=1.0,
        )
