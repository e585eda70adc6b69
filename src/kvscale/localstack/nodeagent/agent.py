"""The agent: nodes, pod watches, a worker per pod, orphan clean-up. Does I/O.

Start-up, in order: register the nodes; list the pods already bound to them; reserve the
addresses those pods hold; read the process records an earlier agent left and, for each, either
hand the live process to its pod's worker (adopt) or, when its pod is gone or finished, stop its
process group (no orphans survive an agent restart). Then one watch per node (field selector
`spec.nodeName=<node>`) feeds a worker per pod uid. A watch that fails is re-listed: with a
resourceVersion too old (410) or after a dropped connection, the agent lists the node's pods
again, stops workers of pods no longer listed and carries on from the new list's version.

Shutdown (SIGTERM or SIGINT to `kvscale node-agent`): watches stop, every worker stops its
processes and writes final statuses, and the nodes are marked NotReady.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Mapping

import aiohttp
import httpx2
import lightkube
from lightkube.resources import core_v1 as core

from kvscale.localstack.nodeagent import ipam, node, pod, podspec, process, settings, state

log = logging.getLogger(__name__)

# How long to wait before re-listing after a watch failed for a reason other than 410.
_RELIST_SECONDS = 1.0
# Server-side timeout of one watch request; lightkube then resumes from the last version.
_WATCH_SECONDS = 300


class Agent:
    """The node agent (see the module docstring)."""

    def __init__(self, client: lightkube.AsyncClient, config: settings.Settings) -> None:
        self._client = client
        self._settings = config
        self._pool = ipam.Pool(config.pod_cidr)
        self._nodes = node.Nodes(client, config)
        self._workers: dict[str, pod.Worker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Uids (to their node) whose worker has finished: late watch events start nothing.
        self._done: dict[str, str] = {}
        self._deps: pod.Deps | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down cleanly."""
        timeout = aiohttp.ClientTimeout(total=None)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            self._deps = pod.Deps(
                client=self._client,
                settings=self._settings,
                pool=self._pool,
                http=http,
                agent_environment=dict(os.environ),
            )
            self._settings.pods_dir.mkdir(parents=True, exist_ok=True)
            if not await self._register(stop):
                return
            await self._adopt()
            beat = asyncio.create_task(self._nodes.heartbeat(stop))
            watches = [
                asyncio.create_task(self._watch(name)) for name in self._settings.node_names()
            ]
            log.info(
                "node agent up: nodes %s, pod range %s, state in %s",
                ", ".join(self._settings.node_names()),
                self._settings.pod_cidr,
                self._settings.state_dir,
            )
            await stop.wait()
            log.info("node agent stopping")
            for task in watches:
                task.cancel()
            for task in watches:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._shutdown_workers()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await self._nodes.mark_not_ready()

    # -- start-up ------------------------------------------------------------------------

    async def _register(self, stop: asyncio.Event) -> bool:
        """Register the nodes, retrying while the API server is not reachable yet; False when
        told to stop first."""
        while not stop.is_set():
            try:
                await self._nodes.register()
                return True
            except (lightkube.ApiError, httpx2.HTTPError, OSError) as error:
                log.warning("registering nodes failed: %s; retrying", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RELIST_SECONDS)
        return False

    async def _list(self, node_name: str) -> tuple[list[podspec.Pod], str]:
        listing = self._client.list(
            core.Pod, namespace=lightkube.ALL_NS, fields={"spec.nodeName": node_name}
        )
        pods = [parsed async for item in listing if (parsed := _parse(item)) is not None]
        return pods, listing.resourceVersion

    async def _adopt(self) -> None:
        """Reserve the addresses of pods already here; adopt or stop recorded processes."""
        present: dict[str, podspec.Pod] = {}
        for name in self._settings.node_names():
            pods, _ = await self._list(name)
            present.update((p.uid, p) for p in pods)
        for existing in present.values():
            keeps = existing.pod_ip and not existing.terminal and not existing.host_network
            if keeps and not self._pool.reserve(existing.uid, existing.pod_ip or ""):
                log.warning("%s: cannot keep address %s", existing.key, existing.pod_ip)
        adopted: dict[str, dict[str, state.Found]] = {}
        for found in state.scan(self._settings.pods_dir):
            record = found.record
            owner = present.get(found.uid)
            if not process.is_alive(record.pid, record.ticks):
                state.remove_record(found.pod_dir, found.container)
            elif owner is None or owner.terminal:
                log.info(
                    "stopping orphan pid %d (%s, container %s): its pod is %s",
                    record.pid,
                    found.pod_dir.name,
                    found.container,
                    "gone" if owner is None else "finished",
                )
                await process.stop_recorded(record.pid, record.ticks, 2.0)
                state.remove_record(found.pod_dir, found.container)
            else:
                adopted.setdefault(found.uid, {})[found.container] = found
        for uid, existing in present.items():
            self._start_worker(existing, adopted.get(uid, {}))

    # -- watching ------------------------------------------------------------------------

    async def _watch(self, node_name: str) -> None:
        while True:
            try:
                pods, version = await self._list(node_name)
                self._sync(node_name, pods)
                stream = self._client.watch(
                    core.Pod,
                    namespace=lightkube.ALL_NS,
                    fields={"spec.nodeName": node_name},
                    resource_version=version,
                    server_timeout=_WATCH_SECONDS,
                )
                async for kind, item in stream:
                    self._event(kind, item)
            except lightkube.ApiError as error:
                if error.status.code == 410:
                    log.info("pods on %s: watch expired (410); listing again", node_name)
                    continue
                log.warning("pods on %s: watch failed: %s; listing again", node_name, error)
            except (httpx2.HTTPError, OSError) as error:
                log.warning("pods on %s: watch dropped: %s; listing again", node_name, error)
            await asyncio.sleep(_RELIST_SECONDS)

    def _sync(self, node_name: str, pods: Iterable[podspec.Pod]) -> None:
        listed = {p.uid: p for p in pods}
        # A finished pod the API server no longer lists needs remembering no more.
        for uid, where in list(self._done.items()):
            if where == node_name and uid not in listed:
                del self._done[uid]
        for uid, worker in list(self._workers.items()):
            if worker.pod.node_name == node_name and uid not in listed:
                worker.vanish()
        for existing in listed.values():
            self._deliver(existing)

    def _event(self, kind: str, item: core.Pod) -> None:
        parsed = _parse(item)
        if parsed is None:
            return
        if kind == "DELETED":
            worker = self._workers.get(parsed.uid)
            if worker is not None:
                worker.update(parsed)
                worker.vanish()
            return
        self._deliver(parsed)

    def _deliver(self, current: podspec.Pod) -> None:
        if current.uid in self._done:
            return
        worker = self._workers.get(current.uid)
        if worker is None:
            self._start_worker(current, {})
        else:
            worker.update(current)

    def _start_worker(self, current: podspec.Pod, adopted: Mapping[str, state.Found]) -> None:
        if current.uid in self._workers or self._deps is None:
            return
        worker = pod.Worker(self._deps, current, adopted)
        self._workers[current.uid] = worker
        task = asyncio.create_task(worker.run())
        self._tasks[current.uid] = task
        task.add_done_callback(lambda _: self._forget(current.uid, current.node_name))

    def _forget(self, uid: str, node_name: str) -> None:
        self._workers.pop(uid, None)
        self._tasks.pop(uid, None)
        self._done[uid] = node_name

    async def _shutdown_workers(self) -> None:
        for worker in self._workers.values():
            worker.shutdown()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _parse(item: core.Pod) -> podspec.Pod | None:
    raw = item.to_dict()
    try:
        return podspec.parse_pod(raw)
    except podspec.SpecError as error:
        metadata = raw.get("metadata") or {}
        log.error(
            "pod %s/%s: cannot run it: %s",
            metadata.get("namespace"),
            metadata.get("name"),
            error,
        )
        return None
