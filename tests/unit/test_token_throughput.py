"""Token throughput from the engine's counters to the decision's sample.

vLLM's `vllm:prompt_tokens_total` and `vllm:generation_tokens_total` become per-second rates in
the sidecar (surviving counter resets like the preemption rate), travel in the occupancy report
as optional v1 fields, are exported as the sidecar's `kvscale_engine_tokens_per_second`, and
the operator's adapter sums them into `demand.Sample.tokens_per_second`. Engine texts are a real
idle vLLM capture (tests/data) with the counter values a case needs written in, on a
hand-moved clock.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable

import pytest
from prometheus_client import exposition as prom_exposition
from prometheus_client import metrics_core, parser, registry

from kvscale import adapter, report
from kvscale_sidecar import exposition, sampler, vllm_metrics

IDLE_PATH = pathlib.Path(__file__).resolve().parent.parent / "data" / "vllm_metrics_idle.txt"
TOKEN_FIELDS = (
    "prompt_tokens_total",
    "generation_tokens_total",
    "prompt_tokens_per_second",
    "generation_tokens_per_second",
)


def _idle() -> str:
    if not IDLE_PATH.is_file():
        pytest.fail(
            f"{IDLE_PATH} is missing: it is a real vLLM /metrics capture saved by "
            "`make engine-env` (scripts/build-engine-env.sh)",
            pytrace=False,
        )
    return IDLE_PATH.read_text()


def _engine_text(prompt: float | None, generation: float | None, *, started: float = 1000.0) -> str:
    """The idle capture with these counter values; a counter given as None is left out."""
    values = {
        vllm_metrics.PROMPT_TOKENS: prompt,
        vllm_metrics.GENERATION_TOKENS: generation,
        vllm_metrics.PROCESS_START_TIME: started,
    }
    lines = []
    for line in _idle().split("\n"):
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if not line.startswith("#") and name in values:
            value = values[name]
            if value is None:
                continue
            line = f"{line.rsplit(' ', 1)[0]} {float(value)!r}"
        lines.append(line)
    return "\n".join(lines)


def _sampler() -> sampler.Sampler:
    identity = sampler.Identity("engine-0", "ns", None, "http://127.0.0.1:8000")
    return sampler.Sampler(identity, rate_window_seconds=5.0)


def _feed(
    state: sampler.Sampler, scrapes: Iterable[tuple[float, float | None, float | None, float]]
) -> None:
    """Each scrape is (time, prompt counter, generation counter, engine start time)."""
    for at, prompt, generation, started in scrapes:
        state.observe(sampler.Answered(200, _engine_text(prompt, generation, started=started)), at)


# The sidecar: counters to rates.


def test_the_real_capture_carries_both_token_counters() -> None:
    sample = vllm_metrics.parse(_engine_text(3629, 106513))
    assert (sample.prompt_tokens, sample.generation_tokens) == (3629, 106513)
    assert isinstance(sample.prompt_tokens, int)


def test_token_rates_from_counter_deltas() -> None:
    state = _sampler()
    _feed(state, [(0.0, 1000, 50, 1000.0), (0.5, 1400, 150, 1000.0), (1.0, 2200, 350, 1000.0)])
    current = state.report(now=1.0)
    assert current.health is report.Health.OK
    assert current.prompt_tokens_total == 2200
    assert current.generation_tokens_total == 350
    assert current.prompt_tokens_per_second == 1200.0  # (2200 - 1000) / 1.0 s
    assert current.generation_tokens_per_second == 300.0  # (350 - 50) / 1.0 s
    assert current.rate_window_seconds == 1.0


def test_no_token_rate_before_two_samples() -> None:
    state = _sampler()
    _feed(state, [(0.0, 1000, 50, 1000.0)])
    current = state.report(now=0.1)
    assert current.health is report.Health.OK
    assert (current.prompt_tokens_total, current.generation_tokens_total) == (1000, 50)
    assert current.prompt_tokens_per_second is None
    assert current.generation_tokens_per_second is None


def test_a_counter_that_drops_counts_as_a_reset_never_a_negative_rate() -> None:
    state = _sampler()
    # Same start time, but the counters fell: they began again at 0 and reached 300 and 40.
    _feed(state, [(0.0, 5000, 900, 1000.0), (1.0, 5600, 1000, 1000.0), (2.0, 300, 40, 1000.0)])
    current = state.report(now=2.0)
    assert current.prompt_tokens_per_second == 450.0  # (600 + 300) / 2.0 s
    assert current.generation_tokens_per_second == 70.0  # (100 + 40) / 2.0 s
    assert current.prompt_tokens_total == 300


def test_an_engine_restart_resets_the_counters_even_when_they_climbed_past() -> None:
    state = _sampler()
    # A new process (new start time) has counted 9000 prompt tokens since it began; the
    # increase is 9000, not 9000 - 100.
    _feed(state, [(0.0, 100, 10, 1000.0), (1.0, 9000, 800, 2000.0)])
    current = state.report(now=1.0)
    assert current.prompt_tokens_per_second == 9000.0
    assert current.generation_tokens_per_second == 800.0
    assert current.engine_started_at == 2000.0


def test_an_engine_without_the_counters_is_ok_with_no_token_numbers() -> None:
    state = _sampler()
    _feed(state, [(0.0, None, None, 1000.0), (1.0, None, None, 1000.0)])
    current = state.report(now=1.0)
    assert current.health is report.Health.OK
    assert current.reason == ""
    for name in TOKEN_FIELDS:
        assert getattr(current, name) is None, name
    # The other rates are unaffected: the window spans the two samples.
    assert current.rate_window_seconds == 1.0
    assert current.preemptions_per_second == 0.0


def test_an_engine_with_one_counter_reports_that_one() -> None:
    state = _sampler()
    _feed(state, [(0.0, None, 100, 1000.0), (0.5, None, 160, 1000.0)])
    current = state.report(now=0.5)
    assert current.health is report.Health.OK
    assert current.prompt_tokens_total is None
    assert current.prompt_tokens_per_second is None
    assert current.generation_tokens_total == 160
    assert current.generation_tokens_per_second == 120.0  # 60 / 0.5 s


def test_a_counter_that_vanishes_starts_its_rate_afresh_when_it_returns() -> None:
    state = _sampler()
    _feed(state, [(0.0, 1000, 10, 1000.0), (1.0, 2000, 20, 1000.0), (2.0, None, 30, 1000.0)])
    assert state.report(now=2.0).prompt_tokens_per_second is None
    _feed(state, [(3.0, 2500, 40, 1000.0)])
    assert state.report(now=3.0).prompt_tokens_per_second is None  # one sample since it came back
    _feed(state, [(3.5, 2600, 50, 1000.0)])
    current = state.report(now=3.5)
    assert current.prompt_tokens_per_second == 200.0  # 100 / 0.5 s
    assert current.generation_tokens_per_second == 40.0 / 3.5  # 40 over the whole span


@pytest.mark.parametrize(
    ("prompt", "says"),
    [(10.5, "10.5 is not a whole number"), (-3.0, "-3.0 is not a finite number >= 0")],
    ids=["fraction", "negative"],
)
def test_a_garbled_token_counter_is_bad_metrics_naming_it(prompt: float, says: str) -> None:
    with pytest.raises(vllm_metrics.BadMetricsError) as caught:
        vllm_metrics.parse(_engine_text(prompt, 0))
    assert caught.value.metric == vllm_metrics.PROMPT_TOKENS
    assert says in caught.value.reason
    state = _sampler()
    state.observe(sampler.Answered(200, _engine_text(prompt, 0)), now=1.0)
    assert state.health is report.Health.BAD_METRICS
    assert vllm_metrics.PROMPT_TOKENS in state.reason


# The report: optional v1 fields.


def _two_samples() -> report.OccupancyReport:
    state = _sampler()
    _feed(state, [(0.0, 1000, 50, 1000.0), (1.0, 2200, 350, 1000.0)])
    return state.report(now=1.25)


def test_the_token_fields_are_optional_not_required() -> None:
    assert not set(TOKEN_FIELDS) & set(report.REQUIRED_SAMPLE_FIELDS)
    for name in TOKEN_FIELDS:
        assert report.OccupancyReport.model_fields[name].default is None, name


def test_a_report_with_the_token_fields_round_trips() -> None:
    current = _two_samples()
    written = json.loads(current.to_json())
    assert {name: written[name] for name in TOKEN_FIELDS} == {
        "prompt_tokens_total": 2200,
        "generation_tokens_total": 350,
        "prompt_tokens_per_second": 1200.0,
        "generation_tokens_per_second": 300.0,
    }
    assert report.from_json(current.to_json()) == current


def test_an_older_report_without_the_token_fields_still_parses() -> None:
    current = _two_samples()
    older = json.loads(current.to_json())
    for name in TOKEN_FIELDS:
        del older[name]
    parsed = report.from_json(json.dumps(older))
    assert parsed.health is report.Health.OK
    assert parsed == current.model_copy(update=dict.fromkeys(TOKEN_FIELDS))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("prompt_tokens_per_second", -1.0),
        ("generation_tokens_per_second", float("nan")),
        ("prompt_tokens_total", 5.0),  # a count is an integer on this wire
        ("generation_tokens_total", -1),
    ],
)
def test_bad_token_fields_are_refused_naming_the_field(name: str, value: float) -> None:
    document = json.loads(_two_samples().to_json())
    document[name] = value
    with pytest.raises(report.ReportError, match=name):
        report.from_json(json.dumps(document))


# The sidecar's own /metrics.


class _Fixed(registry.Collector):
    def __init__(self, current: report.OccupancyReport) -> None:
        self._current = current

    def collect(self) -> Iterable[metrics_core.Metric]:
        return exposition.families(self._current, {"ok": 1})


def _token_series(current: report.OccupancyReport) -> dict[str, float] | None:
    metrics = registry.CollectorRegistry()
    metrics.register(_Fixed(current))
    text = prom_exposition.generate_latest(metrics).decode()
    for family in parser.text_string_to_metric_families(text):
        if family.name == "kvscale_engine_tokens_per_second":
            assert family.type == "gauge"
            return {sample.labels["kind"]: sample.value for sample in family.samples}
    return None


def test_the_sidecar_exports_the_token_rates_by_kind() -> None:
    assert _token_series(_two_samples()) == {"prompt": 1200.0, "generation": 300.0}


def test_an_unknown_token_rate_has_no_series() -> None:
    state = _sampler()
    _feed(state, [(0.0, 1000, 50, 1000.0)])
    assert _token_series(state.report(now=0.0)) is None
    _feed(state, [(1.0, None, 90, 1000.0)])
    _feed(state, [(2.0, None, 100, 1000.0)])
    assert _token_series(state.report(now=2.0)) == {"generation": 25.0}  # 50 / 2.0 s
    state.observe(sampler.Unhealthy(503, "GET /health answered HTTP 503"), now=3.0)
    assert _token_series(state.report(now=3.0)) is None  # not ok: no stale engine numbers


# The operator's adapter: the decision's sample.


@pytest.mark.parametrize(
    ("prompt", "generation", "total"),
    [
        (1200.0, 300.0, 1500.0),
        (1200.0, None, 1200.0),
        (None, 300.0, 300.0),
        (0.0, 0.0, 0.0),
        (None, None, None),
    ],
    ids=["both", "prompt-only", "generation-only", "idle", "neither"],
)
def test_the_adapter_sums_the_rates_it_has(
    prompt: float | None, generation: float | None, total: float | None
) -> None:
    current = _two_samples().model_copy(
        update={"prompt_tokens_per_second": prompt, "generation_tokens_per_second": generation}
    )
    found = adapter.sample(adapter.Received(current, received_at=10.0))
    assert found is not None
    assert found.tokens_per_second == total


def test_from_engine_counters_to_the_decisions_sample() -> None:
    found = adapter.sample(adapter.Received(_two_samples(), received_at=10.0))
    assert found is not None
    assert found.tokens_per_second == 1500.0  # 1200 prompt + 300 generated tokens per second
    assert found.time == 9.75  # the report was 0.25 s old when it arrived


def test_token_rates_span_the_throughput_window_not_the_preemption_window() -> None:
    identity = sampler.Identity("engine-0", "ns", None, "http://127.0.0.1:8000")
    state = sampler.Sampler(identity, rate_window_seconds=1.0, throughput_window_seconds=3.0)
    _feed(
        state,
        [
            (0.0, 0, 0, 1000.0),
            (1.0, 3000, 300, 1000.0),
            (2.0, 3000, 300, 1000.0),
            (3.0, 3000, 600, 1000.0),
        ],
    )
    current = state.report(now=3.0)
    # Over 3 s: a burst of 3,000 prompt tokens in the first second still counts.
    assert current.prompt_tokens_per_second == 1000.0
    assert current.generation_tokens_per_second == 200.0
    assert current.throughput_window_seconds == 3.0
    assert current.rate_window_seconds == 1.0
