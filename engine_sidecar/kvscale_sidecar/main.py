"""`kvscale sidecar`: poll the engine and serve its occupancy report. Does I/O.

One poll loop, one HTTP client session (kept-alive connections to the engine), one HTTP server.
Scrapes start every `poll_interval` seconds and never overlap: a scrape that runs late pushes
the next one back instead of stacking another on top of it (`sampler.next_start`), and each
scrape is bounded by `timeout`, which may be longer than the interval: a busy engine's late
answer is still a sample. The loop survives anything the engine does; an unexpected error
inside it is logged and reported as a failed scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import metrics as prom_metrics
from prometheus_client import registry

from kvscale_sidecar import probe, sampler, server, settings

log = logging.getLogger("kvscale.sidecar")

_SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclasses.dataclass
class Running:
    """A started sidecar: where it serves, its state, and how to stop it."""

    url: str
    """http://host:port the sidecar serves on (the real port when 0 was asked for)."""
    sampler: sampler.Sampler
    _runner: web.AppRunner
    _session: aiohttp.ClientSession
    _poller: asyncio.Task[None]
    _stop: asyncio.Event

    async def stop(self) -> None:
        """Stop polling, stop serving, close connections."""
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        await self._runner.cleanup()
        await self._session.close()


async def start(config: settings.Settings, clock: Callable[[], float] = time.time) -> Running:
    """Start polling the engine and serving; return once the server listens."""
    state = sampler.Sampler(
        sampler.Identity(config.pod, config.namespace, config.model, config.engine_url),
        config.rate_window,
        config.throughput_window,
        config.latency_window,
        unreachable_after=config.unreachable_after,
        slow_after_seconds=config.poll_interval,
    )
    metrics = registry.CollectorRegistry()
    durations = prom_metrics.Histogram(
        "kvscale_sidecar_scrape_duration_seconds",
        "Seconds one scrape of the engine (/health then /metrics) took, timeouts included.",
        buckets=_SCRAPE_BUCKETS,
        registry=metrics,
    )
    stop = asyncio.Event()
    # No proxies from the environment: the engine is next door.
    session = aiohttp.ClientSession(trust_env=False, connector=aiohttp.TCPConnector(limit=2))
    poller = asyncio.create_task(_poll(session, config, state, durations, stop, clock))
    app = server.build_app(state, metrics, clock, polling=lambda: not poller.done())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.listen_host, config.listen_port)
        await site.start()
    except BaseException:
        stop.set()
        await poller
        await runner.cleanup()
        await session.close()
        raise
    host, port = runner.addresses[0][:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    log.info(
        "serving on %s, polling %s every %g s (deadline %g s; unreachable after %d missed "
        "scrapes in a row, within %g s of the engine's death or hang)",
        url,
        config.engine_url,
        config.poll_interval,
        config.timeout,
        config.unreachable_after,
        config.unreachable_within,
    )
    return Running(url, state, runner, session, poller, stop)


async def _poll(
    session: aiohttp.ClientSession,
    config: settings.Settings,
    state: sampler.Sampler,
    durations: prom_metrics.Histogram,
    stop: asyncio.Event,
    clock: Callable[[], float],
) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stop.is_set():
        started = loop.time()
        outcome: sampler.Outcome
        try:
            outcome = await probe.scrape(session, config)
        except Exception as error:  # a bug here must not end the loop
            log.exception("scrape failed unexpectedly")
            outcome = sampler.Failed(f"sidecar error while scraping: {type(error).__name__}")
        took = loop.time() - started
        durations.observe(took)
        before = (state.health, state.reason)
        state.observe(outcome, clock(), took)
        if (state.health, state.reason) != before:
            log.info("engine %s%s", state.health.value, f": {state.reason}" if state.reason else "")
        elif 0 < state.missed < config.unreachable_after:
            # A miss inside the grace changes no state; say so once per miss, or a flaky engine
            # leaves no trace in the log.
            log.info(
                "missed scrape %d of %d: %s", state.missed, config.unreachable_after, outcome.detail
            )
        due = sampler.next_start(due, config.poll_interval, loop.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), due - loop.time())


async def serve(config: settings.Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    running = await start(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        log.info("stopping")
        await running.stop()


def run(args: argparse.Namespace) -> int:
    """Entry point of `kvscale sidecar`."""
    try:
        config = settings.from_args(args, os.environ, socket.gethostname())
    except settings.SettingsError as error:
        sys.stderr.write(f"kvscale sidecar: {error}\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(config))
    return 0
