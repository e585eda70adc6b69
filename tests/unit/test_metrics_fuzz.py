"""Fuzzing the exposition parser: random and mutated /metrics text.

Whatever the text, `vllm_metrics.parse` either returns a sample that obeys its invariants or
raises `BadMetricsError`, nothing else; and the sampler turns any such text into a valid report.
Mutations start from a real vLLM capture (tests/data), so they reach deep into the parse.
"""

from __future__ import annotations

import math
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvscale import report
from kvscale_sidecar import sampler, vllm_metrics

CAPTURE = pathlib.Path(__file__).resolve().parent.parent / "data" / "vllm_metrics_loaded.txt"
if not CAPTURE.is_file():
    pytest.fail(
        f"{CAPTURE} is missing: it is a real vLLM /metrics capture saved by `make engine-env`",
        pytrace=False,
    )
REAL = CAPTURE.read_text()
REAL_LINES = REAL.split("\n")
# The lines the parser actually reads, where mutations matter most.
READ_LINES = [
    i
    for i, line in enumerate(REAL_LINES)
    if any(name in line for name in vllm_metrics.REQUIRED + vllm_metrics.OPTIONAL)
]

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

# Characters that matter to the text format, plus anything at all.
_SPECIAL = st.sampled_from([*'{}",= \\\n#\t.-+eE0123456789NaInf:_', "\x00", "\u2028", "é"])
_CHAR = st.one_of(_SPECIAL, st.characters())


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    lines = list(REAL_LINES)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        index = draw(st.sampled_from(READ_LINES)) if draw(st.booleans()) else None
        if index is None:
            index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        index = min(index, len(lines) - 1)
        line = lines[index]
        kind = draw(st.sampled_from(["delete", "duplicate", "replace-char", "insert", "cut"]))
        if kind == "delete":
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, line)
        elif line and kind == "replace-char":
            at = draw(st.integers(min_value=0, max_value=len(line) - 1))
            lines[index] = line[:at] + draw(_CHAR) + line[at + 1 :]
        elif kind == "insert":
            at = draw(st.integers(min_value=0, max_value=len(line)))
            lines[index] = line[:at] + draw(st.text(_CHAR, max_size=8)) + line[at:]
        else:
            lines[index] = line[: draw(st.integers(min_value=0, max_value=len(line)))]
        if not lines:
            break
    text = "\n".join(lines)
    if draw(st.booleans()):
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    return text


def _check_parse(text: str) -> None:
    sample: vllm_metrics.EngineSample | None
    reason = ""
    try:
        sample = vllm_metrics.parse(text)
    except vllm_metrics.BadMetricsError as error:
        reason = error.reason
        sample = None
    if sample is None:
        assert reason
        return
    assert 0.0 <= sample.kv_cache_usage <= 1.0
    assert sample.block_size >= 1
    assert sample.num_gpu_blocks >= 2
    assert 0 <= sample.num_used_blocks <= sample.num_gpu_blocks - 1
    assert sample.num_requests_running >= 0
    assert sample.num_requests_waiting >= 0
    assert sample.num_preemptions >= 0
    for optional in (sample.prefix_cache_queries, sample.prefix_cache_hits):
        assert optional is None or (math.isfinite(optional) and optional >= 0)


def _check_sampler(texts: list[str]) -> None:
    state = sampler.Sampler(
        sampler.Identity("p", None, None, "http://127.0.0.1:8000"), rate_window_seconds=5.0
    )
    for step, text in enumerate(texts):
        state.observe(sampler.Answered(200, text), now=float(step))
        current = state.report(now=step + 0.5)
        # A report that survives its own wire format is a valid one.
        assert report.from_json(current.to_json()) == current
        if current.preemptions_per_second is not None:
            assert current.preemptions_per_second >= 0


@FUZZ
@given(st.text(_CHAR, max_size=400))
def test_random_text_only_ever_raises_bad_metrics(text: str) -> None:
    _check_parse(text)


@FUZZ
@given(_mutated())
def test_mutated_real_text_only_ever_raises_bad_metrics(text: str) -> None:
    _check_parse(text)


@FUZZ
@given(st.lists(st.one_of(_mutated(), st.just(REAL)), min_size=1, max_size=4))
def test_sampler_turns_any_text_into_a_valid_report(texts: list[str]) -> None:
    _check_sampler(texts)
