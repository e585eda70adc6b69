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
from collections.abc import Callable, Coroutine
from typing import Any, cast

import httpx2
import kopf
import lightkube
from lightkube import AsyncClient
from lightkube.config.kubeconfig import SingleConfig

from kvscale.api import models
from kvscale_operator import config, handlers, kube, login, metrics
from kvscale_operator.autoscaler import autoscale, collector
from kvscale_operator.leadership import health, leader

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


async def operate(settings: config.Settings) -> int:
    """Runs the operator until kopf stops (a signal, or a fatal error); the exit code: 1 when
    leader election was on and leadership was lost, else 0."""
    credentials = login.load(settings, os.environ)
    client = AsyncClient(config=credentials, field_manager=settings.field_manager)
    counters = metrics.Metrics.create()
    api = kube.Kube(client, settings, on_conflict=counters.conflict_retries.inc)
    # One HTTP session for every sidecar of every InferenceDeployment.
    session = collector.Collector.session()
    loops = autoscale.Loops(
        autoscale.Deps(
            api=api,
            collector=collector.Collector(session),
            metrics=counters.autoscaler,
            events_for=handlers.KopfEvents,
        )
    )
    context = handlers.Context(
        settings=settings, api=api, metrics=counters, credentials=credentials, loops=loops
    )
    registry = kopf.OperatorRegistry()
    handlers.register(registry, context)
    runner = None
    try:
        if settings.metrics_port:
            runner = await metrics.serve(counters, settings.listen_host, settings.metrics_port)
            log.info(f"metrics on http://{settings.listen_host}:{settings.metrics_port}/metrics")
        elected = settings.leader_election is not None
        liveness = (
            f"http://{settings.listen_host}:{settings.health_port}/healthz"
            if settings.health_port and not elected
            else None
        )
        where = ", ".join(settings.namespaces) or "all namespaces"
        log.info(f"kvscale operator watching {where} as {credentials.cluster.server}")

        await _require_crd(client, settings)
        kopf_settings = handlers.operator_settings(settings)
        # Least privilege: kopf finds the resources it serves once, at start, instead of
        # watching CRDs (which would need cluster-wide read access to them); `_require_crd`
        # makes a missing CRD an error rather than an operator that silently serves nothing.
        kopf_settings.scanning.disabled = True

        async def run_kopf(stop: asyncio.Event | None) -> None:
            counters.leader.set(1)
            try:
                await kopf.operator(
                    registry=registry,
                    settings=kopf_settings,
                    clusterwide=not settings.namespaces,
                    namespaces=settings.namespaces,
                    # kopf's peering only pauses lower-priority peers; replicas are kept
                    # apart by the operator's own Lease-based election (`leader`) instead.
                    standalone=True,
                    # Named here: kopf's own default asks the password database for the
                    # user's name, and the image's numeric user (65532) has no entry there.
                    identity=cast(Any, leader.identity()),
                    liveness_endpoint=liveness,
                    stop_flag=stop,
                )
            finally:
                counters.leader.set(0)

        if settings.leader_election is None:
            await run_kopf(None)
            return 0
        return await _elected(settings, credentials, run_kopf)
    finally:
        await loops.stop_all()
        await session.close()
        if runner is not None:
            await runner.cleanup()
        await api.close()
        log.info("kvscale operator stopped")


class SetupError(RuntimeError):
    """The cluster is not ready for the operator (the CRD is missing); the message says why."""


async def _require_crd(client: AsyncClient, settings: config.Settings) -> None:
    """Fails with a SetupError unless InferenceDeployments can be listed where it watches."""
    namespace = settings.namespaces[0] if settings.namespaces else lightkube.ALL_NS
    try:
        async for _ in client.list(
            kube.InferenceDeploymentResource, namespace=namespace, chunk_size=1
        ):
            break
    except (kube.ApiError, httpx2.HTTPStatusError) as error:
        # An unknown resource is a 404 without a Status body, which lightkube does not wrap.
        missing = isinstance(error, httpx2.HTTPStatusError) and error.response.status_code == 404
        if missing or kube.is_not_found(error):
            raise SetupError(
                f"the {models.PLURAL}.{models.GROUP} CRD is not installed; install it first "
                "(`kubectl apply --server-side -f crds/`, or the Helm chart), then start the "
                "operator"
            ) from error
        if kube.is_forbidden(error):
            raise SetupError(f"not allowed to list {models.PLURAL}: {error}") from error
        raise


async def _elected(
    settings: config.Settings,
    credentials: SingleConfig,
    run_kopf: Callable[[asyncio.Event | None], Coroutine[Any, Any, None]],
) -> int:
    """Runs kopf only while this replica holds the Lease; probes are served throughout."""
    assert settings.leader_election is not None
    # The Lease gets a client (and connection pool) of its own: sharing the one every
    # autoscaler loop and handler uses, a fleet's burst of requests on a slow API server
    # queued the renewals behind them until the lease ran out (docs/reliability.md).
    lease_client = AsyncClient(config=credentials, field_manager=settings.field_manager)
    elector = leader.Elector(lease_client, settings.leader_election, leader.identity())
    role = {"role": "standby"}
    probes = None
    if settings.health_port:
        probes = await health.serve(settings.listen_host, settings.health_port, role)

    async def as_leader(stop: asyncio.Event) -> None:
        role["role"] = "leader"
        await run_kopf(stop)

    try:
        outcome = await leader.lead(elector, as_leader)
    finally:
        if probes is not None:
            await probes.cleanup()
        await lease_client.close()
    return 1 if outcome is leader.Outcome.LOST else 0


def run(args: argparse.Namespace) -> int:
    """Entry point of `kvscale operator`; returns the process exit code."""
    try:
        settings = config.Settings.from_args(args)
    except ValueError as error:
        print(f"kvscale operator: {error}", file=sys.stderr)
        return 2
    _configure_logging(settings.verbose)
    try:
        return asyncio.run(operate(settings))
    except (login.LoginError, SetupError) as error:
        print(f"kvscale operator: {error}", file=sys.stderr)
        return 1
