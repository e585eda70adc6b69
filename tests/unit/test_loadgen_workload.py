"""The demo's workload: a trace slice, compressed and scaled to the engine; exact-length prompts."""

from __future__ import annotations

from typing import Any

import pytest

from kvscale import trace
from kvscale.loadgen import workload

TRACE = [
    trace.TraceRequest(0.0, 100, 10),
    trace.TraceRequest(5.0, 3000, 900),
    trace.TraceRequest(10.0, 400, 40),
    trace.TraceRequest(20.0, 50, 5),
    trace.TraceRequest(30.0, 80, 8),
]


def _plan(**changes: Any) -> workload.Plan:
    settings: dict[str, Any] = {
        "start_s": 5.0,
        "duration_s": 10.0,
        "time_factor": 2.0,
        "token_factor": 0.5,
        "max_prompt": 1000,
        "max_output": 300,
    }
    settings.update(changes)
    return workload.Plan(**settings)


def test_slice_is_compressed_and_scaled() -> None:
    # 20 trace seconds from 5 s, twice as fast: arrivals 5, 10, 20 -> 0, 2.5, 7.5 wall seconds.
    found = workload.requests(TRACE, _plan())
    assert found == [
        trace.TraceRequest(0.0, 1000, 300),  # 1500 and 450, clamped
        trace.TraceRequest(2.5, 200, 20),
        trace.TraceRequest(7.5, 25, 2),
    ]


def test_empty_slice_is_an_error_naming_the_start() -> None:
    with pytest.raises(ValueError, match="start_s = 100"):
        workload.requests(TRACE, _plan(start_s=100.0))


PLAN_ERRORS = [
    pytest.param({"start_s": -1.0}, "start_s", id="negative-start"),
    pytest.param({"duration_s": 0.0}, "duration_s", id="no-duration"),
    pytest.param({"time_factor": float("inf")}, "time_factor", id="infinite-factor"),
    pytest.param({"token_factor": -0.5}, "token_factor", id="negative-tokens"),
    pytest.param({"max_prompt": 0}, "max_prompt", id="no-prompt-room"),
    pytest.param({"max_output": 0}, "max_output", id="no-output-room"),
]


@pytest.mark.parametrize(("change", "field"), PLAN_ERRORS)
def test_plan_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _plan(**change)


def test_shape_describes_the_load() -> None:
    shape = workload.shape(workload.requests(TRACE, _plan()), 10.0)
    assert (shape.count, shape.rate_per_s, shape.max_tokens) == (3, 0.3, 1300)
    assert shape.mean_prompt == pytest.approx((1000 + 200 + 25) / 3)
    assert workload.shape([], 10.0).count == 0


def test_prompt_ids_are_exact_ordinary_and_reproducible() -> None:
    ids = workload.prompt_ids(7, 1500, first_id=3, vocab_size=320, seed=1)
    assert len(ids) == 1500
    assert min(ids) >= 3
    assert max(ids) < 320
    assert ids == workload.prompt_ids(7, 1500, first_id=3, vocab_size=320, seed=1)
    # Another request gets another prompt: no accidental shared prefix for the prefix cache.
    other = workload.prompt_ids(8, 1500, first_id=3, vocab_size=320, seed=1)
    assert ids[:32] != other[:32]


@pytest.mark.parametrize(
    ("length", "first_id", "field"),
    [pytest.param(0, 3, "length", id="empty"), pytest.param(5, 320, "first_id", id="no-vocab")],
)
def test_prompt_ids_refuse_bad_arguments(length: int, first_id: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        workload.prompt_ids(0, length, first_id=first_id, vocab_size=320, seed=0)
