"""`kvscale status`: what an SRE needs to see of each InferenceDeployment, as text or JSON.
Pure: objects in, text out; `now` is an argument.

The inputs are what `kvscale.snapshot` fetched: each InferenceDeployment as the API server
returns it (spec, and the status the operator writes: replicas, desired replicas, occupancy,
scaling history, conditions) and, for its ready engine pods, the occupancy report each
sidecar served or why there is none. From them, per InferenceDeployment: replicas
ready/desired/max, the autoscaler's occupancy with a bar, waiting and running requests and
the preemption rate summed over the live reports, the last scaling action and its reason,
and the conditions.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kvscale import report
from kvscale.api import models

BAR_WIDTH = 20
MESSAGE_WIDTH = 100
JSON_KIND = "kvscale.dev/status/v1"
_DEFAULTS = models.Scaling()


@dataclasses.dataclass(frozen=True)
class PodReport:
    """One ready engine pod and its sidecar's report, or why there is none."""

    pod: str
    report: report.OccupancyReport | None
    problem: str = ""  # set when report is None: "timeout", "HTTP 503", ...


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class LastScale:
    time: str
    from_replicas: int
    to_replicas: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Row:
    """Everything `kvscale status` shows of one InferenceDeployment."""

    namespace: str
    name: str
    model: str
    ready: int
    desired: int | None
    existing: int
    min_replicas: int
    max_replicas: int
    manual_replicas: int | None  # spec.replicas: a person set the count
    occupancy: float | None  # the autoscaler's, from status
    target: float
    waiting: int | None  # summed over the fresh reports; None when there is none
    running: int | None
    preemptions_per_second: float | None
    reporting: int  # ready pods with a usable report
    ready_pods: int  # ready pods asked for one
    missing: tuple[tuple[str, str], ...]  # (pod, why) for the ready pods without one
    last_scale: LastScale | None
    conditions: tuple[Condition, ...]
    slo: str | None = None  # spec.slo in words; None when the CR states none
    capacity: tuple[Capacity, ...] = ()  # spec.slo: learned capacity per resource (status)
    binding: str | None = None  # spec.slo: the resource that binds now (status)
    lead_time_seconds: float | None = None  # spec.slo: new pods' start-up time (status)
    mode: str = models.ScalingMode.ACTIVE.value  # spec.scaling.mode: Advisory only publishes


@dataclasses.dataclass(frozen=True)
class Capacity:
    """One resource's learned capacity per pod under the SLO, as the status says it."""

    resource: str
    per_pod: float
    confidence: float
    source: str
    use: str
    proven_per_pod: float | None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _usable(found: report.OccupancyReport | None) -> bool:
    return found is not None and found.health is report.Health.OK


def summarize(obj: Mapping[str, Any], pods: Sequence[PodReport]) -> Row:
    """The row of one InferenceDeployment; garbage in its fields reads as absent."""
    metadata, spec, status = (
        _map(obj.get("metadata")),
        _map(obj.get("spec")),
        _map(obj.get("status")),
    )
    scaling = _map(spec.get("scaling"))
    live = [pod.report for pod in pods if pod.report is not None and _usable(pod.report)]
    missing = tuple(
        (pod.pod, pod.problem or (pod.report.reason if pod.report else "no report"))
        for pod in pods
        if not _usable(pod.report)
    )
    history = status.get("scalingHistory")
    last = history[-1] if isinstance(history, list) and history else None
    last_scale = None
    if isinstance(last, Mapping):
        last_scale = LastScale(
            time=str(last.get("time") or ""),
            from_replicas=_int(last.get("fromReplicas")),
            to_replicas=_int(last.get("toReplicas")),
            reason=str(last.get("reason") or ""),
        )
    conditions = tuple(
        Condition(
            type=str(item.get("type") or "?"),
            status=str(item.get("status") or "Unknown"),
            reason=str(item.get("reason") or ""),
            message=str(item.get("message") or ""),
        )
        for item in status.get("conditions") or []
        if isinstance(item, Mapping)
    )
    preemption_rates = [r.preemptions_per_second for r in live]
    return Row(
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name") or "?"),
        model=str(_map(spec.get("model")).get("name") or "?"),
        ready=_int(status.get("readyReplicas")),
        desired=_int(status.get("desiredReplicas"), -1) if "desiredReplicas" in status else None,
        existing=_int(status.get("replicas")),
        min_replicas=_int(scaling.get("minReplicas"), _DEFAULTS.min_replicas),
        max_replicas=_int(scaling.get("maxReplicas"), _DEFAULTS.max_replicas),
        manual_replicas=_int(spec.get("replicas")) if spec.get("replicas") is not None else None,
        occupancy=_number(status.get("occupancy")),
        target=_number(scaling.get("targetOccupancy")) or _DEFAULTS.target_occupancy,
        waiting=sum(r.num_requests_waiting or 0 for r in live) if live else None,
        running=sum(r.num_requests_running or 0 for r in live) if live else None,
        preemptions_per_second=(
            sum(rate for rate in preemption_rates if rate is not None)
            if any(rate is not None for rate in preemption_rates)
            else None
        ),
        reporting=len(live),
        ready_pods=len(pods),
        missing=missing,
        last_scale=last_scale,
        conditions=conditions,
        slo=_slo_words(_map(spec.get("slo"))),
        capacity=tuple(
            Capacity(
                resource=str(item.get("resource") or "?"),
                per_pod=_number(item.get("perPod")) or 0.0,
                confidence=_number(item.get("confidence")) or 0.0,
                source=str(item.get("source") or "?"),
                use=str(item.get("use") or "?"),
                proven_per_pod=_number(item.get("provenPerPod")),
            )
            for item in status.get("capacity") or []
            if isinstance(item, Mapping)
        ),
        binding=str(status["bindingResource"]) if status.get("bindingResource") else None,
        lead_time_seconds=_number(status.get("leadTimeSeconds")),
        mode=str(scaling.get("mode") or _DEFAULTS.mode.value),
    )


def _slo_words(slo: Mapping[str, Any]) -> str | None:
    """`ttft p90 <= 2s, itl p90 <= 100ms` from spec.slo; None when there is none."""
    parts = [
        f"{signal} {percentile} <= {value}"
        for signal in ("ttft", "itl", "tpot")
        for percentile, value in _map(slo.get(signal)).items()
        if isinstance(value, str)
    ]
    return ", ".join(parts) or None


def _capacity_words(item: Capacity) -> str:
    unit = "of the KV cache" if item.resource == "kv" else "tokens/s"
    amount = f"{item.per_pod:.0%}" if item.resource == "kv" else f"{item.per_pod:,.0f}"
    proven = ""
    if item.proven_per_pod is not None:
        shown = (
            f"{item.proven_per_pod:.0%}" if item.resource == "kv" else f"{item.proven_per_pod:,.0f}"
        )
        proven = f", proven {shown}"
    return (
        f"{item.resource:<8}{amount} {unit} per pod  ({item.source}, {item.use}, "
        f"confidence {item.confidence:.2f}{proven})"
    )


def bar(occupancy: float | None, width: int = BAR_WIDTH) -> str:
    """`[#########-----------]`; full with a `+` when occupancy exceeds 1 (queues wait);
    `[?...]` when unknown."""
    if occupancy is None:
        return "[" + "?" * width + "]"
    filled = min(width, max(0, round(min(occupancy, 1.0) * width)))
    return "[" + "#" * filled + "-" * (width - filled) + "]" + ("+" if occupancy > 1 else "")


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def ago(text: str, now: datetime.datetime) -> str:
    """How long ago an RFC 3339 time was, in kubectl's style (`45s`, `12m`, `3h`, `2d`)."""
    when = _parse_time(text)
    if when is None:
        return "?"
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:.0f}%"


def _cut(text: str, width: int = MESSAGE_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _block(row: Row, now: datetime.datetime) -> list[str]:
    desired = "?" if row.desired is None else str(row.desired)
    replicas = f"{row.ready} ready / {desired} desired / {row.max_replicas} max"
    replicas += f"  (min {row.min_replicas}, {row.existing} pod{'' if row.existing == 1 else 's'})"
    if row.manual_replicas is not None:
        replicas += f"  spec.replicas={row.manual_replicas}: set by hand, not autoscaled"
    advice = None
    if row.mode == models.ScalingMode.ADVISORY.value:
        advice = (
            f"Advisory: kvscale would run {desired}; the Deployment's count is left to its "
            "owner (an HPA, KEDA, a person)"
        )
    occupancy = f"{bar(row.occupancy)} {_percent(row.occupancy):>5}  target {_percent(row.target)}"
    if row.ready_pods == 0:
        requests = "-  (no ready pods to ask)"
    elif row.reporting == 0:
        requests = f"?  (no report from {row.ready_pods} ready pods)"
    else:
        rate = row.preemptions_per_second
        preempting = "?" if rate is None else f"{rate:.2f}/s"
        requests = (
            f"{row.waiting} waiting, {row.running} running   preemptions {preempting}"
            f"   (reports from {row.reporting} of {row.ready_pods} ready pods)"
        )
    lines = [
        f"{row.namespace}/{row.name}   model {row.model}",
        f"  replicas     {replicas}",
        *([f"  mode         {advice}"] if advice else []),
        f"  occupancy    {occupancy}",
        f"  requests     {requests}",
    ]
    for pod, why in row.missing:
        lines.append(f"               no report from {pod}: {_cut(why, 60)}")
    if row.slo is not None:
        binds = f"; {row.binding} binds" if row.binding else ""
        lead = (
            f"; pods start in {row.lead_time_seconds:.0f} s"
            if row.lead_time_seconds is not None
            else ""
        )
        lines.append(f"  slo          {row.slo}{binds}{lead}")
        if not row.capacity:
            lines.append("  capacity     not learned yet")
        for index, item in enumerate(row.capacity):
            label = "  capacity     " if index == 0 else "               "
            lines.append(f"{label}{_capacity_words(item)}")
    if row.last_scale is None:
        lines.append("  last scale   none yet")
    else:
        scale = row.last_scale
        lines.append(
            f"  last scale   {scale.from_replicas} -> {scale.to_replicas}, "
            f"{ago(scale.time, now)} ago ({scale.time}): {scale.reason}"
        )
    if not row.conditions:
        lines.append("  conditions   none yet")
    width = max((len(f"{c.type}={c.status}") for c in row.conditions), default=0)
    for index, condition in enumerate(row.conditions):
        label = "  conditions   " if index == 0 else "               "
        state = f"{condition.type}={condition.status}".ljust(width)
        detail = condition.reason + (f": {condition.message}" if condition.message else "")
        lines.append(f"{label}{state}  {_cut(detail)}")
    return lines


def text(rows: Sequence[Row], now: datetime.datetime, where: str = "") -> str:
    """The terminal view: one block per InferenceDeployment, a blank line between them."""
    if not rows:
        return f"No InferenceDeployments{' ' + where if where else ''}.\n"
    blocks = ["\n".join(_block(row, now)) for row in rows]
    return "\n\n".join(blocks) + "\n"


def document(rows: Sequence[Row], now: datetime.datetime) -> dict[str, Any]:
    """The same as a JSON-ready document (`-o json`), with nothing cut short."""
    return {
        "kind": JSON_KIND,
        "generatedAt": now.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z"),
        "items": [
            {
                "namespace": row.namespace,
                "name": row.name,
                "model": row.model,
                "mode": row.mode,
                "replicas": {
                    "ready": row.ready,
                    "desired": row.desired,
                    "existing": row.existing,
                    "min": row.min_replicas,
                    "max": row.max_replicas,
                    "manual": row.manual_replicas,
                },
                "occupancy": row.occupancy,
                "targetOccupancy": row.target,
                "requests": {"waiting": row.waiting, "running": row.running},
                "preemptionsPerSecond": row.preemptions_per_second,
                "reports": {
                    "readyPods": row.ready_pods,
                    "reporting": row.reporting,
                    "missing": [{"pod": pod, "reason": why} for pod, why in row.missing],
                },
                "lastScale": None
                if row.last_scale is None
                else {
                    "time": row.last_scale.time,
                    "fromReplicas": row.last_scale.from_replicas,
                    "toReplicas": row.last_scale.to_replicas,
                    "reason": row.last_scale.reason,
                },
                "conditions": [dataclasses.asdict(condition) for condition in row.conditions],
                "slo": row.slo,
                "capacity": [dataclasses.asdict(item) for item in row.capacity],
                "bindingResource": row.binding,
                "leadTimeSeconds": row.lead_time_seconds,
            }
            for row in rows
        ],
    }
