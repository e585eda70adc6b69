"""The demo's live line: one sample of the timeline in a terminal row. Pure.

    +  42s  ready 1/3 +2 starting  ▕█████▉▏ 97% ▕start.▏ ▕start.▏  waiting 4 preempt 1.1/s
           held 12 ok 150 err 0  | demand 1.31/pod, last 1→3 scale_up_panic 20s ago

One bar per pod: ready pods show their KV usage (the sidecar's usage_ratio), others their
phase. `waiting` is queued in the engines (their reports), `held` in the generator, waiting
for a pod with room. After the bar: the operator's view, its demand signal per ready pod
(status.occupancy) and its latest scaling action.
"""

from __future__ import annotations

from kvscale.loadgen import timeline, view

BAR_WIDTH = 6
_EIGHTHS = " ▏▎▍▌▋▊▉"
_LABELS = {
    view.Phase.PENDING: "pend.",
    view.Phase.STARTING: "start.",
    view.Phase.READY: "ready",
    view.Phase.TERMINATING: "leave",
}


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`fraction` (clamped to 0..1) as `width` cells of block characters, in eighths."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, rest = divmod(eighths, 8)
    cells = "█" * full + (_EIGHTHS[rest] if rest else "")
    return cells.ljust(width)


def pod_cell(pod: timeline.PodSample) -> str:
    if pod.phase is view.Phase.READY:
        if pod.usage is None:
            return f"▕{'no report'.center(BAR_WIDTH)}▏"
        return f"▕{bar(pod.usage)}▏{pod.usage * 100:3.0f}%"
    return f"▕{_LABELS[pod.phase].center(BAR_WIDTH)}▏"


def _number(value: float | int | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _operator(sample: timeline.Sample, last: timeline.Mark | None) -> str:
    parts = []
    if sample.operator_occupancy is not None:
        parts.append(f"demand {sample.operator_occupancy:.2f}/pod")
    if last is not None:
        parts.append(
            f"last {last.from_replicas}→{last.to_replicas} {last.reason} "
            f"{max(0.0, sample.t - last.t):.0f}s ago"
        )
    return ", ".join(parts)


def line(sample: timeline.Sample, last: timeline.Mark | None) -> str:
    """One live line for `sample`; `last` is the operator's latest scaling action, if any."""
    replicas = f"ready {sample.ready}/{_number(sample.desired, 'd')}"
    on_the_way = sample.count(view.Phase.PENDING, view.Phase.STARTING)
    leaving = sample.count(view.Phase.TERMINATING)
    if on_the_way:
        replicas += f" +{on_the_way} starting"
    if leaving:
        replicas += f" -{leaving} leaving"
    pods = " ".join(pod_cell(pod) for pod in sample.pods) or "no pods"
    counters = sample.counters
    text = (
        f"+{sample.t:4.0f}s  {replicas}  {pods}  "
        f"waiting {_number(sample.waiting, 'd')} "
        f"preempt {_number(sample.preemptions_per_second, '.1f')}/s "
        f"held {counters.held} ok {counters.finished} err {counters.failed}"
    )
    operator = _operator(sample, last)
    return f"{text}  | {operator}" if operator else text
