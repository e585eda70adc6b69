"""The node agent rides out API conflicts and expired watches (a fake API client here; the real
API server is exercised in tests/integration/test_node_agent.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import lightkube
import pytest
from lightkube.models import coordination_v1 as coordination_models
from lightkube.models import core_v1 as core_models
from lightkube.models import meta_v1
from lightkube.resources import coordination_v1 as coordination
from lightkube.resources import core_v1 as core

from kvscale.localstack.nodeagent import agent, ipam, node, pod, podspec, settings


def _error(code: int) -> lightkube.ApiError:
    return lightkube.ApiError(status=meta_v1.Status(code=code, reason=str(code), message=str(code)))


def _settings(tmp_path: Path) -> settings.Settings:
    return settings.Settings(
        kubeconfig=tmp_path / "kubeconfig",
        nodes=1,
        gpus_per_node=1,
        node_prefix="n",
        pod_cidr=ipaddress.IPv4Network("127.3.9.0/24"),
        state_dir=tmp_path,
    )


def _lease(version: str) -> coordination.Lease:
    return coordination.Lease(
        metadata=meta_v1.ObjectMeta(
            name="n-0", namespace="kube-node-lease", resourceVersion=version
        ),
        spec=coordination_models.LeaseSpec(holderIdentity="n-0"),
    )


@dataclasses.dataclass
class LeaseApi:
    """Leases: `conflicts` replaces fail with 409 before one succeeds; maybe none exists."""

    conflicts: int = 0
    exists: bool = True
    calls: list[str] = dataclasses.field(default_factory=list)
    created: list[Any] = dataclasses.field(default_factory=list)

    async def get(self, kind: Any, name: str, *, namespace: str | None = None) -> Any:
        self.calls.append(f"get {kind.__name__}")
        if kind is core.Node:
            return core.Node(metadata=meta_v1.ObjectMeta(name=name, uid="node-uid"))
        if not self.exists:
            raise _error(404)
        return _lease(str(len(self.calls)))

    async def create(self, obj: Any) -> Any:
        self.calls.append(f"create {type(obj).__name__}")
        self.created.append(obj)
        self.exists = True
        return _lease("1")

    async def replace(self, obj: Any) -> Any:
        self.calls.append(f"replace {obj.metadata.resourceVersion}")
        if self.conflicts:
            self.conflicts -= 1
            raise _error(409)
        return obj


def test_a_lease_conflict_reads_the_lease_again_and_retries(tmp_path: Path) -> None:
    api = LeaseApi(conflicts=2)
    nodes = node.Nodes(cast(lightkube.AsyncClient, api), _settings(tmp_path))
    asyncio.run(nodes.renew_lease("n-0"))
    assert api.calls == [
        "get Lease", "replace 1", "get Lease", "replace 3", "get Lease", "replace 5",
    ]  # fmt: skip


def test_lease_conflicts_that_never_end_give_up_for_this_round(tmp_path: Path) -> None:
    api = LeaseApi(conflicts=100)
    nodes = node.Nodes(cast(lightkube.AsyncClient, api), _settings(tmp_path))
    with pytest.raises(RuntimeError, match="kept conflicting"):
        asyncio.run(nodes.renew_lease("n-0"))


def test_a_missing_lease_is_created_owned_by_its_node(tmp_path: Path) -> None:
    api = LeaseApi(exists=False)
    nodes = node.Nodes(cast(lightkube.AsyncClient, api), _settings(tmp_path))
    asyncio.run(nodes.renew_lease("n-0"))
    (lease,) = api.created
    assert lease.metadata.namespace == "kube-node-lease"
    assert lease.metadata.ownerReferences[0].uid == "node-uid"
    assert lease.spec.leaseDurationSeconds == 40
    assert api.calls[-1] == "replace 1"  # then renewed


def _pod(uid: str) -> core.Pod:
    return core.Pod(
        metadata=meta_v1.ObjectMeta(name=f"p-{uid}", namespace="default", uid=uid),
        spec=core_models.PodSpec(
            nodeName="n-0", containers=[core_models.Container(name="c", image="x")]
        ),
    )


class Listing:
    """What `AsyncClient.list` returns: an async iterable with the list's resourceVersion."""

    def __init__(self, items: list[core.Pod], version: str) -> None:
        self._items = items
        self.resourceVersion = version

    async def __aiter__(self) -> AsyncIterator[core.Pod]:
        for item in self._items:
            yield item


@dataclasses.dataclass
class WatchApi:
    """The first watch fails with 410 Gone; the second delivers one event, then idles."""

    lists: list[str] = dataclasses.field(default_factory=list)
    watches: list[str | None] = dataclasses.field(default_factory=list)

    def list(self, kind: Any, **options: Any) -> Listing:
        self.lists.append(options["fields"]["spec.nodeName"])
        return Listing([_pod(f"listed-{len(self.lists)}")], version=str(10 * len(self.lists)))

    async def watch(self, kind: Any, **options: Any) -> AsyncIterator[tuple[str, core.Pod]]:
        self.watches.append(options["resource_version"])
        if len(self.watches) == 1:
            raise _error(410)
        yield "ADDED", _pod("watched")
        await asyncio.Event().wait()


class Recorder(agent.Agent):
    """The agent with workers replaced by a record of what it would run or stop."""

    def __init__(self, client: lightkube.AsyncClient, config: settings.Settings) -> None:
        super().__init__(client, config)
        self.delivered: list[str] = []
        self.watched = asyncio.Event()

    def _deliver(self, current: podspec.Pod) -> None:
        self.delivered.append(current.uid)
        if current.uid == "watched":
            self.watched.set()


def test_an_expired_watch_lists_again_and_resumes_from_the_new_version(tmp_path: Path) -> None:
    api = WatchApi()
    recorder = Recorder(cast(lightkube.AsyncClient, api), _settings(tmp_path))

    async def scenario() -> None:
        task = asyncio.create_task(recorder._watch("n-0"))
        await recorder.watched.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert api.lists == ["n-0", "n-0"]
    assert api.watches == ["10", "20"]
    assert recorder.delivered == ["listed-1", "listed-2", "watched"]


def _deps(api: object, config: settings.Settings, http: aiohttp.ClientSession) -> pod.Deps:
    """A pod worker's dependencies with `api` as its API client."""
    return pod.Deps(
        client=cast(lightkube.AsyncClient, api),
        settings=config,
        pool=ipam.Pool(config.pod_cidr),
        http=http,
        agent_environment={},
    )


@dataclasses.dataclass
class StatusApi:
    """Status patches conflict (409); the pod by that name has `current_uid` (None: gone)."""

    current_uid: str | None
    patches: int = 0

    async def patch(self, *args: Any, **options: Any) -> Any:
        self.patches += 1
        raise _error(409)

    async def get(self, kind: Any, name: str, *, namespace: str | None = None) -> Any:
        if self.current_uid is None:
            raise _error(404)
        return core.Pod(metadata=meta_v1.ObjectMeta(name=name, uid=self.current_uid))


@pytest.mark.parametrize(
    ("current_uid", "retry", "vanished"),
    [("uid-1", True, False), ("uid-2", False, True), (None, False, True)],
)
def test_a_status_conflict_retries_unless_the_pod_was_replaced(
    tmp_path: Path, current_uid: str | None, retry: bool, vanished: bool
) -> None:
    api = StatusApi(current_uid=current_uid)
    spec = podspec.parse_pod(_pod("uid-1").to_dict())
    config = _settings(tmp_path)

    async def scenario() -> bool:
        async with aiohttp.ClientSession() as http:
            deps = _deps(api, config, http)
            worker = pod.Worker(deps, spec)
            written = await worker._write()
            assert (worker._stop_reason is pod.Stop.VANISH) is vanished
            return written

    assert asyncio.run(scenario()) is not retry
    assert api.patches == 1


@dataclasses.dataclass
class AcceptingApi:
    """Status patches succeed and are kept."""

    patches: list[Any] = dataclasses.field(default_factory=list)

    async def patch(self, kind: Any, name: str, body: Any, **options: Any) -> Any:
        self.patches.append(body)
        return None


def test_a_status_someone_else_overwrote_is_written_back(tmp_path: Path) -> None:
    """The node lifecycle controller marks pods NotReady when their node's Lease lapses (an API
    server or etcd outage); the agent's own view has not changed, yet it must write it back."""
    api = AcceptingApi()
    config = _settings(tmp_path)
    raw = _pod("uid-1").to_dict()

    def seen(status: dict[str, Any]) -> podspec.Pod:
        return podspec.parse_pod({**raw, "status": status})

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            deps = _deps(api, config, http)
            worker = pod.Worker(deps, podspec.parse_pod(raw))
            assert await worker._write()
            written = api.patches[-1]["status"]
            # The watch brings our own write back: nothing to do.
            worker.update(seen(written))
            assert not worker._dirty.is_set()
            assert await worker._write()
            assert len(api.patches) == 1
            # Another writer flips a condition the agent owns.
            flipped = [
                {**item, "status": "True" if item["status"] == "False" else "False"}
                if item["type"] == "Ready"
                else item
                for item in written["conditions"]
            ]
            worker.update(seen({**written, "conditions": flipped}))
            assert worker._dirty.is_set()
            assert await worker._write()
            assert len(api.patches) == 2
            assert api.patches[-1]["status"]["conditions"] == written["conditions"]

    asyncio.run(scenario())
