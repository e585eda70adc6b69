"""The sidecar's HTTP endpoints (aiohttp). Does I/O: serves requests, reads the clock.

- `GET /v1/occupancy` — the occupancy report as JSON (`kvscale.report`), computed at request
  time so `served_at` and `age_seconds` are current; 200 whatever the engine's health (the
  report says it).
- `GET /metrics` — the sidecar's own metrics in Prometheus text format, from a registry that
  belongs to this app alone.
- `GET /healthz` — liveness: 200 while the sidecar's poll loop runs, 503 if it has stopped
  (then the kubelet should restart the sidecar). It does not depend on the engine.
- `GET /readyz` — readiness tied to the engine's: 200 only while the engine is `ok`, else 503
  with the reason. A pod whose sidecar uses it as its readiness probe leaves Service endpoints
  when its engine stops answering.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import exposition as prom_exposition
from prometheus_client import metrics_core, registry

from kvscale import report
from kvscale_sidecar import exposition, sampler

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class _Context:
    """What the handlers need, kept on the app under one key."""

    sampler: sampler.Sampler
    registry: registry.CollectorRegistry
    clock: Clock
    polling: Callable[[], bool]


_CONTEXT = web.AppKey("kvscale_sidecar", _Context)


class _ReportCollector(registry.Collector):
    """Turns the sampler's current report into metric families at each scrape."""

    def __init__(self, state: sampler.Sampler, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def collect(self) -> Iterable[metrics_core.Metric]:
        current = self._state.report(self._clock())
        return exposition.families(current, self._state.outcome_counts)


def build_app(
    state: sampler.Sampler,
    metrics: registry.CollectorRegistry,
    clock: Clock,
    polling: Callable[[], bool],
) -> web.Application:
    """The app; `metrics` gets the report's families added, `polling` says the loop is alive."""
    metrics.register(_ReportCollector(state, clock))
    app = web.Application()
    app[_CONTEXT] = _Context(state, metrics, clock, polling)
    app.router.add_get(report.PATH, _occupancy)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


async def _occupancy(request: web.Request) -> web.Response:
    context = request.app[_CONTEXT]
    current = context.sampler.report(context.clock())
    return web.Response(
        text=current.to_json(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _metrics(request: web.Request) -> web.Response:
    body = prom_exposition.generate_latest(request.app[_CONTEXT].registry)
    return web.Response(
        body=body, headers={"Content-Type": prom_exposition.CONTENT_TYPE_PLAIN_0_0_4}
    )


async def _healthz(request: web.Request) -> web.Response:
    if request.app[_CONTEXT].polling():
        return web.Response(text="ok\n")
    return web.Response(status=503, text="the sidecar's poll loop has stopped\n")


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[_CONTEXT].sampler
    if state.health is report.Health.OK:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"engine {state.health.value}: {state.reason}\n")
