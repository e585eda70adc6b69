"""The timeline as one PNG: replicas, KV occupancy, queue and preemptions over time. Writes a file.

Four panels share the time axis (seconds after the load started): replicas desired and ready;
each pod's KV usage, their mean, the operator's own demand signal and the target; requests
waiting in the engines, in flight at them, and held by the generator for want of a pod with
room; preemptions per second. Scaling
actions are vertical lines through every panel (up green, down orange), labelled
"from→to" in the first; the replay's span is shaded.

Uses matplotlib's object API with the Agg canvas: no pyplot, no global figure state, no display.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kvscale.loadgen import timeline, view

_UP = "#2a9d3f"
_DOWN = "#e07b00"
_REPLAY = "#f2f2f2"
# The operator's signal counts the queue's blocks too and can reach tens of caches' worth; above
# this the panel would flatten the per-pod lines, so it is cut off here (and the legend says so).
OCCUPANCY_TOP = 1.6
# Two action labels closer than this fraction of the time axis would overlap.
_LABEL_GAP = 0.04


def _floats(values: Sequence[float | int | None]) -> list[float]:
    """None as NaN, which matplotlib draws as a gap."""
    return [math.nan if value is None else float(value) for value in values]


def _marks(axes: Axes, record: timeline.Timeline, label: bool) -> None:
    times = record.times()
    if not times:
        return
    span = max(times[-1] - times[0], 1.0)
    last_label = -math.inf
    row = 0
    # Actions from before the timeline (the operator's history reaches back) are not drawn.
    for mark in (m for m in record.marks if times[0] <= m.t <= times[-1]):
        colour = _UP if mark.up else _DOWN
        axes.axvline(mark.t, color=colour, linewidth=1.2, alpha=0.8, zorder=1)
        if label:
            # Labels of actions close together go one under the other instead of overlapping.
            row = row + 1 if mark.t - last_label < _LABEL_GAP * span else 0
            last_label = mark.t
            axes.annotate(
                f"{mark.from_replicas}→{mark.to_replicas}",
                xy=(mark.t, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12 - 11 * (row % 4)),
                textcoords="offset points",
                color=colour,
                fontsize=8,
                fontweight="bold",
            )


def write(
    record: timeline.Timeline,
    path: pathlib.Path,
    *,
    title: str,
    load_end_s: float | None = None,
) -> pathlib.Path:
    """Draw `record` into `path` (a PNG; parent folders are made) and return the path."""
    times = record.times()
    samples = record.samples
    figure = Figure(figsize=(13, 10), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    replicas, occupancy, queue, preemption = figure.subplots(4, 1, sharex=True)
    figure.suptitle(title, fontsize=11)

    replicas.step(
        times,
        _floats([s.desired for s in samples]),
        where="post",
        color="#555555",
        linestyle="--",
        linewidth=1.5,
        label="desired",
    )
    replicas.step(
        times,
        _floats([s.ready for s in samples]),
        where="post",
        color="#1f5fbf",
        linewidth=2.2,
        label="ready",
    )
    # Pods on the way are stacked on the ready ones: the band's top is what will be there.
    ready = [float(s.ready) for s in samples]
    on_the_way = [
        r + s.count(view.Phase.PENDING, view.Phase.STARTING)
        for r, s in zip(ready, samples, strict=True)
    ]
    replicas.fill_between(
        times,
        ready,
        on_the_way,
        step="post",
        color="#9ecae1",
        alpha=0.6,
        label="pending or starting\n(on top of ready)",
    )
    replicas.set_ylabel("replicas")
    replicas.yaxis.set_major_locator(MaxNLocator(integer=True))
    top = max([*(s.desired or 0 for s in samples), *(s.ready for s in samples), 1])
    replicas.set_ylim(0, top + 0.8)

    for name in record.pod_names():
        occupancy.plot(
            times,
            _floats(record.usage_of(name)),
            linewidth=0.9,
            alpha=0.65,
            label=name.rsplit("-", 1)[-1],
        )
    occupancy.plot(
        times,
        _floats([s.mean_usage for s in samples]),
        color="black",
        linewidth=2.2,
        label="mean KV usage (ready pods)",
    )
    signal = [s.operator_occupancy for s in samples]
    peak = max((value for value in signal if value is not None), default=0.0)
    clipped = f", clipped at {OCCUPANCY_TOP:g}" if peak > OCCUPANCY_TOP else ""
    occupancy.plot(
        times,
        _floats(signal),
        color="#7b3294",
        linestyle="--",
        linewidth=1.6,
        label=f"operator's demand signal\n(KV used + queue{clipped})",
    )
    if record.target is not None:
        occupancy.axhline(
            record.target,
            color="#d62728",
            linestyle=":",
            linewidth=1.6,
            label=f"target {record.target:.2f}",
        )
    occupancy.set_ylim(0, min(OCCUPANCY_TOP, max(1.05, peak * 1.05)))
    occupancy.set_ylabel("KV-cache occupancy")

    queue.fill_between(
        times,
        0,
        _floats([s.waiting for s in samples]),
        color="#fdae6b",
        alpha=0.8,
        label="waiting in engines",
    )
    queue.plot(
        times,
        [float(s.counters.in_flight) for s in samples],
        color="#8c510a",
        linewidth=1.2,
        label="in flight from the generator",
    )
    queue.plot(
        times,
        [float(s.counters.held) for s in samples],
        color="#3f007d",
        linewidth=1.2,
        linestyle="--",
        label="held by the generator\n(no pod with room)",
    )
    queue.set_ylabel("requests")

    preemption.fill_between(
        times,
        0,
        _floats([s.preemptions_per_second for s in samples]),
        color="#de2d26",
        alpha=0.7,
        label="preemptions/s (all pods)",
    )
    preemption.set_ylabel("preemptions / s")
    preemption.set_xlabel("seconds after the load started (shaded: the trace replay)")

    for index, axes in enumerate((replicas, occupancy, queue, preemption)):
        if load_end_s is not None:
            axes.axvspan(0, load_end_s, color=_REPLAY, zorder=0)
        _marks(axes, record, label=index == 0)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
        axes.set_ylim(bottom=0)
    if times:
        replicas.set_xlim(min(times[0], 0.0), times[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
