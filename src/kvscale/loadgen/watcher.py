"""Poll one InferenceDeployment's pods, their sidecars and the operator's view. Does I/O.

One `PodWatcher.poll()` reads, concurrently: the engine pods (label
`kvscale.dev/inference-deployment=<name>`), the InferenceDeployment, its Deployment and the
Events about the InferenceDeployment (lightkube); then every ready pod's sidecar report,
`GET http://<pod IP>:<sidecar port>/v1/occupancy` (aiohttp, with a short timeout; a pod that
does not answer is recorded with the reason, never as idle). The result is a `view.Snapshot`,
kept as `latest` for the router.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import aiohttp

# lightkube's HTTP client: its transport errors are what an unreachable API server raises.
import httpx2
import lightkube
from lightkube import generic_resource
from lightkube.resources import apps_v1, core_v1

from kvscale import report
from kvscale.api import models
from kvscale.loadgen import router, view

OWNER_LABEL = "kvscale.dev/inference-deployment"

_InferenceDeployment = generic_resource.create_namespaced_resource(
    models.GROUP, models.VERSION, models.KIND, models.PLURAL
)


class WatchError(RuntimeError):
    """The API server could not be read, or sent something unexpected; the message says what."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to watch. Validated on construction; errors name the field."""

    name: str
    namespace: str = "default"
    sidecar_port: int = 9090
    report_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: must not be empty")
        if not 1 <= self.sidecar_port <= 65535:
            raise ValueError(f"sidecar_port = {self.sidecar_port}: must be in 1..65535")
        if self.report_timeout_s <= 0:
            raise ValueError(f"report_timeout_s = {self.report_timeout_s}: must be > 0")


def _plain(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = obj.to_dict()
    return result


class PodWatcher:
    """Reads the deployment's state on demand; `latest` is the last successful poll."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        session: aiohttp.ClientSession,
        settings: Settings,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._session = session
        self._settings = settings
        self._wall_clock = wall_clock
        self.latest: view.Snapshot | None = None

    def candidates(self) -> list[router.Candidate]:
        """The ready pods of the latest poll (none before the first)."""
        return [] if self.latest is None else router.candidates(self.latest)

    async def poll(self) -> view.Snapshot:
        """One look at the deployment; WatchError when the API server cannot be read."""
        began = self._wall_clock()
        settings = self._settings
        try:
            pods, resource, deployment, events = await asyncio.gather(
                self._pods(), self._resource(), self._deployment_replicas(), self._events()
            )
        except (lightkube.ApiError, httpx2.HTTPError, view.ViewError) as error:
            raise WatchError(f"reading {settings.name}: {error}") from error
        ready = [pod for pod in pods if pod.phase is view.Phase.READY and pod.ip]
        fetched = await asyncio.gather(*(self._report(pod) for pod in ready))
        reports = {}
        errors = {}
        for pod, found in zip(ready, fetched, strict=True):
            if isinstance(found, str):
                errors[pod.name] = found
            else:
                reports[pod.name] = found
        snapshot = view.Snapshot(
            time=began,
            pods=pods,
            reports=reports,
            report_errors=errors,
            resource=resource,
            deployment_replicas=deployment,
            decisions=events,
        )
        self.latest = snapshot
        return snapshot

    async def _pods(self) -> tuple[view.Pod, ...]:
        labels: dict[str, Any] = {OWNER_LABEL: self._settings.name}
        items = [
            _plain(pod)
            async for pod in self._client.list(
                core_v1.Pod, namespace=self._settings.namespace, labels=labels
            )
        ]
        return view.pods_from_list({"items": items})

    async def _resource(self) -> view.Resource | None:
        try:
            found = await self._client.get(
                _InferenceDeployment, self._settings.name, namespace=self._settings.namespace
            )
        except lightkube.ApiError as error:
            if getattr(error.status, "code", None) == 404:
                return None
            raise
        return view.resource_from_object(_plain(found))

    async def _deployment_replicas(self) -> int | None:
        try:
            found = await self._client.get(
                apps_v1.Deployment, self._settings.name, namespace=self._settings.namespace
            )
        except lightkube.ApiError as error:
            if getattr(error.status, "code", None) == 404:
                return None
            raise
        return view.replicas_of_deployment(_plain(found))

    async def _events(self) -> tuple[view.Decision, ...]:
        fields: dict[str, Any] = {
            "involvedObject.kind": models.KIND,
            "involvedObject.name": self._settings.name,
        }
        items = [
            _plain(event)
            async for event in self._client.list(
                core_v1.Event, namespace=self._settings.namespace, fields=fields
            )
        ]
        return view.decisions_from_events({"items": items}, models.KIND, self._settings.name)

    async def _report(self, pod: view.Pod) -> report.OccupancyReport | str:
        """The pod's occupancy report, or why there is none."""
        url = f"http://{pod.ip}:{self._settings.sidecar_port}{report.PATH}"
        timeout = aiohttp.ClientTimeout(total=self._settings.report_timeout_s)
        try:
            async with self._session.get(url, timeout=timeout) as response:
                body = await response.read()
                if response.status != 200:
                    return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            return f"unreachable ({type(error).__name__})"
        try:
            return report.from_json(body)
        except report.ReportError as error:
            return f"invalid report: {error}"
