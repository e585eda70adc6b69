"""Simulation results as a text table, and as JSON-ready data. Pure."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from kvscale.simulate import simulation

COLUMNS = (
    "policy",
    "GPU-h",
    "SLO",
    "TTFT p50",
    "TTFT p99",
    "ITL p50",
    "ITL p99",
    "preempt",
    "scale up/down",
    "max pods",
)


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def row(result: simulation.Result) -> tuple[str, ...]:
    lat = result.latency
    return (
        result.policy,
        f"{result.gpu_hours:.2f}",
        "-" if math.isnan(lat.slo_attainment) else f"{100 * lat.slo_attainment:.2f}%",
        _seconds(lat.ttft_p50_s),
        _seconds(lat.ttft_p99_s),
        _seconds(lat.itl_p50_s),
        _seconds(lat.itl_p99_s),
        str(result.num_preemptions),
        f"{result.num_scale_ups}/{result.num_scale_downs}",
        str(result.max_replicas),
    )


def render(results: Sequence[simulation.Result], *, markdown: bool = False) -> str:
    """The results side by side, one row per policy, then each policy's settings."""
    rows = [COLUMNS, *(row(result) for result in results)]
    if markdown:
        lines = ["| " + " | ".join(cells) + " |" for cells in rows]
        lines.insert(1, "|" + "|".join("---" for _ in COLUMNS) + "|")
    else:
        widths = [max(len(cells[i]) for cells in rows) for i in range(len(COLUMNS))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            for cells in rows
        ]
    notes = [f"{result.policy}: {result.settings}" for result in results]
    if markdown:
        notes = [f"- `{result.policy}`: {result.settings}" for result in results]
    return "\n".join([*lines, "", *notes]) + "\n"


def to_data(result: simulation.Result, *, timeline: bool = False) -> dict[str, object]:
    """A JSON-ready summary of one run (the timeline only when asked: it is long)."""
    data: dict[str, object] = {
        "policy": result.policy,
        "settings": result.settings,
        "num_requests": result.num_requests,
        "num_truncated": result.num_truncated,
        "duration_s": round(result.duration_s, 3),
        "gpu_hours": round(result.gpu_hours, 4),
        "mean_replicas": round(result.mean_replicas, 3),
        "latency": {
            key: (None if math.isnan(value) else round(value, 6))
            for key, value in dataclasses.asdict(result.latency).items()
        },
        "num_preemptions": result.num_preemptions,
        "num_scale_ups": result.num_scale_ups,
        "num_scale_downs": result.num_scale_downs,
        "max_replicas": result.max_replicas,
        "max_ready": result.max_ready,
        "num_engine_steps": result.num_engine_steps,
    }
    if timeline:
        data["timeline"] = [dataclasses.asdict(point) for point in result.timeline]
    return data
