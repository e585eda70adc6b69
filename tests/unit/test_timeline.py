"""The demo's timeline: samples per poll, scaling marks and decisions merged once, the summary
and the live line read from it."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from kvscale import report
from kvscale.loadgen import progress, summary, timeline, view

ORIGIN = 1_800_000_000.0


def _report(
    pod: str, usage: float, waiting: int, preemptions: float | None
) -> report.OccupancyReport:
    return report.OccupancyReport(
        pod=pod,
        health=report.Health.OK,
        sampled_at=ORIGIN,
        served_at=ORIGIN,
        block_size=32,
        num_gpu_blocks=129,
        num_used_blocks=round(usage * 128),
        usage_ratio=usage,
        kv_capacity_tokens=128 * 32,
        num_requests_running=3,
        num_requests_waiting=waiting,
        preemptions_total=0,
        preemptions_per_second=preemptions,
    )


PodSpec = tuple[view.Phase, tuple[float, int, float | None] | None]


def _snapshot(
    t: float,
    pods: Mapping[str, PodSpec],
    *,
    desired: int | None = None,
    history: tuple[view.ScalingAction, ...] = (),
    decisions: tuple[view.Decision, ...] = (),
    occupancy: float | None = None,
) -> view.Snapshot:
    resource = view.Resource(
        min_replicas=1,
        max_replicas=4,
        target_occupancy=0.7,
        desired_replicas=desired,
        occupancy=occupancy,
        history=history,
    )
    return view.Snapshot(
        time=ORIGIN + t,
        pods=tuple(
            view.Pod(name, phase, "127.1.0.9", ORIGIN, None) for name, (phase, _) in pods.items()
        ),
        reports={name: _report(name, *numbers) for name, (_, numbers) in pods.items() if numbers},
        report_errors={},
        resource=resource,
        deployment_replicas=desired,
        decisions=decisions,
    )


READY, STARTING = view.Phase.READY, view.Phase.STARTING

# (pods at one poll, expected ready, mean usage, waiting, preemptions/s)
SAMPLE_TABLE = [
    pytest.param({}, 0, None, None, None, id="no-pods"),
    pytest.param({"a": (READY, (0.5, 2, 1.0))}, 1, 0.5, 2, 1.0, id="one-ready-pod"),
    pytest.param(
        {"a": (READY, (0.8, 3, 2.0)), "b": (READY, (0.2, 0, 0.5)), "c": (STARTING, None)},
        2,
        0.5,
        3,
        2.5,
        id="mean-of-ready-sums-of-queues",
    ),
    pytest.param(
        {"a": (READY, (0.4, 0, None)), "b": (READY, None)},
        2,
        0.4,
        0,
        None,
        id="unreported-pod-is-left-out-not-zero",
    ),
    pytest.param(
        {"a": (STARTING, (0.9, 9, 9.0))},
        0,
        None,
        None,
        None,
        id="a-starting-pods-report-is-not-read",
    ),
]


@pytest.mark.parametrize(("pods", "ready", "mean", "waiting", "preemptions"), SAMPLE_TABLE)
def test_sample_table(
    pods: dict[str, tuple[view.Phase, tuple[float, int, float | None] | None]],
    ready: int,
    mean: float | None,
    waiting: int | None,
    preemptions: float | None,
) -> None:
    record = timeline.Timeline(ORIGIN)
    record.observe(_snapshot(3.0, pods), timeline.Counters())
    sample = record.samples[0]
    assert sample.t == pytest.approx(3.0)
    assert sample.ready == ready
    assert sample.mean_usage == (None if mean is None else pytest.approx(mean))
    assert sample.waiting == waiting
    assert sample.preemptions_per_second == (
        None if preemptions is None else pytest.approx(preemptions)
    )


def test_scaling_history_is_merged_once_and_in_time_order() -> None:
    up = view.ScalingAction(ORIGIN + 12, 1, 3, "scale_up_panic", 2.1)
    down = view.ScalingAction(ORIGIN + 80, 3, 1, "scale_down", 0.1)
    record = timeline.Timeline(ORIGIN)
    pods = {"a": (READY, (0.5, 0, 0.0))}
    record.observe(_snapshot(13, pods, history=(up,)), timeline.Counters())
    record.observe(_snapshot(14, pods, history=(up,)), timeline.Counters())
    # The operator's history is bounded: an old entry may drop out while a new one comes in.
    record.observe(_snapshot(81, pods, history=(down,)), timeline.Counters())
    assert [(m.t, m.from_replicas, m.to_replicas) for m in record.marks] == [
        (12.0, 1, 3),
        (80.0, 3, 1),
    ]
    assert [m.t for m in record.scale_ups()] == [12.0]
    assert [m.t for m in record.scale_downs()] == [80.0]


def test_new_decisions_are_returned_once() -> None:
    first = view.Decision("uid-1#1", ORIGIN + 5, "ScaledUp", "1 -> 3")
    again = view.Decision("uid-1#2", ORIGIN + 9, "ScaledUp", "1 -> 3")
    record = timeline.Timeline(ORIGIN)
    assert [
        n.t for n in record.observe(_snapshot(6, {}, decisions=(first,)), timeline.Counters())
    ] == [5.0]
    assert record.observe(_snapshot(7, {}, decisions=(first,)), timeline.Counters()) == []
    fresh = record.observe(_snapshot(10, {}, decisions=(first, again)), timeline.Counters())
    assert [(n.t, n.reason) for n in fresh] == [(9.0, "ScaledUp")]
    assert len(record.notes) == 2


def test_samples_must_not_go_back_in_time() -> None:
    record = timeline.Timeline(ORIGIN)
    record.observe(_snapshot(5, {}), timeline.Counters())
    with pytest.raises(ValueError, match="earlier than the last sample"):
        record.observe(_snapshot(4, {}), timeline.Counters())


def test_pod_series_has_gaps_where_the_pod_was_not_ready() -> None:
    record = timeline.Timeline(ORIGIN)
    record.observe(
        _snapshot(0, {"a": (READY, (0.3, 0, 0.0)), "b": (STARTING, None)}), timeline.Counters()
    )
    record.observe(
        _snapshot(1, {"a": (READY, (0.4, 0, 0.0)), "b": (READY, (0.1, 0, 0.0))}),
        timeline.Counters(),
    )
    assert record.pod_names() == ["a", "b"]
    assert record.usage_of("a") == [0.3, 0.4]
    assert record.usage_of("b") == [None, 0.1]
    assert record.usage_of("gone") == [None, None]


# --- summary ------------------------------------------------------------------------------

PERCENTILE_TABLE = [
    pytest.param([], 50, None, id="empty"),
    pytest.param([4.0], 99, 4.0, id="one-value"),
    pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0, id="median-odd"),
    pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="median-even-interpolates"),
    pytest.param([5.0, 1.0, 3.0], 0, 1.0, id="unsorted-min"),
    pytest.param([float(i) for i in range(1, 101)], 99, 99.01, id="p99-of-100"),
    pytest.param([1.0, 2.0], 100, 2.0, id="max"),
]


@pytest.mark.parametrize(("values", "q", "expected"), PERCENTILE_TABLE)
def test_percentile_table(values: list[float], q: float, expected: float | None) -> None:
    found = summary.percentile(values, q)
    assert found == (None if expected is None else pytest.approx(expected))


def test_percentile_refuses_out_of_range() -> None:
    with pytest.raises(ValueError, match="q = 101"):
        summary.percentile([1.0], 101)


def _outcome(index: int, ttft: float | None, error: str = "", sent: bool = True) -> summary.Outcome:
    return summary.Outcome(
        index=index,
        scheduled_s=float(index),
        prompt_tokens=10,
        output_tokens=5,
        pod="a",
        sent_s=float(index) if sent else None,
        ttft_s=ttft,
        latency_s=None if ttft is None else ttft + 1.0,
        error=error,
    )


def test_summary_of_a_run() -> None:
    record = timeline.Timeline(ORIGIN)
    one = {"a": (READY, (0.95, 6, 3.0)), "b": (STARTING, None)}
    two = {"a": (READY, (0.6, 0, 0.0)), "b": (READY, (0.5, 0, 0.0))}
    up = view.ScalingAction(ORIGIN + 8, 1, 2, "scale_up_panic")
    down = view.ScalingAction(ORIGIN + 90, 2, 1, "scale_down")
    record.observe(_snapshot(0, {"a": (READY, (0.2, 0, 0.0))}, desired=1), timeline.Counters())
    record.observe(_snapshot(10, one, desired=2, history=(up,)), timeline.Counters())
    record.observe(_snapshot(70, two, desired=2, history=(up,)), timeline.Counters())
    record.observe(
        _snapshot(95, {"a": (READY, (0.0, 0, 0.0))}, desired=1, history=(down,)),
        timeline.Counters(),
    )
    outcomes = [
        _outcome(0, 0.1),
        _outcome(1, 0.3),
        _outcome(2, None, "HTTP 400: bad"),
        _outcome(3, None, "no ready pod", sent=False),
    ]
    result = summary.summarize(outcomes, record)
    assert (result.sent, result.ok, result.failed) == (3, 2, 2)
    assert result.ttft_p50_s == pytest.approx(0.2)
    assert result.latency_p50_s == pytest.approx(1.2)
    assert (result.max_ready, result.max_desired) == (2, 2)
    assert (result.scale_ups, result.scale_downs) == (1, 1)
    assert result.first_scale_up_s == pytest.approx(8.0)
    assert result.first_new_pod_ready_s == pytest.approx(70.0)
    assert result.peak_waiting == 6
    assert result.peak_preemptions_per_second == pytest.approx(3.0)
    assert dict(result.errors) == {"HTTP 400: bad": 1, "no ready pod": 1}
    text = "\n".join(summary.lines(result))
    assert "3 sent, 2 ok, 2 failed" in text
    assert "first scale-up 8.00s after the load started" in text


def test_summary_of_nothing_says_so() -> None:
    result = summary.summarize([], timeline.Timeline(ORIGIN))
    assert (result.sent, result.ttft_p50_s, result.first_scale_up_s) == (0, None, None)
    assert "TTFT          p50 -, p99 -" in summary.lines(result)


# --- the live line ------------------------------------------------------------------------

BAR_TABLE = [
    pytest.param(0.0, "      ", id="empty"),
    pytest.param(1.0, "██████", id="full"),
    pytest.param(1.7, "██████", id="over-full-is-full"),
    pytest.param(-0.2, "      ", id="negative-is-empty"),
    pytest.param(0.5, "███   ", id="half"),
    pytest.param(1 / 48, "▏     ", id="one-eighth-of-a-cell"),
]


@pytest.mark.parametrize(("fraction", "expected"), BAR_TABLE)
def test_bar_table(fraction: float, expected: str) -> None:
    assert progress.bar(fraction) == expected


def test_live_line_shows_replicas_pods_queue_and_the_operator() -> None:
    record = timeline.Timeline(ORIGIN)
    up = view.ScalingAction(ORIGIN + 22, 1, 3, "scale_up_panic")
    pods = {"a": (READY, (0.97, 4, 1.1)), "b": (STARTING, None), "c": (view.Phase.PENDING, None)}
    record.observe(
        _snapshot(42, pods, desired=3, history=(up,), occupancy=1.31),
        timeline.Counters(arrived=163, held=12, finished=150, failed=1),
    )
    text = progress.line(record.samples[0], record.marks[-1])
    assert text.startswith("+  42s  ready 1/3 +2 starting  ▕█████▉▏ 97% ▕start.▏ ▕pend. ▏")
    assert "waiting 4 preempt 1.1/s held 12 ok 150 err 1" in text
    assert text.endswith("| demand 1.31/pod, last 1→3 scale_up_panic 20s ago")


def test_live_line_before_the_operator_said_anything() -> None:
    record = timeline.Timeline(ORIGIN)
    record.observe(_snapshot(1, {"a": (view.Phase.TERMINATING, None)}), timeline.Counters())
    text = progress.line(record.samples[0], None)
    assert text == "+   1s  ready 0/- -1 leaving  ▕leave ▏  waiting - preempt -/s held 0 ok 0 err 0"
