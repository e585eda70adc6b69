"""The operator's own Prometheus metrics and the HTTP endpoint serving them. Does I/O.

Metrics live in a registry of their own (not prometheus-client's global one), passed to
whoever counts, so tests and several operators in one process never share counters.
"""

from __future__ import annotations

import dataclasses

import prometheus_client
from aiohttp import web


@dataclasses.dataclass(frozen=True)
class Metrics:
    registry: prometheus_client.CollectorRegistry
    reconciles: prometheus_client.Counter  # labels: result (ok, invalid, error)
    reconcile_seconds: prometheus_client.Histogram
    changes: prometheus_client.Counter  # labels: kind, action (created, updated, scaled)
    drift_corrections: prometheus_client.Counter  # labels: kind
    conflict_retries: prometheus_client.Counter
    leader: prometheus_client.Gauge  # 1 while this process runs the handlers
    autoscaler: Autoscaler

    @classmethod
    def create(cls) -> Metrics:
        registry = prometheus_client.CollectorRegistry()
        return cls(
            registry=registry,
            reconciles=prometheus_client.Counter(
                "kvscale_operator_reconciles",
                "Reconcile passes over InferenceDeployments, by result.",
                ["result"],
                registry=registry,
            ),
            reconcile_seconds=prometheus_client.Histogram(
                "kvscale_operator_reconcile_duration_seconds",
                "Time one reconcile pass took.",
                registry=registry,
            ),
            changes=prometheus_client.Counter(
                "kvscale_operator_object_changes",
                "Objects the operator created, updated or scaled.",
                ["kind", "action"],
                registry=registry,
            ),
            drift_corrections=prometheus_client.Counter(
                "kvscale_operator_drift_corrections",
                "Owned objects put back after they were deleted or edited.",
                ["kind"],
                registry=registry,
            ),
            conflict_retries=prometheus_client.Counter(
                "kvscale_operator_conflict_retries",
                "Writes retried after a 409 Conflict.",
                registry=registry,
            ),
            leader=prometheus_client.Gauge(
                "kvscale_operator_leader",
                "1 while this replica runs the handlers (it holds the leader Lease, or runs "
                "without leader election); 0 for a standby.",
                registry=registry,
            ),
            autoscaler=Autoscaler.create(registry),
        )

    def count_changes(self, lines: list[str]) -> None:
        """Counts the lines `reconcile.reconcile` returns ("created Deployment x", ...)."""
        for line in lines:
            action, kind = [*line.split(" "), "?", "?"][:2]
            self.changes.labels(kind=kind, action=action).inc()


_CR = ["namespace", "name"]
# Loop durations from a millisecond (a few pods on loopback) to the tick itself and beyond.
_LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


@dataclasses.dataclass(frozen=True)
class Autoscaler:
    """The autoscale loop's metrics, labelled by the InferenceDeployment's namespace and name.

    Names and meanings are listed in docs/metrics.md (alerts and `kvscale status` read them).
    """

    desired_replicas: prometheus_client.Gauge
    current_replicas: prometheus_client.Gauge
    ready_replicas: prometheus_client.Gauge
    occupancy: prometheus_client.Gauge
    panic: prometheus_client.Gauge
    advisory: prometheus_client.Gauge
    unreported_pods: prometheus_client.Gauge
    decisions: prometheus_client.Counter  # + reason
    scale_actions: prometheus_client.Counter  # + direction
    scrapes: prometheus_client.Counter
    scrape_errors: prometheus_client.Counter  # + reason
    loop_errors: prometheus_client.Counter
    loop_seconds: prometheus_client.Histogram

    @classmethod
    def create(cls, registry: prometheus_client.CollectorRegistry) -> Autoscaler:
        def gauge(name: str, doc: str) -> prometheus_client.Gauge:
            return prometheus_client.Gauge(name, doc, _CR, registry=registry)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> prometheus_client.Counter:
            return prometheus_client.Counter(name, doc, [*_CR, *extra], registry=registry)

        return cls(
            desired_replicas=gauge(
                "kvscale_autoscaler_desired_replicas", "Replicas the autoscaler wants."
            ),
            current_replicas=gauge(
                "kvscale_autoscaler_current_replicas",
                "The engine Deployment's spec.replicas when the tick began.",
            ),
            ready_replicas=gauge(
                "kvscale_autoscaler_ready_replicas",
                "Engine pods the decision counts as ready.",
            ),
            occupancy=gauge(
                "kvscale_autoscaler_occupancy_ratio",
                "Mean KV-cache demand over capacity of the ready pods with fresh reports "
                "(may exceed 1 when queues wait; NaN when no fresh report).",
            ),
            panic=gauge(
                "kvscale_autoscaler_panic", "1 while the decision is in panic mode, else 0."
            ),
            advisory=gauge(
                "kvscale_autoscaler_advisory",
                "1 while spec.scaling.mode is Advisory (desired replicas are advice, the "
                "Deployment's count is its owner's), else 0.",
            ),
            unreported_pods=gauge(
                "kvscale_autoscaler_unreported_pods",
                "Ready engine pods without a fresh occupancy report.",
            ),
            decisions=counter(
                "kvscale_autoscaler_decisions",
                "Decisions (one per tick), by the decision's reason.",
                ("reason",),
            ),
            scale_actions=counter(
                "kvscale_autoscaler_scale_actions",
                "Changes of the engine Deployment's replicas, by direction (up, down).",
                ("direction",),
            ),
            scrapes=counter("kvscale_autoscaler_scrapes", "Occupancy reports asked of sidecars."),
            scrape_errors=counter(
                "kvscale_autoscaler_scrape_errors",
                "Occupancy reports that could not be had, by reason (timeout, connection, "
                "http_status, too_large, invalid_report, wrong_pod).",
                ("reason",),
            ),
            loop_errors=counter(
                "kvscale_autoscaler_loop_errors",
                "Ticks that failed with an error (API unreachable, ...); the loop goes on.",
            ),
            loop_seconds=prometheus_client.Histogram(
                "kvscale_autoscaler_loop_duration_seconds",
                "Time one tick took: list, scrape, decide, act, write status.",
                _CR,
                buckets=_LOOP_BUCKETS,
                registry=registry,
            ),
        )

    def forget(self, namespace: str, name: str) -> None:
        """Drops every series of one InferenceDeployment (it was deleted)."""
        for field in dataclasses.fields(self):
            metric = getattr(self, field.name)
            stale = set()
            for family in metric.collect():
                for sample in family.samples:
                    labels = sample.labels
                    if labels.get("namespace") == namespace and labels.get("name") == name:
                        # A histogram's samples add "le"; the series' own labels come first.
                        stale.add(tuple(value for key, value in labels.items() if key != "le"))
            for values in stale:
                metric.remove(*values)


async def serve(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Serves /metrics until the returned runner is cleaned up."""

    async def exposition(request: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(metrics.registry)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
