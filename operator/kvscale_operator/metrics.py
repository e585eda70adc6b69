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
        )

    def count_changes(self, lines: list[str]) -> None:
        """Counts the lines `reconcile.reconcile` returns ("created Deployment x", ...)."""
        for line in lines:
            action, kind = [*line.split(" "), "?", "?"][:2]
            self.changes.labels(kind=kind, action=action).inc()


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
