"""One pod on one of the agent's nodes: its address, its containers, its status. Does I/O.

A `Worker` lives from the moment the agent sees a pod bound to its node until the pod is gone.
It gives the pod an address, runs its init containers in order and then its containers
(`container.Runner`), and writes the pod's status whenever what `status.render` computes from
the containers differs from what it last wrote (through the `pods/status` subresource, as a
strategic merge patch carrying the pod's uid as a precondition, like kubelet's).

When the pod gets a deletionTimestamp it runs each container's preStop hook, sends SIGTERM,
waits the grace period (`metadata.deletionGracePeriodSeconds`, else
`spec.terminationGracePeriodSeconds`), sends SIGKILL, writes the final status and deletes the
pod with grace period 0, as kubelet does; the address goes back to the pool. A pod object that
disappears while its processes run has them stopped the same way (with its last known grace
period). When the agent itself stops, processes are stopped (no preStop, grace capped) and the
final status is written, but the pod is left for the agent's next start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime
import enum
import logging
from collections.abc import Mapping

import aiohttp
import httpx2
import lightkube
from lightkube.resources import core_v1 as core
from lightkube.types import PatchType

from kvscale.localstack.nodeagent import (
    account,
    container,
    environment,
    ipam,
    podspec,
    process,
    state,
    status,
)
from kvscale.localstack.nodeagent import settings as settings_module

log = logging.getLogger(__name__)

# How long to wait before trying again after a status write failed for a transient reason.
_RETRY_SECONDS = 1.0
_DELETE_ATTEMPTS = 6
SHUTDOWN_MESSAGE = "Pod was terminated because the node agent stopped."
# How often a pod waiting for a free address tries again.
_ADDRESS_RETRY_SECONDS = 5.0


class Stop(enum.Enum):
    """Why a worker stops its pod."""

    DELETE = "the pod is being deleted"
    VANISH = "the pod object is gone"
    SHUTDOWN = "the node agent is stopping"


@dataclasses.dataclass(frozen=True)
class Deps:
    """What every worker shares: the API client, settings, the address pool, HTTP for probes,
    and the agent's environment (a few variables of which processes inherit)."""

    client: lightkube.AsyncClient
    settings: settings_module.Settings
    pool: ipam.Pool
    http: aiohttp.ClientSession
    agent_environment: Mapping[str, str]


def _decode_secret(data: Mapping[str, str]) -> dict[str, str]:
    decoded: dict[str, str] = {}
    for key, value in data.items():
        try:
            decoded[key] = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    return decoded


class Worker:
    """Runs one pod (see the module docstring)."""

    def __init__(
        self,
        deps: Deps,
        pod: podspec.Pod,
        adopted: Mapping[str, state.Found] | None = None,
    ) -> None:
        self._deps = deps
        self._pod = pod
        self._adopted = dict(adopted or {})
        self._stop_event = asyncio.Event()
        self._stop_reason: Stop | None = None
        self._dirty = asyncio.Event()
        self._written: dict[str, object] | None = None
        self._address: str | None = None
        self._start_time: datetime.datetime | None = None
        self._init: list[container.Runner] = []
        self._main: list[container.Runner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._message = ""
        self._reason = ""
        self._interrupted = False
        self._account: Mapping[str, str] | None = None
        self.directory = state.pod_dir(deps.settings.pods_dir, pod.namespace, pod.name, pod.uid)
        if pod.deleting:
            self._request(Stop.DELETE)

    @property
    def pod(self) -> podspec.Pod:
        return self._pod

    # -- events from the agent -----------------------------------------------------------

    def update(self, pod: podspec.Pod) -> None:
        """A newer version of the pod object."""
        if pod.uid != self._pod.uid:
            return
        self._pod = pod
        if pod.deleting:
            self._request(Stop.DELETE)
        elif self._written is not None and _drifted(pod.status, self._written):
            self._dirty.set()

    def vanish(self) -> None:
        """The pod object is gone (deleted with grace 0, or the watch no longer lists it)."""
        self._request(Stop.VANISH)

    def shutdown(self) -> None:
        """The agent is stopping."""
        self._request(Stop.SHUTDOWN)

    def _request(self, reason: Stop) -> None:
        # A vanished pod can no longer be written to, whatever was asked before.
        if self._stop_reason is None or reason is Stop.VANISH:
            self._stop_reason = reason
        self._stop_event.set()

    def notify(self) -> None:
        self._dirty.set()

    # -- the pod's life ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except Exception:
            log.exception("%s: the pod worker failed", self._pod.key)
            await self._stop_all(0.0, pre_stop=False)
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._stop_reason is not Stop.SHUTDOWN:
                self._deps.pool.release(self._pod.uid)

    async def _run(self) -> None:
        pod = self._pod
        if pod.terminal or (pod.deleting and not self._adopted):
            await self._stop_adopted()
            if not pod.deleting:
                self._deps.pool.release(pod.uid)
                await self._stop_event.wait()
            if self._stop_reason is not Stop.SHUTDOWN:
                await self._finish()
            return
        self._start_time = status.parse_time(pod.status.get("startTime")) or container.utcnow()
        address = await self._take_address()
        if address is None:
            await self._finish()
            return
        self._address = address
        self._build_runners(address)
        await self._stop_adopted()  # processes of containers the spec no longer has
        self._tasks.append(asyncio.create_task(self._status_loop()))
        self.notify()
        lifecycle = asyncio.create_task(self._lifecycle())
        self._tasks.append(lifecycle)
        await self._stop_event.wait()
        reason = self._stop_reason
        log.info("%s: stopping: %s", self._pod.key, reason.value if reason else "")
        if reason is Stop.SHUTDOWN:
            self._interrupted = True
            self._reason, self._message = "Terminated", SHUTDOWN_MESSAGE
            grace = min(
                float(self._pod.grace_period_seconds()), self._deps.settings.shutdown_grace_seconds
            )
            await self._stop_all(grace, pre_stop=False)
        else:
            await self._stop_all(float(self._pod.grace_period_seconds()), pre_stop=True)
        lifecycle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifecycle
        await self._finish()

    async def _take_address(self) -> str | None:
        if self._pod.host_network:
            return ipam.HOST_IP
        while True:
            address = self._deps.pool.allocate(self._pod.uid)
            if address is not None:
                return address
            self._reason, self._message = (
                "PodIPExhausted",
                f"no free address in the node agent's pod range {self._deps.settings.pod_cidr}",
            )
            log.warning("%s: %s", self._pod.key, self._message)
            await self._write()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), _ADDRESS_RETRY_SECONDS)
            if self._stop_event.is_set():
                return None
            self._reason = self._message = ""

    def _build_runners(self, address: str) -> None:
        pod = self._pod
        state.make_pod_dir(self.directory)
        context = container.PodContext(
            pod=lambda: self._pod,
            pod_ip=address,
            host_ip=ipam.HOST_IP,
            directory=self.directory,
            http=self._deps.http,
            sources=self._sources,
            crashloop=self._deps.settings.crashloop,
            notify=self.notify,
            agent_environment=self._deps.agent_environment,
            credentials=self._credentials,
        )
        previous_init = status.previous_containers(pod.status, "initContainerStatuses")
        previous_main = status.previous_containers(pod.status, "containerStatuses")
        waiting = "PodInitializing" if pod.init_containers else "ContainerCreating"
        for spec in pod.init_containers:
            role = (
                container.Role.SIDECAR if spec.restart_policy == "Always" else container.Role.INIT
            )
            self._init.append(
                container.Runner(
                    context,
                    spec,
                    role,
                    previous=previous_init.get(spec.name),
                    adopted=self._adopt(spec.name),
                )
            )
        for spec in pod.containers:
            self._main.append(
                container.Runner(
                    context,
                    spec,
                    container.Role.MAIN,
                    previous=previous_main.get(spec.name),
                    adopted=self._adopt(spec.name),
                    initial_reason=waiting,
                )
            )

    def _adopt(self, name: str) -> tuple[process.Process, state.Record] | None:
        found = self._adopted.pop(name, None)
        if found is None:
            return None
        record = found.record
        log.info("%s/%s: adopting running pid %d", self._pod.key, name, record.pid)
        return process.Adopted(pid=record.pid, ticks=record.ticks), record

    async def _stop_adopted(self) -> None:
        """Stop recorded processes nothing runs any more (a terminal pod, a removed container)."""
        leftovers, self._adopted = self._adopted, {}
        for name, found in leftovers.items():
            log.info("%s/%s: stopping leftover pid %d", self._pod.key, name, found.record.pid)
            await process.stop_recorded(
                found.record.pid, found.record.ticks, container.MIN_GRACE_SECONDS
            )
            state.remove_record(found.pod_dir, name)

    async def _lifecycle(self) -> None:
        try:
            await self._containers()
        except Exception:
            log.exception("%s: running the containers failed", self._pod.key)
            raise

    async def _containers(self) -> None:
        for runner in self._init:
            if runner.role is container.Role.SIDECAR:
                self._tasks.append(asyncio.create_task(runner.run()))
                await runner.started_event.wait()
                continue
            await runner.run()
            if not runner.succeeded:
                return  # failed for good (restartPolicy Never): the pod is Failed
        for runner in self._main:
            runner.pod_initializing_done()
        await asyncio.gather(*(runner.run() for runner in self._main))
        # Every container is done for good: the pod is terminal. Sidecars go, then the address.
        sidecars = [runner for runner in self._init if runner.role is container.Role.SIDECAR]
        grace = float(self._pod.termination_grace_period_seconds)
        await asyncio.gather(*(runner.terminate(grace, pre_stop=True) for runner in sidecars))
        self.notify()
        if not self._stop_event.is_set():
            log.info("%s: all containers are done for good", self._pod.key)
        self._deps.pool.release(self._pod.uid)

    async def _stop_all(self, grace: float, *, pre_stop: bool) -> None:
        """Stop every container: regular ones first, then init containers and sidecars, all
        within one grace period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await asyncio.gather(*(r.terminate(grace, pre_stop=pre_stop) for r in self._main))
        remaining = max(deadline - loop.time(), container.MIN_GRACE_SECONDS)
        await asyncio.gather(*(r.terminate(remaining, pre_stop=pre_stop) for r in self._init))

    async def _finish(self) -> None:
        """Write the final status and, for a deletion, delete the object with grace 0."""
        if self._stop_reason is Stop.VANISH:
            return
        if self._address is not None:
            await self._write()
        if self._stop_reason is Stop.DELETE or self._pod.deleting:
            await self._delete()

    async def _delete(self) -> None:
        """Delete the pod object with grace 0, retrying a while if the API server fails."""
        pod = self._pod
        client = self._deps.client
        for attempt in range(_DELETE_ATTEMPTS):
            try:
                if await _uid_of(client, pod.namespace, pod.name) != pod.uid:
                    return  # gone already, or a new pod with the same name: not ours to delete
                await client.delete(core.Pod, pod.name, namespace=pod.namespace, grace_period=0)
                log.info("%s: deleted", pod.key)
                return
            except lightkube.ApiError as error:
                if error.status.code == 404:
                    return
                problem: Exception = error
            except httpx2.HTTPError as error:
                problem = error
            log.warning("%s: could not delete (attempt %d): %s", pod.key, attempt + 1, problem)
            await asyncio.sleep(_RETRY_SECONDS * (attempt + 1))

    # -- status --------------------------------------------------------------------------

    async def _credentials(self) -> Mapping[str, str]:
        """The pod's service-account variables, fetched once per pod (its containers share
        them, as they share kubelet's token volume)."""
        if self._account is None:
            self._account = await account.provide(
                self._deps.client, self._deps.settings.kubeconfig, self._pod, self.directory
            )
        return self._account

    async def _sources(self, refs: set[tuple[str, str]]) -> environment.Sources:
        config_maps: dict[str, Mapping[str, str] | None] = {}
        secrets: dict[str, Mapping[str, str] | None] = {}
        client = self._deps.client
        for kind, name in sorted(refs):
            try:
                if kind == "ConfigMap":
                    config_map = await client.get(
                        core.ConfigMap, name, namespace=self._pod.namespace
                    )
                    config_maps[name] = dict(config_map.data or {})
                else:
                    secret = await client.get(core.Secret, name, namespace=self._pod.namespace)
                    secrets[name] = _decode_secret(secret.data or {})
            except lightkube.ApiError as error:
                if error.status.code != 404:
                    raise environment.ConfigError(f"{kind} {name!r}: {error}") from error
                (config_maps if kind == "ConfigMap" else secrets)[name] = None
            except httpx2.HTTPError as error:
                raise environment.ConfigError(f"{kind} {name!r}: {error}") from error
        return environment.Sources(config_maps=config_maps, secrets=secrets)

    def _view(self) -> status.PodView:
        return status.PodView(
            restart_policy=self._pod.restart_policy,
            containers=tuple(runner.view() for runner in self._main),
            init_containers=tuple(runner.view() for runner in self._init),
            pod_ip=self._address,
            host_ip=ipam.HOST_IP,
            start_time=self._start_time,
            readiness_gates=self._pod.readiness_gates,
            reason=self._reason,
            message=self._message,
            interrupted=self._interrupted,
        )

    async def _still_ours(self) -> bool:
        """After a conflict: is the object by this name still our pod? (The uid precondition
        fails when it was replaced by a pod of the same name.) Unsure means yes: retry."""
        try:
            uid = await _uid_of(self._deps.client, self._pod.namespace, self._pod.name)
        except (lightkube.ApiError, httpx2.HTTPError):
            return True
        return uid == self._pod.uid

    def _previous(self) -> dict[str, object]:
        """The status as the API server has it, with what this worker wrote on top: a watch
        event can lag behind our own last write."""
        merged = dict(self._pod.status)
        if self._written is None:
            return merged
        merged["phase"] = self._written["phase"]
        conditions: dict[str, object] = {}
        for source in (self._pod.status.get("conditions"), self._written.get("conditions")):
            if isinstance(source, list):
                for item in source:
                    if isinstance(item, Mapping) and isinstance(item.get("type"), str):
                        conditions[str(item["type"])] = item
        merged["conditions"] = list(conditions.values())
        return merged

    async def _status_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not await self._write():
                await asyncio.sleep(_RETRY_SECONDS)
                self._dirty.set()

    async def _write(self) -> bool:
        """Write the status if it changed; False when it should be tried again."""
        if self._stop_reason is Stop.VANISH:
            return True
        body = status.render(self._view(), self._previous(), container.utcnow())
        if body == self._written and not _drifted(self._pod.status, body):
            return True
        patch = {"metadata": {"uid": self._pod.uid}, "status": _with_removals(body)}
        pod = self._pod
        try:
            await self._deps.client.patch(
                core.Pod.Status,
                pod.name,
                patch,
                namespace=pod.namespace,
                patch_type=PatchType.STRATEGIC,
            )
        except lightkube.ApiError as error:
            if error.status.code == 404 or (
                error.status.code == 409 and not await self._still_ours()
            ):
                log.info("%s: the pod object is gone (%s)", pod.key, error.status.code)
                self.vanish()
                return True
            log.warning("%s: status write failed: %s", pod.key, error)
            return False
        except httpx2.HTTPError as error:
            log.warning("%s: status write failed: %s", pod.key, error)
            return False
        if self._written is None or body.get("phase") != self._written.get("phase"):
            log.info("%s: phase %s, ip %s", pod.key, body.get("phase"), body.get("podIP"))
        self._written = body
        return True


def _drifted(server: Mapping[str, object], written: Mapping[str, object]) -> bool:
    """Whether the API server's status contradicts what this worker last wrote: its phase, or
    the status of a condition it owns. Someone else wrote it (the node lifecycle controller
    marks a node's pods NotReady when the node's Lease ran out, as during an API server or
    etcd outage); the kubelet's status manager writes its own view back, and so must we, or
    the pod stays NotReady while its containers serve (docs/reliability.md, scenario 2)."""
    if server.get("phase") != written.get("phase"):
        return True

    def conditions(found: Mapping[str, object]) -> dict[str, object]:
        items = found.get("conditions")
        if not isinstance(items, list):
            return {}
        return {
            str(item.get("type")): item.get("status") for item in items if isinstance(item, Mapping)
        }

    theirs = conditions(server)
    return any(theirs.get(kind) != value for kind, value in conditions(written).items())


async def _uid_of(client: lightkube.AsyncClient, namespace: str, name: str) -> str | None:
    """The uid of the pod now called `name`, None when there is none."""
    try:
        current = await client.get(core.Pod, name, namespace=namespace)
    except lightkube.ApiError as error:
        if error.status.code == 404:
            return None
        raise
    return current.metadata.uid if current.metadata is not None else None


def _with_removals(body: Mapping[str, object]) -> dict[str, object]:
    """A strategic merge patch merges conditions by type field by field, so a reason or message
    that no longer applies must be removed explicitly (null), as kubelet's patches do."""
    patch = dict(body)
    for field in ("reason", "message"):
        patch.setdefault(field, None)
    conditions = body.get("conditions")
    if isinstance(conditions, list):
        patch["conditions"] = [
            {"reason": None, "message": None, **item}
            for item in conditions
            if isinstance(item, dict)
        ]
    return patch
