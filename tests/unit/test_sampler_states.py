"""The sidecar's state machine: scrape outcomes in, occupancy reports out, on a hand-moved clock.

Engine texts are a real idle vLLM capture (tests/data) with the values a case needs written in.
"""

from __future__ import annotations

import pathlib

import pytest

from kvscale import report
from kvscale_sidecar import sampler, settings, vllm_metrics

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"
IDLE_PATH = DATA / "vllm_metrics_idle.txt"
URL = "http://127.0.0.1:8000"
GRACE = settings.DEFAULT_UNREACHABLE_AFTER


def _idle() -> str:
    if not IDLE_PATH.is_file():
        pytest.fail(
            f"{IDLE_PATH} is missing: it is a real vLLM /metrics capture saved by "
            "`make engine-env` (scripts/build-engine-env.sh)",
            pytrace=False,
        )
    return IDLE_PATH.read_text()


def _engine_text(
    *,
    usage: float = 0.0,
    running: float = 0,
    waiting: float = 0,
    preemptions: float = 0,
    started: float = 1000.0,
    queries: float = 0.0,
    hits: float = 0.0,
) -> str:
    values = {
        vllm_metrics.KV_CACHE_USAGE: usage,
        vllm_metrics.NUM_REQUESTS_RUNNING: running,
        vllm_metrics.NUM_REQUESTS_WAITING: waiting,
        vllm_metrics.NUM_PREEMPTIONS: preemptions,
        vllm_metrics.PROCESS_START_TIME: started,
        vllm_metrics.PREFIX_CACHE_QUERIES: queries,
        vllm_metrics.PREFIX_CACHE_HITS: hits,
    }
    lines = []
    for line in _idle().split("\n"):
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if not line.startswith("#") and name in values:
            line = f"{line.rsplit(' ', 1)[0]} {float(values[name])!r}"
        lines.append(line)
    return "\n".join(lines)


def _num_gpu_blocks() -> int:
    return vllm_metrics.parse(_idle()).num_gpu_blocks


def _sampler(model: str | None = None) -> sampler.Sampler:
    identity = sampler.Identity(pod="engine-0", namespace="ns", model=model, engine_url=URL)
    return sampler.Sampler(identity, rate_window_seconds=5.0)


def _ok(**values: float) -> sampler.Answered:
    return sampler.Answered(200, _engine_text(**values))


REFUSED = sampler.Refused(f"GET {URL}/health: connection refused")
TIMED_OUT = sampler.TimedOut(f"GET {URL}/metrics: no answer within 0.2 s")
HEALTH_503 = sampler.Unhealthy(503, f"GET {URL}/health answered HTTP 503")


def test_before_any_scrape_the_report_is_starting_with_no_numbers() -> None:
    current = _sampler().report(now=100.0)
    assert current.health is report.Health.STARTING
    assert current.reason
    assert current.sampled_at is None
    assert current.age_seconds is None
    for name in report.REQUIRED_SAMPLE_FIELDS:
        assert getattr(current, name) is None


@pytest.mark.parametrize(
    "outcome", [REFUSED, TIMED_OUT, HEALTH_503], ids=["refused", "timeout", "503"]
)
def test_engine_not_up_yet_is_starting(outcome: sampler.Outcome) -> None:
    state = _sampler()
    assert state.observe(outcome, now=1.0) is report.Health.STARTING
    current = state.report(now=1.5)
    assert current.health is report.Health.STARTING
    assert current.reason == outcome.detail
    assert current.checked_at == 1.0
    assert current.num_used_blocks is None


@pytest.mark.parametrize(
    ("outcome", "reports", "says"),
    [
        (REFUSED, GRACE, f"({GRACE} scrapes in a row without an answer)"),
        (TIMED_OUT, GRACE, f"({GRACE} scrapes in a row without an answer)"),
        # vLLM's 503 is an answer (its engine is not serving): no grace.
        (HEALTH_503, 1, ""),
    ],
    ids=["refused", "timeout", "503"],
)
def test_engine_gone_after_it_was_up_is_unreachable_and_the_sample_ages(
    outcome: sampler.Outcome, reports: int, says: str
) -> None:
    state = _sampler()
    state.observe(_ok(usage=0.5, running=3), now=10.0)
    for step in range(1, reports):
        assert state.observe(outcome, now=10.0 + 0.25 * step) is report.Health.OK
    assert state.observe(outcome, now=10.0 + 0.25 * reports) is report.Health.UNREACHABLE
    early = state.report(now=11.0)
    late = state.report(now=20.0)
    assert early.health is late.health is report.Health.UNREACHABLE
    assert early.reason.startswith(outcome.detail)
    assert says in early.reason
    # The last good numbers stay, dated; they never turn into zeros.
    assert early.sampled_at == late.sampled_at == 10.0
    assert early.age_seconds == pytest.approx(1.0)
    assert late.age_seconds == pytest.approx(10.0)
    assert late.usage_ratio == 0.5
    assert late.num_requests_running == 3


def test_ok_report_carries_the_sample() -> None:
    state = _sampler()
    usage = 40 / (_num_gpu_blocks() - 1)
    state.observe(_ok(usage=usage, running=4, waiting=9, preemptions=12), now=50.0)
    current = state.report(now=50.1)
    assert current.health is report.Health.OK
    assert current.reason == ""
    assert current.pod == "engine-0"
    assert current.namespace == "ns"
    assert current.engine_url == URL
    assert current.sampled_at == 50.0
    assert current.age_seconds == pytest.approx(0.1)
    assert current.num_gpu_blocks == _num_gpu_blocks()
    assert current.usage_ratio == usage
    assert current.num_used_blocks == 40
    assert (
        current.kv_capacity_tokens
        == (_num_gpu_blocks() - 1) * vllm_metrics.parse(_idle()).block_size
    )
    assert current.num_requests_running == 4
    assert current.num_requests_waiting == 9
    assert current.preemptions_total == 12
    assert current.preemptions_per_second is None  # one sample: no rate yet
    assert current.engine_started_at == 1000.0


def test_model_comes_from_the_engine_unless_configured() -> None:
    engine_label = vllm_metrics.parse(_idle()).model_name
    discovered = _sampler()
    discovered.observe(_ok(), now=1.0)
    configured = _sampler(model="served-name")
    configured.observe(_ok(), now=1.0)
    assert discovered.report(now=1.0).model == engine_label
    assert configured.report(now=1.0).model == "served-name"


def test_preemption_rate_from_counter_deltas() -> None:
    state = _sampler()
    for at, total in [(0.0, 100), (0.25, 105), (0.5, 112), (0.75, 120)]:
        state.observe(_ok(preemptions=total), now=at)
    current = state.report(now=0.8)
    assert current.preemptions_per_second == pytest.approx(20 / 0.75)
    assert current.rate_window_seconds == pytest.approx(0.75)
    assert current.preemptions_total == 120


def test_engine_restart_resets_counters_and_the_rate_stays_sane() -> None:
    state = _sampler()
    for at, total in [(0.0, 2000), (0.25, 2010), (0.5, 2020)]:
        state.observe(_ok(preemptions=total, started=1000.0), now=at)
    for _ in range(GRACE):
        state.observe(REFUSED, now=0.75)
    assert state.report(now=0.75).health is report.Health.UNREACHABLE
    # The new engine process (new start time) has counted 0 preemptions, then 6.
    state.observe(_ok(preemptions=0, started=1001.0), now=1.0)
    after_restart = state.report(now=1.0)
    assert after_restart.health is report.Health.OK
    assert after_restart.preemptions_total == 0
    assert after_restart.engine_started_at == 1001.0
    assert after_restart.preemptions_per_second == pytest.approx(20 / 1.0)
    state.observe(_ok(preemptions=6, started=1001.0), now=1.25)
    later = state.report(now=1.25)
    assert later.preemptions_per_second == pytest.approx(26 / 1.25)


def test_restart_detected_by_start_time_even_when_the_counter_climbed_past() -> None:
    state = _sampler()
    state.observe(_ok(preemptions=10, started=1000.0), now=0.0)
    state.observe(_ok(preemptions=30, started=2000.0), now=1.0)
    # 30 preemptions since the new process began, not 30 - 10.
    assert state.report(now=1.0).preemptions_per_second == pytest.approx(30.0)


def test_prefix_hit_ratio_over_the_window_and_none_without_queries() -> None:
    state = _sampler()
    state.observe(_ok(queries=1000, hits=500), now=0.0)
    state.observe(_ok(queries=1000, hits=500), now=0.25)
    assert state.report(now=0.25).prefix_cache_hit_ratio is None
    state.observe(_ok(queries=1400, hits=800), now=0.5)
    assert state.report(now=0.5).prefix_cache_hit_ratio == pytest.approx(300 / 400)


BAD_ANSWERS = [
    pytest.param(
        sampler.Answered(200, "<html>oops</html>"), vllm_metrics.KV_CACHE_USAGE, id="garbage"
    ),
    pytest.param(
        sampler.Answered(500, None, "GET /metrics answered HTTP 500"), "HTTP 500", id="500"
    ),
    pytest.param(
        sampler.Answered(200, None, "GET /metrics: body is not UTF-8"), "UTF-8", id="bytes"
    ),
    pytest.param(
        sampler.Unhealthy(404, "GET /health answered HTTP 404"), "HTTP 404", id="health-404"
    ),
]


@pytest.mark.parametrize(("outcome", "says"), BAD_ANSWERS)
def test_bad_answers_are_bad_metrics_and_never_zeros(outcome: sampler.Outcome, says: str) -> None:
    fresh = _sampler()
    fresh.observe(outcome, now=1.0)
    current = fresh.report(now=1.0)
    assert current.health is report.Health.BAD_METRICS
    assert says in current.reason
    assert current.usage_ratio is None
    assert current.num_used_blocks is None


def test_bad_metrics_after_good_keeps_the_last_good_numbers() -> None:
    state = _sampler()
    state.observe(_ok(usage=1.0, waiting=7), now=1.0)
    renamed = _engine_text().replace(vllm_metrics.NUM_REQUESTS_WAITING, "vllm:num_requests_queued")
    state.observe(sampler.Answered(200, renamed), now=2.0)
    current = state.report(now=3.0)
    assert current.health is report.Health.BAD_METRICS
    assert vllm_metrics.NUM_REQUESTS_WAITING in current.reason
    assert current.sampled_at == 1.0
    assert current.age_seconds == pytest.approx(2.0)
    assert current.num_requests_waiting == 7
    assert current.usage_ratio == 1.0


def test_recovery_to_ok() -> None:
    state = _sampler()
    state.observe(_ok(), now=1.0)
    state.observe(TIMED_OUT, now=2.0)
    state.observe(_ok(running=2), now=3.0)
    current = state.report(now=3.0)
    assert current.health is report.Health.OK
    assert current.reason == ""
    assert current.num_requests_running == 2


def test_outcomes_are_counted_by_kind() -> None:
    state = _sampler()
    outcomes: list[sampler.Outcome] = [
        REFUSED,
        REFUSED,
        HEALTH_503,
        _ok(),
        TIMED_OUT,
        sampler.Failed("reset"),
    ]
    for outcome in outcomes:
        state.observe(outcome, now=1.0)
    state.observe(sampler.Answered(200, "junk"), now=2.0)
    assert state.outcome_counts == {
        "ok": 1,
        "bad_metrics": 1,
        "refused": 2,
        "timeout": 1,
        "failed": 1,
        "unhealthy": 1,
    }


def test_age_is_never_negative_when_the_clock_steps_back() -> None:
    state = _sampler()
    state.observe(_ok(), now=100.0)
    assert state.report(now=99.0).age_seconds == 0.0


def test_reports_round_trip_through_the_wire_format() -> None:
    state = _sampler()
    state.observe(_ok(usage=0.5, preemptions=1), now=1.0)
    state.observe(_ok(usage=0.5, preemptions=3), now=1.25)
    state.observe(REFUSED, now=1.5)
    current = state.report(now=2.0)
    assert report.from_json(current.to_json()) == current
