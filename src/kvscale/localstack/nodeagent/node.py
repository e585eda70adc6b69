"""The agent's Node objects: registration, heartbeats, and NotReady on shutdown. Does I/O.

Each node is registered with fake but schedulable capacity (`nvidia.com/gpu`, plenty of cpu and
memory, 110 pods), kubelet's well-known labels and a Ready condition. Two heartbeats keep the
node lifecycle controller (in kube-controller-manager) from marking it NotReady, as kubelet's do:
a Lease in `kube-node-lease` renewed every quarter of its duration, and the Ready condition's
`lastHeartbeatTime` refreshed less often. Lease renewals are updates carrying the
resourceVersion; a conflict (409) means someone else wrote it, so the agent reads it again and
retries.

On shutdown the nodes are kept and marked NotReady (reason `KubeletStopped`) rather than
deleted: deleting a node makes the pod garbage collector delete every pod bound to it, while a
NotReady node keeps its pods for the agent's next start (the node lifecycle controller taints it
and evicts pods only after the default 5-minute toleration).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import platform
from collections.abc import Mapping

import httpx2
import lightkube
from lightkube.models import coordination_v1 as coordination_models
from lightkube.models import core_v1 as models
from lightkube.models import meta_v1
from lightkube.resources import coordination_v1 as coordination
from lightkube.resources import core_v1 as core
from lightkube.types import PatchType

from kvscale.localstack.nodeagent import ipam, settings, status

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
AGENT_VERSION = "v0.1.0-kvscale-node-agent"
GPU_RESOURCE = "nvidia.com/gpu"
# Generous fake capacity: the tests and demos schedule by GPU count, never by cpu or memory.
FAKE_CPU = "64"
FAKE_MEMORY = "512Gi"
FAKE_PODS = "110"
FAKE_STORAGE = "1Ti"
_CONFLICT_RETRIES = 5


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def capacity(gpus: int) -> dict[str, str]:
    return {
        "cpu": FAKE_CPU,
        "memory": FAKE_MEMORY,
        "pods": FAKE_PODS,
        "ephemeral-storage": FAKE_STORAGE,
        GPU_RESOURCE: str(gpus),
    }


def labels(name: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64" if platform.machine() in ("x86_64", "AMD64") else "arm64",
        "node.kubernetes.io/instance-type": "local",
        "nvidia.com/gpu.present": "true",
    }


def _conditions(ready: bool, now: str, since: Mapping[str, str]) -> list[dict[str, object]]:
    """The node's conditions; `since` holds each condition's last transition time, kept when
    its status is unchanged."""
    ready_status = "True" if ready else "False"
    rows = [
        (
            "Ready",
            ready_status,
            "KubeletReady" if ready else "KubeletStopped",
            "kvscale node agent is posting ready status" if ready else "kvscale node agent stopped",
        ),
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
    ]
    return [
        {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since.get(f"{kind}={value}", now),
        }
        for kind, value, reason, message in rows
    ]


def node_status(name: str, gpus: int, conditions: list[dict[str, object]]) -> dict[str, object]:
    return {
        "capacity": capacity(gpus),
        "allocatable": capacity(gpus),
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": ipam.HOST_IP},
            {"type": "Hostname", "address": name},
        ],
        "nodeInfo": {
            "machineID": name,
            "systemUUID": name,
            "bootID": "",
            "kernelVersion": platform.release(),
            "osImage": "kvscale local node",
            "containerRuntimeVersion": "local://" + AGENT_VERSION,
            "kubeletVersion": AGENT_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": labels(name)["kubernetes.io/arch"],
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }


class Nodes:
    """Registers the agent's nodes and keeps them alive (see the module docstring)."""

    def __init__(self, client: lightkube.AsyncClient, config: settings.Settings) -> None:
        self._client = client
        self._settings = config
        self._since: dict[str, dict[str, str]] = {}
        self._leases: dict[str, coordination.Lease] = {}

    def _transition_times(self, node: core.Node | None) -> dict[str, str]:
        times: dict[str, str] = {}
        if node is None or node.status is None:
            return times
        for condition in node.status.conditions or []:
            if condition.lastTransitionTime is not None:
                times[f"{condition.type}={condition.status}"] = status.rfc3339(
                    condition.lastTransitionTime
                )
        return times

    async def register(self) -> None:
        """Create each node, or bring an existing one up to date, and mark it Ready."""
        for name in self._settings.node_names():
            existing: core.Node | None
            try:
                existing = await self._client.get(core.Node, name)
            except lightkube.ApiError as error:
                if error.status.code != 404:
                    raise
                existing = None
            if existing is None:
                await self._client.create(
                    core.Node(
                        metadata=meta_v1.ObjectMeta(name=name, labels=labels(name)),
                        spec=models.NodeSpec(),
                    )
                )
                log.info("registered node %s", name)
            else:
                await self._client.patch(
                    core.Node,
                    name,
                    {"metadata": {"labels": labels(name)}},
                    patch_type=PatchType.MERGE,
                )
                log.info("node %s exists; taking it over", name)
            self._since[name] = self._transition_times(existing)
            await self.post_status(name, ready=True)
            await self.renew_lease(name)

    async def post_status(self, name: str, *, ready: bool) -> None:
        now = status.rfc3339(_now())
        conditions = _conditions(ready, now, self._since.get(name, {}))
        body = node_status(name, self._settings.gpus_per_node, conditions)
        await self._client.patch(
            core.Node.Status, name, {"status": body}, patch_type=PatchType.STRATEGIC
        )
        self._since[name] = {
            f"{c['type']}={c['status']}": str(c["lastTransitionTime"]) for c in conditions
        }

    async def renew_lease(self, name: str) -> None:
        """Create or renew the node's Lease; on a conflict, read it again and retry."""
        for _ in range(_CONFLICT_RETRIES):
            lease = self._leases.get(name)
            try:
                if lease is None:
                    lease = await self._read_or_create_lease(name)
                assert lease.spec is not None
                lease.spec.holderIdentity = name
                lease.spec.leaseDurationSeconds = self._settings.lease_seconds
                lease.spec.renewTime = _now()
                self._leases[name] = await self._client.replace(lease)
                return
            except lightkube.ApiError as error:
                self._leases.pop(name, None)
                if error.status.code not in (404, 409):
                    raise
                log.info("lease %s: %s; reading it again", name, error.status.reason)
        raise RuntimeError(f"lease {LEASE_NAMESPACE}/{name}: kept conflicting, gave up this round")

    async def _read_or_create_lease(self, name: str) -> coordination.Lease:
        try:
            return await self._client.get(coordination.Lease, name, namespace=LEASE_NAMESPACE)
        except lightkube.ApiError as error:
            if error.status.code != 404:
                raise
        node = await self._client.get(core.Node, name)
        owners = None
        if node.metadata is not None and node.metadata.uid:
            # Owned by its node, as kubelet's: deleting the node deletes its lease.
            owners = [
                meta_v1.OwnerReference(
                    apiVersion="v1", kind="Node", name=name, uid=node.metadata.uid
                )
            ]
        return await self._client.create(
            coordination.Lease(
                metadata=meta_v1.ObjectMeta(
                    name=name, namespace=LEASE_NAMESPACE, ownerReferences=owners
                ),
                spec=coordination_models.LeaseSpec(
                    holderIdentity=name,
                    leaseDurationSeconds=self._settings.lease_seconds,
                    renewTime=_now(),
                ),
            )
        )

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Renew leases every quarter lease duration and post node status now and then, until
        `stop` is set. Errors are logged and retried at the next beat."""
        renew_every = self._settings.lease_seconds / 4
        status_every = self._settings.node_status_seconds
        loop = asyncio.get_running_loop()
        next_status = loop.time() + status_every
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), renew_every)
                return
            except TimeoutError:
                pass
            post = loop.time() >= next_status
            if post:
                next_status = loop.time() + status_every
            for name in self._settings.node_names():
                try:
                    await self.renew_lease(name)
                    if post:
                        await self.post_status(name, ready=True)
                except (lightkube.ApiError, httpx2.HTTPError, RuntimeError) as error:
                    log.warning("node %s heartbeat failed: %s", name, error)

    async def mark_not_ready(self) -> None:
        for name in self._settings.node_names():
            try:
                await self.post_status(name, ready=False)
                log.info("node %s marked NotReady", name)
            except (lightkube.ApiError, httpx2.HTTPError) as error:
                log.warning("node %s: could not mark NotReady: %s", name, error)
