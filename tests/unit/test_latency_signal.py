"""Latency from the engine's histograms to the occupancy report and the sidecar's /metrics.

vLLM's `vllm:time_to_first_token_seconds`, `vllm:inter_token_latency_seconds` and
`vllm:request_queue_time_seconds` are cumulative since the engine started; the sidecar reports
what they gained over its latency window (counts and p50/p90/p99, interpolated in buckets as
`histogram_quantile` does), restarts the window when the engine restarts, and exports the
quantiles as `kvscale_engine_latency_seconds`. Engine texts are a real loaded vLLM capture
(tests/data) with the TTFT histogram a case needs written in, on a hand-moved clock.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Iterable

import pytest
from prometheus_client import exposition as prom_exposition
from prometheus_client import metrics_core, parser, registry

from kvscale import histogram, report
from kvscale_sidecar import exposition, sampler, settings, vllm_metrics

LOADED_PATH = pathlib.Path(__file__).resolve().parent.parent / "data" / "vllm_metrics_loaded.txt"
TTFT = vllm_metrics.TIME_TO_FIRST_TOKEN


def _loaded() -> str:
    if not LOADED_PATH.is_file():
        pytest.fail(f"{LOADED_PATH} is missing: a real vLLM /metrics capture", pytrace=False)
    return LOADED_PATH.read_text()


def _bounds() -> tuple[float, ...]:
    found = vllm_metrics.parse(_loaded()).time_to_first_token
    assert found is not None
    return found.bounds


def _engine_text(ttft: Iterable[float], *, started: float = 1000.0) -> str:
    """The loaded capture with a TTFT histogram of exactly these observations."""
    made = histogram.Histogram.of(_bounds(), list(ttft))
    by_le = {repr(b): c for b, c in zip(made.bounds, made.cumulative, strict=True)}
    by_le["+Inf"] = made.count
    lines = []
    for line in _loaded().split("\n"):
        name = line.split("{", 1)[0].split(" ", 1)[0]
        head = line.rsplit(" ", 1)[0]
        if name == TTFT + "_bucket":
            le = head.split('le="', 1)[1].split('"', 1)[0]
            line = f"{head} {by_le[le]!r}"
        elif name == TTFT + "_count":
            line = f"{head} {made.count!r}"
        elif name == TTFT + "_sum":
            line = f"{head} {made.total!r}"
        elif name == vllm_metrics.PROCESS_START_TIME:
            line = f"{head} {started!r}"
        lines.append(line)
    return "\n".join(lines)


def _sampler(window: float = 30.0) -> sampler.Sampler:
    identity = sampler.Identity("engine-0", "ns", None, "http://127.0.0.1:8000")
    return sampler.Sampler(identity, rate_window_seconds=5.0, latency_window_seconds=window)


def _scrape(state: sampler.Sampler, at: float, ttft: list[float], started: float = 1000.0) -> None:
    state.observe(sampler.Answered(200, _engine_text(ttft, started=started)), at)


BEFORE = [0.05] * 200  # what the engine saw before the window: fast first tokens
DURING = [0.3, 0.6, 0.9, 1.2, 2.0, 3.0, 4.0, 6.0, 8.0, 30.0]  # a slow spell


def test_one_scrape_has_no_latency_window_yet() -> None:
    state = _sampler()
    _scrape(state, 100.0, BEFORE)
    assert state.report(100.0).time_to_first_token is None


def test_the_report_carries_the_windows_increase_not_the_engines_lifetime() -> None:
    state = _sampler()
    _scrape(state, 100.0, BEFORE)
    _scrape(state, 110.0, BEFORE + DURING)
    window = state.report(110.0).time_to_first_token
    assert window is not None
    assert window.window_seconds == 10.0
    assert window.count == len(DURING)
    assert window.sum_seconds == pytest.approx(sum(DURING))
    expected = histogram.Histogram.of(_bounds(), DURING)
    assert window.p50 == pytest.approx(histogram.quantile(0.5, expected))
    assert window.p90 == pytest.approx(histogram.quantile(0.9, expected))
    # Rank 9 of 10 is the one observation in (7.5, 10]: the top of that bucket.
    assert window.p90 == pytest.approx(10.0)
    # The lifetime histogram's p90 is under 0.06 s: the fast past hides the slow present.
    lifetime = histogram.Histogram.of(_bounds(), BEFORE + DURING)
    assert histogram.quantile(0.9, lifetime) == pytest.approx(0.04 + 0.02 * 189 / 200)


def test_a_quiet_window_has_a_count_of_zero_and_no_quantiles() -> None:
    state = _sampler()
    _scrape(state, 100.0, BEFORE)
    _scrape(state, 110.0, BEFORE)
    window = state.report(110.0).time_to_first_token
    assert window is not None
    assert window.count == 0
    assert (window.p50, window.p90, window.p99) == (None, None, None)


def test_old_observations_leave_the_window() -> None:
    state = _sampler(window=30.0)
    _scrape(state, 0.0, [])
    _scrape(state, 10.0, DURING)
    _scrape(state, 45.0, [*DURING, 0.05])
    _scrape(state, 50.0, [*DURING, 0.05, 0.05])
    window = state.report(50.0).time_to_first_token
    assert window is not None
    assert (window.count, window.window_seconds) == (1, 5.0)


@pytest.mark.parametrize(
    ("after", "started"),
    [
        pytest.param([0.05] * 3, 1000.0, id="counts-fell"),
        pytest.param(BEFORE + DURING + [0.05], 2000.0, id="new-process-counts-did-not-fall"),
    ],
)
def test_an_engine_restart_restarts_the_window(after: list[float], started: float) -> None:
    state = _sampler()
    _scrape(state, 100.0, BEFORE)
    _scrape(state, 101.0, BEFORE + DURING)
    _scrape(state, 102.0, after, started=started)
    assert state.report(102.0).time_to_first_token is None  # never negative, never mixed
    _scrape(state, 103.0, [*after, 0.3], started=started)
    window = state.report(103.0).time_to_first_token
    assert window is not None
    assert (window.count, window.window_seconds) == (1, 1.0)


def test_an_engine_that_stops_exporting_a_histogram_reports_it_unknown() -> None:
    state = _sampler()
    _scrape(state, 100.0, BEFORE)
    _scrape(state, 101.0, BEFORE + DURING)
    text = "\n".join(
        line for line in _loaded().split("\n") if not line.startswith(TTFT) and TTFT not in line
    )
    state.observe(sampler.Answered(200, text), 102.0)
    assert state.report(102.0).health is report.Health.OK
    assert state.report(102.0).time_to_first_token is None


def test_the_report_round_trips_with_its_latency_windows() -> None:
    state = _sampler()
    _scrape(state, 100.0, BEFORE)
    _scrape(state, 110.0, BEFORE + DURING)
    current = state.report(110.0)
    assert current.inter_token_latency is not None  # the capture's own ITL: count 0 in window
    assert current.inter_token_latency.count == 0
    assert report.from_json(current.to_json()) == current


def test_a_slow_poll_stretches_the_default_latency_window() -> None:
    parse = argparse.ArgumentParser()
    settings.add_arguments(parse)
    args = parse.parse_args(["--engine-url", "http://e", "--poll-interval", "60", "--timeout", "1",
                             "--rate-window", "240", "--throughput-window", "240"])  # fmt: skip
    made = settings.from_args(args, env={"POD_NAME": "p"}, hostname="h")
    assert made.latency_window == 240.0
    args = parse.parse_args(["--engine-url", "http://e", "--latency-window", "0.3"])
    with pytest.raises(settings.SettingsError, match=r"--latency-window = 0\.3 must be at least"):
        settings.from_args(args, env={"POD_NAME": "p"}, hostname="h")


class _Fixed(registry.Collector):
    def __init__(self, current: report.OccupancyReport) -> None:
        self._current = current

    def collect(self) -> Iterable[metrics_core.Metric]:
        return exposition.families(self._current, {"ok": 1})


def _series(current: report.OccupancyReport, name: str) -> dict[tuple[str, ...], float]:
    metrics = registry.CollectorRegistry()
    metrics.register(_Fixed(current))
    text = prom_exposition.generate_latest(metrics).decode()
    for family in parser.text_string_to_metric_families(text):
        if family.name == name:
            # Keyed by label values in label-name order (the parser sorts labels).
            return {tuple(v for _, v in sorted(s.labels.items())): s.value for s in family.samples}
    return {}


def test_the_sidecar_exports_latency_quantiles_and_counts() -> None:
    state = _sampler()
    _scrape(state, 100.0, BEFORE)
    _scrape(state, 110.0, BEFORE + DURING)
    current = state.report(110.0)
    assert current.time_to_first_token is not None
    quantiles = _series(current, "kvscale_engine_latency_seconds")
    assert quantiles[("0.9", "time_to_first_token")] == current.time_to_first_token.p90
    # ITL had no observation in the window: a count of 0 and no quantile series.
    assert ("0.9", "inter_token_latency") not in quantiles
    counts = _series(current, "kvscale_engine_latency_observations")
    assert counts[("time_to_first_token",)] == len(DURING)
    assert counts[("inter_token_latency",)] == 0
