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
    "actions/h",
    "reversals/h",
    "max pods",
    "GPU-h / oracle",
)
ORACLE = "oracle"  # the result every other one is compared with, when the run has it


def per_hour(count: int, result: simulation.Result) -> float:
    """`count` events per hour of the run."""
    return 3600.0 * count / result.duration_s if result.duration_s > 0 else math.nan


def over_oracle(result: simulation.Result, oracle_gpu_hours: float | None) -> float:
    """GPU-hours over the oracle's (nan without an oracle run)."""
    if oracle_gpu_hours is None or oracle_gpu_hours <= 0:
        return math.nan
    return result.gpu_hours / oracle_gpu_hours


def oracle_gpu_hours(results: Sequence[simulation.Result]) -> float | None:
    return next((r.gpu_hours for r in results if r.policy == ORACLE), None)


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def row(result: simulation.Result, oracle: float | None = None) -> tuple[str, ...]:
    lat = result.latency
    ratio = over_oracle(result, oracle)
    actions = per_hour(result.num_scale_ups + result.num_scale_downs, result)
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
        f"{actions:.1f}",
        f"{per_hour(result.num_direction_changes, result):.1f}",
        str(result.max_replicas),
        "-" if math.isnan(ratio) else f"{ratio:.2f}x",
    )


def render(
    results: Sequence[simulation.Result], *, markdown: bool = False, bound: float | None = None
) -> str:
    """The results side by side, one row per policy, then each policy's settings. GPU-hours
    are over `bound` (`oracle.bound`) when given, else over the oracle run's."""
    oracle = oracle_gpu_hours(results) if bound is None else bound
    header = COLUMNS if bound is None else (*COLUMNS[:-1], "GPU-h / bound")
    rows = [header, *(row(result, oracle) for result in results)]
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


def to_data(
    result: simulation.Result,
    *,
    timeline: bool = False,
    oracle: float | None = None,
    bound: float | None = None,
) -> dict[str, object]:
    """A JSON-ready summary of one run (the timeline only when asked: it is long).

    `oracle` is the oracle policy's GPU-hours in the same run (`gpu_hours_over_oracle`);
    `bound` is the fluid lower bound of `oracle.bound` (`gpu_hours_over_bound`): two different
    references, so two keys.
    """
    key, reference = (
        ("gpu_hours_over_bound", bound) if bound is not None else ("gpu_hours_over_oracle", oracle)
    )
    ratio = over_oracle(result, reference)
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
        "num_direction_changes": result.num_direction_changes,
        "scale_actions_per_hour": round(
            per_hour(result.num_scale_ups + result.num_scale_downs, result), 3
        ),
        "direction_changes_per_hour": round(per_hour(result.num_direction_changes, result), 3),
        key: None if math.isnan(ratio) else round(ratio, 4),
        "max_replicas": result.max_replicas,
        "max_ready": result.max_ready,
        "num_engine_steps": result.num_engine_steps,
    }
    if timeline:
        data["timeline"] = [dataclasses.asdict(point) for point in result.timeline]
    return data
