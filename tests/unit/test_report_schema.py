"""The occupancy report's wire format: round trips, versioning, and refusal of malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvscale import histogram, report


def _latency_window(**changes: Any) -> dict[str, Any]:
    window: dict[str, Any] = {
        "window_seconds": 29.75,
        "count": 20,
        "sum_seconds": 9.5,
        "p50": 0.4,
        "p90": 0.9,
        "p99": 0.99,
        "bucket_bounds": [0.25, 0.5, 1.0],
        "bucket_counts": [4, 15, 20],
    }
    window.update(changes)
    return window


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
        "scrape_status": "slow",
        "scrape_seconds": 0.6,
        "missed_scrapes": 0,
        "scrape_detail": "the engine answered after 0.6 s, more than the poll interval 0.25 s",
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
        "time_to_first_token": _latency_window(),
        "inter_token_latency": None,
        "request_queue_time": _latency_window(
            p50=None, p90=None, p99=None, count=0, sum_seconds=0.0, bucket_counts=[0, 0, 0]
        ),
        "time_per_output_token": _latency_window(),
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


REFUSED += [
    pytest.param(
        json.dumps(_ok_document(time_to_first_token=_latency_window(bucket_counts=[4, 3, 20]))),
        "time_to_first_token: Value error, bucket_bounds, bucket_counts, count",
        id="latency-counts-not-cumulative",
    ),
    pytest.param(
        json.dumps(_ok_document(time_to_first_token=_latency_window(count=19))),
        "time_to_first_token",
        id="latency-count-below-buckets",
    ),
    pytest.param(
        json.dumps(_ok_document(time_to_first_token=_latency_window(bucket_counts=[4, 15]))),
        "one per bound",
        id="latency-buckets-short",
    ),
    pytest.param(
        json.dumps(
            _ok_document(inter_token_latency=_latency_window(count=0, bucket_counts=[0] * 3))
        ),
        "p50, p90, p99: set, but count is 0",
        id="latency-quantiles-without-observations",
    ),
    pytest.param(
        json.dumps(_ok_document(request_queue_time=_latency_window(window_seconds=0.0))),
        "request_queue_time.window_seconds",
        id="latency-empty-window",
    ),
]

REFUSED += [
    pytest.param(
        json.dumps(_ok_document(scrape_status="late")), "scrape_status", id="unknown-scrape-status"
    ),
    pytest.param(
        json.dumps(_ok_document(scrape_status="missed", missed_scrapes=0)),
        "missed_scrapes: 0, but scrape_status is missed",
        id="missed-without-a-count",
    ),
    pytest.param(
        json.dumps(_ok_document(scrape_status="on_time", missed_scrapes=2)),
        "missed_scrapes: 2, but scrape_status is on_time",
        id="count-without-a-miss",
    ),
    pytest.param(
        json.dumps(_ok_document(missed_scrapes=-1)), "missed_scrapes", id="negative-misses"
    ),
]


def test_a_latency_window_reads_back_as_the_histogram_it_came_from() -> None:
    increase = histogram.Histogram.of((0.1, 0.5, 1.0), [0.05, 0.2, 0.3, 0.7, 3.0])
    window = report.LatencyWindow.of(histogram.Change(increase, 30.0))
    assert window.as_histogram() == increase
    assert window.count == 5
    assert window.p50 == histogram.quantile(0.5, increase)
    assert window.p99 == 1.0  # past the last bound: "at least 1 s"
    document = _ok_document(time_to_first_token=json.loads(window.model_dump_json()))
    assert report.from_json(json.dumps(document)).time_to_first_token == window


def test_a_report_from_before_the_latency_fields_still_reads() -> None:
    older = {
        k: v
        for k, v in _ok_document().items()
        if k
        not in (
            "time_to_first_token",
            "inter_token_latency",
            "request_queue_time",
            "time_per_output_token",
        )
    }
    parsed = report.from_json(json.dumps(older))
    assert parsed.time_to_first_token is None
    assert parsed.request_queue_time is None
    assert parsed.time_per_output_token is None


def test_a_report_from_before_the_scrape_fields_still_reads() -> None:
    scrape_fields = ("scrape_status", "scrape_seconds", "missed_scrapes", "scrape_detail")
    older = {k: v for k, v in _ok_document().items() if k not in scrape_fields}
    parsed = report.from_json(json.dumps(older))
    assert all(getattr(parsed, name) is None for name in scrape_fields)


def test_a_missed_scrape_inside_the_grace_is_an_ok_report_with_an_older_sample() -> None:
    # What a sidecar serves between one lost answer and the verdict: health is still the last
    # answer's, the sample is dated, and the miss is said in the fields an older reader skips.
    document = _ok_document(
        scrape_status="missed",
        scrape_seconds=1.0,
        missed_scrapes=2,
        scrape_detail="GET http://10.0.0.7:8000/metrics: no answer within 1 s",
        served_at=1_800_000_002.5,
        age_seconds=2.5,
    )
    parsed = report.from_json(json.dumps(document))
    assert parsed.health is report.Health.OK
    assert parsed.scrape_status is report.ScrapeStatus.MISSED
    assert json.loads(parsed.to_json()) == document


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
