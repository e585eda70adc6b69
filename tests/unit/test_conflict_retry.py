"""Writes that meet a 409 Conflict are retried on a fresh read, with backoff, and give up."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from lightkube.models import meta_v1

from kvscale_operator import config, kube


def api_error(code: int) -> kube.ApiError:
    return kube.ApiError(status=meta_v1.Status(code=code, message=f"error {code}"))


class Sleeps:
    """Records the waits instead of sleeping: no real time passes in these tests."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_a_conflict_is_retried_after_each_backoff_until_it_succeeds() -> None:
    outcomes: list[Any] = [api_error(409), api_error(409), "written"]
    sleeps = Sleeps()
    retried: list[int] = []

    async def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    result = asyncio.run(
        kube.retry_on_conflict(
            attempt, (0.1, 0.2, 0.4), sleep=sleeps, on_retry=lambda: retried.append(1)
        )
    )
    assert result == "written"
    assert sleeps.waits == [0.1, 0.2]
    assert len(retried) == 2


def test_after_the_last_backoff_the_conflict_is_raised() -> None:
    sleeps = Sleeps()
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        raise api_error(409)

    with pytest.raises(kube.ApiError) as raised:
        asyncio.run(kube.retry_on_conflict(attempt, (0.1, 0.2), sleep=sleeps))
    assert kube.is_conflict(raised.value)
    assert len(calls) == 3
    assert sleeps.waits == [0.1, 0.2]


@pytest.mark.parametrize("error", [api_error(422), api_error(404), ValueError("not an API error")])
def test_other_errors_are_not_retried(error: Exception) -> None:
    sleeps = Sleeps()

    async def attempt() -> None:
        raise error

    with pytest.raises(type(error)):
        asyncio.run(kube.retry_on_conflict(attempt, (0.1,), sleep=sleeps))
    assert sleeps.waits == []


class Plain:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = copy.deepcopy(data)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)


class RacingClient:
    """An API server holding one InferenceDeployment, where another writer changes it between
    the operator's first read and its first write (so the precondition fails once)."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {
            "metadata": {"name": "llama", "namespace": "ns", "resourceVersion": "1"},
            "status": {"occupancy": 0.5},
        }
        self.reads = 0
        self.patches: list[dict[str, Any]] = []

    async def get(self, resource: Any, name: str, *, namespace: str) -> Plain:
        self.reads += 1
        snapshot = Plain(self.obj)
        if self.reads == 1:  # the other writer lands right after this read
            self.obj["status"]["occupancy"] = 0.9
            self.obj["metadata"]["resourceVersion"] = "2"
        return snapshot

    async def patch(self, resource: Any, name: str, body: dict[str, Any], **options: Any) -> Plain:
        self.patches.append({"body": copy.deepcopy(body), **options})
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise api_error(409)
        self.obj["status"].update(body["status"])
        self.obj["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return Plain(self.obj)


def test_status_update_reruns_on_a_fresh_read_and_keeps_the_other_writers_field() -> None:
    client = RacingClient()
    sleeps = Sleeps()
    api = kube.Kube(client, config.Settings(), sleep=sleeps)  # type: ignore[arg-type]
    seen: list[float] = []

    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(obj["status"]["occupancy"])
        return {"readyReplicas": 1}

    result = asyncio.run(api.update_status("ns", "llama", mutate))
    assert seen == [0.5, 0.9]  # the second attempt saw the other writer's change
    assert [patch["body"]["metadata"]["resourceVersion"] for patch in client.patches] == ["1", "2"]
    assert client.patches[-1]["field_manager"] == "kvscale-operator"
    assert sleeps.waits == [config.Settings().conflict_backoffs[0]]
    assert result is not None
    assert result["status"] == {"occupancy": 0.9, "readyReplicas": 1}


def test_status_update_writes_nothing_when_nothing_changed() -> None:
    client = RacingClient()
    api = kube.Kube(client, config.Settings(), sleep=Sleeps())  # type: ignore[arg-type]
    asyncio.run(api.update_status("ns", "llama", lambda obj: {}))
    assert client.patches == []
