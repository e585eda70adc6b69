"""A slow answer is not a dead engine: the sidecar's grace of missed scrapes, on a hand-moved clock.

Tables walk the sampler through sequences of scrape outcomes; property tests drive it with the
poll loop's own schedule (`sampler.next_start`) against an engine that answers slowly, then
dies or hangs, and check the stated bound (`Settings.unreachable_within`) on the fake clock.
"""

from __future__ import annotations

import itertools
import pathlib

import hypothesis
import pytest
from hypothesis import strategies as st

from kvscale import report
from kvscale_sidecar import sampler, settings

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"
IDLE_PATH = DATA / "vllm_metrics_idle.txt"
URL = "http://127.0.0.1:8000"
POLL = 0.25

OK = report.Health.OK
STARTING = report.Health.STARTING
UNREACHABLE = report.Health.UNREACHABLE
BAD = report.Health.BAD_METRICS
ON_TIME = report.ScrapeStatus.ON_TIME
SLOW = report.ScrapeStatus.SLOW
MISSED = report.ScrapeStatus.MISSED


def _idle() -> str:
    if not IDLE_PATH.is_file():
        pytest.fail(f"{IDLE_PATH} is missing; `make engine-env` saves it", pytrace=False)
    return IDLE_PATH.read_text()


def _sampler(unreachable_after: int = 3) -> sampler.Sampler:
    identity = sampler.Identity(pod="engine-0", namespace="ns", model=None, engine_url=URL)
    return sampler.Sampler(
        identity, 5.0, unreachable_after=unreachable_after, slow_after_seconds=POLL
    )


# One scrape: what the engine did and how long the scrape took.
_STEPS: dict[str, tuple[sampler.Outcome, float]] = {
    "ok": (sampler.Answered(200, ""), 0.01),
    "slow": (sampler.Answered(200, ""), 0.6),
    "timeout": (sampler.TimedOut(f"GET {URL}/metrics: no answer within 1 s"), 1.0),
    "refused": (sampler.Refused(f"GET {URL}/health: connection refused"), 0.001),
    "reset": (sampler.Failed(f"GET {URL}/metrics: ServerDisconnectedError"), 0.002),
    "503": (sampler.Unhealthy(503, f"GET {URL}/health answered HTTP 503"), 0.003),
    "garbage": (sampler.Answered(200, "<html>502</html>"), 0.01),
}


def _outcome(step: str) -> tuple[sampler.Outcome, float]:
    outcome, took = _STEPS[step]
    if isinstance(outcome, sampler.Answered) and outcome.text == "":
        return sampler.Answered(200, _idle()), took
    return outcome, took


# Each row: the scrapes in order, and after each one (health, scrape_status, missed_scrapes).
SEQUENCES = [
    pytest.param(
        ["ok", "timeout", "ok"],
        [(OK, ON_TIME, 0), (OK, MISSED, 1), (OK, ON_TIME, 0)],
        id="one-lost-answer-is-no-verdict",
    ),
    pytest.param(
        ["ok", "slow", "slow", "slow", "slow"],
        [(OK, ON_TIME, 0)] + [(OK, SLOW, 0)] * 4,
        id="slow-answers-are-samples",
    ),
    pytest.param(
        ["ok", "timeout", "timeout", "timeout", "timeout", "ok"],
        [
            (OK, ON_TIME, 0),
            (OK, MISSED, 1),
            (OK, MISSED, 2),
            (UNREACHABLE, MISSED, 3),
            (UNREACHABLE, MISSED, 4),
            (OK, ON_TIME, 0),
        ],
        id="hung-after-three-in-a-row",
    ),
    pytest.param(
        ["ok", "refused", "refused", "refused"],
        [(OK, ON_TIME, 0), (OK, MISSED, 1), (OK, MISSED, 2), (UNREACHABLE, MISSED, 3)],
        id="dead-after-three-in-a-row",
    ),
    pytest.param(
        ["ok", "timeout", "slow", "timeout", "timeout", "slow", "refused", "reset"],
        [
            (OK, ON_TIME, 0),
            (OK, MISSED, 1),
            (OK, SLOW, 0),
            (OK, MISSED, 1),
            (OK, MISSED, 2),
            (OK, SLOW, 0),
            (OK, MISSED, 1),
            (OK, MISSED, 2),
        ],
        id="misses-that-never-reach-three-in-a-row",
    ),
    pytest.param(
        ["ok", "timeout", "refused", "reset"],
        [(OK, ON_TIME, 0), (OK, MISSED, 1), (OK, MISSED, 2), (UNREACHABLE, MISSED, 3)],
        id="any-mix-of-misses-counts",
    ),
    pytest.param(
        ["ok", "503"], [(OK, ON_TIME, 0), (UNREACHABLE, ON_TIME, 0)], id="503-is-an-answer"
    ),
    pytest.param(
        ["ok", "garbage", "timeout", "ok"],
        [(OK, ON_TIME, 0), (BAD, ON_TIME, 0), (BAD, MISSED, 1), (OK, ON_TIME, 0)],
        id="a-miss-keeps-the-last-answers-verdict",
    ),
    pytest.param(
        ["refused", "timeout", "ok"],
        [(STARTING, MISSED, 1), (STARTING, MISSED, 2), (OK, ON_TIME, 0)],
        id="never-up-is-starting-without-grace",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), SEQUENCES)
def test_health_scrape_status_and_misses_after_each_scrape(
    steps: list[str], expected: list[tuple[report.Health, report.ScrapeStatus, int]]
) -> None:
    state = _sampler()
    now = 100.0
    seen = []
    for step in steps:
        outcome, took = _outcome(step)
        now += max(POLL, took)
        state.observe(outcome, now, took)
        current = state.report(now)
        seen.append((current.health, current.scrape_status, current.missed_scrapes))
    assert seen == expected


def test_inside_the_grace_the_report_keeps_the_last_sample_growing_older() -> None:
    state = _sampler()
    state.observe(sampler.Answered(200, _idle()), 10.0, 0.01)
    outcome, took = _outcome("timeout")
    state.observe(outcome, 11.0, took)
    current = state.report(now=11.5)
    assert current.health is OK
    assert current.reason == ""
    assert current.sampled_at == 10.0
    assert current.age_seconds == pytest.approx(1.5)
    assert current.scrape_detail == outcome.detail
    assert current.scrape_seconds == 1.0


def test_a_slow_answer_says_how_slow_and_is_the_new_sample() -> None:
    state = _sampler()
    state.observe(sampler.Answered(200, _idle()), 10.0, 0.6)
    current = state.report(now=10.0)
    assert current.health is OK
    assert current.sampled_at == 10.0
    assert current.scrape_status is SLOW
    assert current.scrape_detail == (
        "the engine answered after 0.6 s, more than the poll interval 0.25 s"
    )


def test_the_verdict_names_the_last_failure_and_the_count() -> None:
    state = _sampler(unreachable_after=2)
    state.observe(sampler.Answered(200, _idle()), 1.0)
    state.observe(sampler.TimedOut("GET /metrics: no answer within 1 s"), 2.0, 1.0)
    state.observe(sampler.Refused("GET /health: connection refused"), 2.3, 0.001)
    assert state.reason == (
        "GET /health: connection refused (2 scrapes in a row without an answer)"
    )


def test_no_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="unreachable_after = 0, must be at least 1"):
        _sampler(unreachable_after=0)


@pytest.mark.parametrize(
    ("due", "ended", "expected"),
    [
        (10.0, 10.01, 10.25),  # on time: one interval after the last start was due
        (10.0, 10.25, 10.25),
        (10.0, 11.0, 11.0),  # late: at once, never two scrapes at a time
    ],
)
def test_the_next_scrape_starts_an_interval_after_the_last_or_at_once_when_late(
    due: float, ended: float, expected: float
) -> None:
    assert sampler.next_start(due, POLL, ended) == expected


# The bound, on the loop's own schedule. The engine answers (on time or slowly, within the
# deadline) until `fails_at`, then is dead (each scrape fails at once) or hung (each scrape
# runs the whole deadline). A scrape in flight at `fails_at` fails too.


@st.composite
def _runs(draw: st.DrawFn) -> tuple[settings.Settings, list[float], float, bool, float]:
    poll = draw(st.floats(0.05, 2.0))
    deadline = draw(st.floats(0.05, 3.0))
    config = settings.Settings(
        engine_url=URL,
        listen_host="127.0.0.1",
        listen_port=0,
        pod="engine-0",
        namespace=None,
        model=None,
        poll_interval=poll,
        timeout=deadline,
        unreachable_after=draw(st.integers(1, 5)),
    )
    answers = draw(st.lists(st.floats(0.0, deadline), min_size=1, max_size=6))
    fails_at = draw(st.floats(0.0, 1.0)) * sum(max(poll, took) for took in answers)
    hung = draw(st.booleans())
    instant = draw(st.floats(0.0, min(deadline, 0.01)))
    return config, answers, fails_at, hung, instant


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(_runs())
def test_a_dead_or_hung_engine_is_unreachable_within_the_stated_bound(
    run: tuple[settings.Settings, list[float], float, bool, float],
) -> None:
    config, answers, fails_at, hung, instant = run
    state = sampler.Sampler(
        sampler.Identity("engine-0", None, None, URL),
        5.0,
        unreachable_after=config.unreachable_after,
        slow_after_seconds=config.poll_interval,
    )
    text = _idle()
    # The first scrape answers, so the engine was up.
    state.observe(sampler.Answered(200, text), 0.0)
    start = sampler.next_start(0.0, config.poll_interval, 0.0)
    for scrape in itertools.count():
        answer = answers[scrape % len(answers)]
        if start + answer <= fails_at:
            took = answer
            state.observe(sampler.Answered(200, text), start + took, took)
        else:
            # Dead: the scrape fails as the engine goes (or at once); hung: it runs the deadline.
            took = config.timeout if hung else max(instant, fails_at - start)
            failure: sampler.Outcome = (
                sampler.TimedOut("no answer") if hung else sampler.Refused("refused")
            )
            state.observe(failure, start + took, took)
        ended = start + took
        assert (state.health is UNREACHABLE) == (state.missed >= config.unreachable_after)
        if state.health is UNREACHABLE:
            break
        start = sampler.next_start(start, config.poll_interval, ended)
    assert ended <= fails_at + config.unreachable_within + 1e-9
    assert state.report(ended).missed_scrapes == config.unreachable_after


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(
    st.integers(1, 5).flatmap(
        lambda grace: st.tuples(
            st.just(grace),
            st.lists(
                st.tuples(st.integers(0, grace - 1), st.floats(0.0, 3.0)), min_size=1, max_size=8
            ),
        )
    )
)
def test_an_engine_that_answers_before_the_grace_runs_out_is_never_unreachable(
    case: tuple[int, list[tuple[int, float]]],
) -> None:
    grace, episodes = case
    state = _sampler(unreachable_after=grace)
    text = _idle()
    now = 0.0
    state.observe(sampler.Answered(200, text), now)
    for misses, took in episodes:
        for _ in range(misses):
            now += 1.0
            state.observe(sampler.TimedOut("no answer within 1 s"), now, 1.0)
            assert state.health is OK
        now += max(POLL, took)
        state.observe(sampler.Answered(200, text), now, took)
        current = state.report(now)
        assert current.health is OK
        assert current.sampled_at == now
        assert current.scrape_status is (SLOW if took > POLL else ON_TIME)
