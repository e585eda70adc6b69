"""The timeline plot of a simulation: replicas and KV occupancy over time, one panel per policy.

I/O: writes one PNG with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from kvscale.simulate import simulation


def write(
    results: Sequence[simulation.Result], path: pathlib.Path, *, title: str = ""
) -> pathlib.Path:
    """Write the plot of `results` (one panel each, sharing the time axis) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    if not results:
        raise ValueError("no results to plot")
    height = 1.9 * len(results) + 0.9
    figure, axes = pyplot.subplots(
        len(results), 1, figsize=(11, height), sharex=True, squeeze=False
    )
    max_pods = max(max((p.replicas for p in r.timeline), default=1) for r in results)
    for (axis,), result in zip(axes, results, strict=True):
        minutes = [p.time / 60 for p in result.timeline]
        axis.step(
            minutes,
            [p.replicas for p in result.timeline],
            where="post",
            color="tab:blue",
            label="pods wanted",
        )
        axis.step(
            minutes,
            [p.ready for p in result.timeline],
            where="post",
            color="tab:blue",
            alpha=0.35,
            linestyle="--",
            label="pods ready",
        )
        axis.set_ylim(0, max_pods + 1)
        axis.set_ylabel("pods", color="tab:blue")
        lat = result.latency
        axis.set_title(
            f"{result.policy}: {result.gpu_hours:.2f} GPU-h, SLO {100 * lat.slo_attainment:.1f}%,"
            f" TTFT p99 {lat.ttft_p99_s:.2f} s, {result.num_preemptions} preemptions",
            fontsize=9,
            loc="left",
        )
        occupancy = axis.twinx()
        occupancy.plot(
            minutes,
            [p.occupancy for p in result.timeline],
            color="tab:orange",
            linewidth=0.8,
            label="KV occupancy (mean of ready pods)",
        )
        occupancy.set_ylim(0, 1.05)
        occupancy.set_ylabel("KV occupancy", color="tab:orange")
        if axis is axes[0][0]:
            handles = axis.get_legend_handles_labels()[0] + occupancy.get_legend_handles_labels()[0]
            axis.legend(handles=handles, loc="upper right", fontsize=7, ncols=3)
    axes[-1][0].set_xlabel("minutes")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
    return path
