"""kopf registrations: the thin shell between kopf's events and `reconcile`. Does I/O.

- InferenceDeployment created, updated or found at start (resume): one reconcile pass.
- An owned Deployment, Service or PodDisruptionBudget deleted or edited: repaired (watched
  with a server-side label selector, `app.kubernetes.io/managed-by=kvscale`).
- An owned Deployment or engine pod changed: the CR's status is recomputed.
- InferenceDeployment watch events (the listing at start included): its autoscale loop is
  started, updated or stopped (`autoscale.Loops`); pod watch events keep the loops' pod
  inventory current. At shutdown every loop is stopped.

No finalizer: deleting an InferenceDeployment removes its objects through their owner
references (the garbage collector), and nothing outside the cluster needs cleaning up. No
kopf timers or daemons either (kopf would add a finalizer for them): drift is caught from
watch events, a restart re-applies everything through the resume handler, and the autoscale
loops are plain tasks driven by the watch events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from lightkube.config.kubeconfig import SingleConfig

from kvscale.api import models
from kvscale_operator import config, kube, login, metrics, utc
from kvscale_operator.autoscaler import autoscale
from kvscale_operator.reconciler import reconcile, render

_MANAGED_SELECTOR = f"{render.MANAGED_BY[0]}={render.MANAGED_BY[1]}"
_MANAGED_LABELS = {render.MANAGED_BY[0]: render.MANAGED_BY[1]}
# (group, version, plural, kind) of everything the operator renders.
OWNED = (
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "services", "Service"),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
)
# Waits before retrying the re-creation of a deleted object after an API error: a watch
# event is not delivered twice, so a failed repair is retried here or not at all.
_REPAIR_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)

log = logging.getLogger("kvscale_operator")


@dataclasses.dataclass(frozen=True)
class KopfEvents:
    """`reconcile.Events` posted as Kubernetes Events on the InferenceDeployment."""

    body: Mapping[str, Any]

    def _target(self) -> kopf.Body:
        metadata = self.body.get("metadata") or {}
        raw: kopf.RawBody = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {
                "name": str(metadata.get("name") or ""),
                "namespace": str(metadata.get("namespace") or ""),
                "uid": str(metadata.get("uid") or ""),
            },
        }
        return kopf.Body(raw)

    def info(self, reason: str, message: str) -> None:
        kopf.info(self._target(), reason=reason, message=message)

    def warn(self, reason: str, message: str) -> None:
        kopf.warn(self._target(), reason=reason, message=message)


@dataclasses.dataclass(frozen=True)
class Context:
    """What every handler needs; built once in `main`."""

    settings: config.Settings
    api: reconcile.Api
    metrics: metrics.Metrics
    credentials: SingleConfig | None
    events_for: Callable[[Mapping[str, Any]], reconcile.Events] = KopfEvents
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    loops: autoscale.Loops | None = None  # None: reconcile only, no autoscaling


def operator_settings(settings: config.Settings) -> kopf.OperatorSettings:
    """kopf's settings: our annotation prefix, event reporting, server-side selectors."""
    kopf_settings = kopf.OperatorSettings()
    prefix = settings.annotation_prefix
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{prefix}/finalizer"
    kopf_settings.posting.enabled = True
    kopf_settings.posting.level = logging.INFO
    kopf_settings.posting.reporting_component = settings.field_manager
    kopf_settings.posting.reporting_instance = socket.gethostname()
    # Only the objects the operator made: the API server filters, kopf never sees the rest.
    for group, version, plural, _ in OWNED:
        kopf_settings.watching.label_selectors[group, version, plural] = _MANAGED_SELECTOR
    kopf_settings.watching.label_selectors["", "v1", "pods"] = _MANAGED_SELECTOR
    return kopf_settings


def register(registry: kopf.OperatorRegistry, context: Context) -> None:
    """Adds the operator's handlers to `registry`; each one calls a function below."""
    infd = (models.GROUP, models.VERSION, models.PLURAL)
    backoff = context.settings.retry_delay_seconds

    @kopf.on.login(registry=registry)
    def credentials(**_: Any) -> kopf.ConnectionInfo:
        if context.credentials is None:
            raise kopf.LoginError("the operator was started without credentials")
        return login.connection_info(context.credentials)

    @kopf.on.resume(*infd, id="reconcile", backoff=backoff, registry=registry)
    @kopf.on.create(*infd, id="reconcile", backoff=backoff, registry=registry)
    @kopf.on.update(*infd, id="reconcile", backoff=backoff, registry=registry)
    async def infd_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await reconcile_infd(context, body, logger)

    for group, version, plural, kind in OWNED:
        _register_owned(registry, context, group, version, plural, kind)

    @kopf.on.event("", "v1", "pods", labels=_MANAGED_LABELS, registry=registry, id="engine-pods")
    async def pod_changed(type: str | None, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        if context.loops is not None:
            context.loops.pod_event(type, _plain(body))
        await engine_pod_changed(context, body, logger)

    loops = context.loops
    if loops is not None:

        @kopf.on.event(*infd, registry=registry, id="autoscale")
        async def infd_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            await loops.sync(type, _plain(body))

        @kopf.on.cleanup(registry=registry, id="autoscale-stop")
        async def stop_loops(**_: Any) -> None:
            await loops.stop_all()


def _register_owned(
    registry: kopf.OperatorRegistry,
    context: Context,
    group: str,
    version: str,
    plural: str,
    kind: str,
) -> None:
    @kopf.on.event(
        group, version, plural, labels=_MANAGED_LABELS, registry=registry, id=f"owned-{plural}"
    )
    async def changed(type: str | None, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await owned_changed(context, kind, type, body, logger)


async def reconcile_infd(
    context: Context, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """One reconcile pass; API errors become kopf retries after `retry_delay_seconds`."""
    started = time.monotonic()
    result = "error"
    try:
        plain = _plain(body)
        lines = await reconcile.reconcile(context.api, plain, context.events_for(plain), utc.now)
        context.metrics.count_changes(lines)
        result = "ok"
        where = _where(plain)
        for line in lines:
            log.info(f"{where}: {line}")
        generation = (plain.get("metadata") or {}).get("generation")
        log.info(f"{where}: reconciled generation {generation}, {len(lines)} change(s)")
    except kube.ApiError as error:
        raise kopf.TemporaryError(
            f"API error {error.status.code}: {error.status.message}",
            delay=context.settings.retry_delay_seconds,
        ) from error
    finally:
        context.metrics.reconciles.labels(result=result).inc()
        context.metrics.reconcile_seconds.observe(time.monotonic() - started)


async def owned_changed(
    context: Context,
    kind: str,
    event_type: str | None,
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Repairs an owned object after a watch event (`event_type` "DELETED" or another)."""
    live = _plain(body)
    live.setdefault("kind", kind)
    deleted = event_type == "DELETED"
    delays = _REPAIR_RETRY_DELAYS if deleted else ()
    fixed: list[str] = []
    for delay in (*delays, None):
        try:
            fixed = await reconcile.repair(context.api, live, deleted, context.events_for, utc.now)
            break
        except kube.ApiError as error:
            if kube.is_forbidden(error):
                # Mostly a namespace being deleted, whose objects go with it.
                log.info(f"{_where(live)}: not repairing {kind}: {error}")
                return
            if delay is None:
                logger.error(f"could not repair {kind}: {error}")
                return
            logger.warning(f"repairing {kind} failed ({error}); retrying in {delay} s")
            await context.sleep(delay)
    for line in fixed:
        log.warning(f"{_where(live)}: {line}")
        context.metrics.drift_corrections.labels(kind=kind).inc()


async def engine_pod_changed(
    context: Context, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """Recomputes the status of the pod's InferenceDeployment (readiness, scheduling)."""
    metadata = body.get("metadata") or {}
    owner = (metadata.get("labels") or {}).get(render.OWNER_LABEL)
    namespace = metadata.get("namespace")
    if not owner or not namespace:
        return
    try:
        await reconcile.refresh_status(context.api, namespace, owner, utc.now)
    except kube.ApiError as error:
        logger.warning(f"status of {namespace}/{owner} not refreshed: {error}")


def _where(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A kopf body (a read-only view) as nested plain dicts and lists."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [convert(item) for item in value]
        return value

    result: dict[str, Any] = convert(body)
    return result
