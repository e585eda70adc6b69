"""`kvscale operator`: configure kopf with the handlers and run until SIGTERM. Does I/O.

kopf installs its own SIGINT/SIGTERM handlers: on either it stops watching, lets running
handlers finish and returns; the client and the metrics endpoint are closed after that.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf
from lightkube import AsyncClient

from kvscale_operator import config, handlers, kube, login, metrics

log = logging.getLogger("kvscale_operator")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # kopf logs every handler invocation at INFO; the operator's own lines say enough.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpx2").setLevel(logging.WARNING)


async def operate(settings: config.Settings) -> None:
    """Runs the operator until kopf stops (a signal, or a fatal error)."""
    credentials = login.load(settings, os.environ)
    client = AsyncClient(config=credentials, field_manager=settings.field_manager)
    counters = metrics.Metrics.create()
    api = kube.Kube(client, settings, on_conflict=counters.conflict_retries.inc)
    context = handlers.Context(
        settings=settings, api=api, metrics=counters, credentials=credentials
    )
    registry = kopf.OperatorRegistry()
    handlers.register(registry, context)
    runner = None
    try:
        if settings.metrics_port:
            runner = await metrics.serve(counters, settings.listen_host, settings.metrics_port)
            log.info(f"metrics on http://{settings.listen_host}:{settings.metrics_port}/metrics")
        liveness = (
            f"http://{settings.listen_host}:{settings.health_port}/healthz"
            if settings.health_port
            else None
        )
        where = ", ".join(settings.namespaces) or "all namespaces"
        log.info(f"kvscale operator watching {where} as {credentials.cluster.server}")
        await kopf.operator(
            registry=registry,
            settings=handlers.operator_settings(settings),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            # One replica at a time: kopf's peering needs its own CRDs, and leader election
            # belongs to the operator's Deployment (see the chart).
            standalone=True,
            liveness_endpoint=liveness,
        )
    finally:
        if runner is not None:
            await runner.cleanup()
        await api.close()
        log.info("kvscale operator stopped")


def run(args: argparse.Namespace) -> int:
    """Entry point of `kvscale operator`; returns the process exit code."""
    try:
        settings = config.Settings.from_args(args)
    except ValueError as error:
        print(f"kvscale operator: {error}", file=sys.stderr)
        return 2
    _configure_logging(settings.verbose)
    try:
        asyncio.run(operate(settings))
    except login.LoginError as error:
        print(f"kvscale operator: {error}", file=sys.stderr)
        return 1
    return 0
