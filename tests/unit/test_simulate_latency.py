"""Latency percentiles, SLO attainment, and requests cut to fit the model's context."""

from __future__ import annotations

import math

import pytest

from kvscale import trace
from kvscale.simulate import latency, simulation


def test_slo_attainment_needs_both_targets() -> None:
    recorder = latency.Recorder()
    for ttft, itl in [(0.5, 0.05), (3.0, 0.05), (0.5, 0.2), (1.9, 0.1)]:
        recorder.finished(ttft, itl)
    summary = recorder.summary(latency.Slo(ttft_s=2.0, itl_s=0.1))
    assert summary.num_requests == 4
    assert summary.slo_attainment == 0.5
    assert (summary.ttft_attainment, summary.itl_attainment) == (0.75, 0.75)
    assert (summary.ttft_p50_s, summary.ttft_p99_s) == (0.5, 3.0)


def test_token_gap_percentiles_are_within_a_bin() -> None:
    recorder = latency.Recorder()
    recorder.gaps([(0.010, 98), (0.250, 2)])
    assert recorder.itl_percentile(50) == pytest.approx(0.010, rel=0.012)
    assert recorder.itl_percentile(99) == pytest.approx(0.250, rel=0.012)
    assert math.isnan(latency.Recorder().itl_percentile(50))


def test_an_empty_run_has_no_attainment() -> None:
    summary = latency.Recorder().summary(latency.Slo())
    assert summary.num_requests == 0
    assert math.isnan(summary.slo_attainment)


@pytest.mark.parametrize(
    ("prompt", "output", "expected"),
    [
        (100, 50, (100, 50)),
        (8000, 500, (7692, 500)),  # the prompt is cut, the output kept
        (10, 9000, (1, 8191)),
    ],
)
def test_requests_are_cut_to_the_context(
    prompt: int, output: int, expected: tuple[int, int]
) -> None:
    assert simulation.fit(trace.TraceRequest(0.0, prompt, output), 8192) == expected


def test_slo_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="itl_s = 0"):
        latency.Slo(itl_s=0)
