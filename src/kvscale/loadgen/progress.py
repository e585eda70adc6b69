"""The demo's live line: one sample of the timeline in a terminal row. Pure.

    +  42s  ready 1/3 desired (2 starting)  kv ▕███████▉ ▏97% ▕starting▏ ▕starting▏
           waiting 23  preempt 4.1/s  held 12  ok 150 err 0  | ScaledUp: 1 -> 3 ...

One bar per pod: ready pods show their KV usage (the sidecar's usage_ratio), others their
phase. `waiting` is queued in the engines (their reports), `held` in the generator, waiting
for a pod with room. The last decision is the newest Event the operator recorded, else the scaling
condition's message.
"""

from __future__ import annotations

from kvscale.loadgen import timeline, view

BAR_WIDTH = 8
_EIGHTHS = " ▏▎▍▌▋▊▉"
_LABELS = {
    view.Phase.PENDING: "pending",
    view.Phase.STARTING: "starting",
    view.Phase.READY: "ready",
    view.Phase.TERMINATING: "leaving",
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


def line(sample: timeline.Sample, decision: str | None, max_decision: int = 70) -> str:
    """One live line for `sample`; `decision` is the latest decision in words, if any."""
    on_the_way = sample.count(view.Phase.PENDING, view.Phase.STARTING)
    replicas = f"ready {sample.ready}/{_number(sample.desired, 'd')} desired"
    if on_the_way:
        replicas += f" ({on_the_way} starting)"
    leaving = sample.count(view.Phase.TERMINATING)
    if leaving:
        replicas += f" ({leaving} leaving)"
    pods = " ".join(pod_cell(pod) for pod in sample.pods) or "no pods"
    counters = sample.counters
    text = (
        f"+{sample.t:4.0f}s  {replicas}  kv {pods}  "
        f"waiting {_number(sample.waiting, 'd')}  "
        f"preempt {_number(sample.preemptions_per_second, '.1f')}/s  "
        f"held {counters.held}  ok {counters.finished} err {counters.failed}"
    )
    if decision:
        short = decision if len(decision) <= max_decision else decision[: max_decision - 1] + "…"
        text += f"  | {short}"
    return text
