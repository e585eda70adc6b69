"""Helpers for the autoscaler's end-to-end stories (test_autoscale_e2e, test_autoscale_twin):
kubectl reads in one namespace, killing a pod's container processes, load sent by pod IP,
and waiting while checking that the Deployment's count does not move. Does I/O.

Pods run on the real node: a container's process is found through the node's containerd, its
log through `kubectl logs`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from tests.integration import realnode
from tests.support import wait

from kvscale.api import models
from kvscale.localstack import cluster as local


class Story:
    """kubectl reads about one InferenceDeployment in one namespace, and its pods' processes."""

    def __init__(self, cluster: local.Cluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name

    @property
    def selector(self) -> str:
        return f"kvscale.dev/inference-deployment={self.name}"

    def get(self, *args: str) -> Any:
        out = self.cluster.kubectl("get", "-n", self.namespace, *args, "-o", "json").stdout
        return json.loads(out)

    def infd(self) -> dict[str, Any]:
        found: dict[str, Any] = self.get("infd", self.name)
        return found

    def condition(self, kind: str) -> dict[str, Any] | None:
        for item in (self.infd().get("status") or {}).get("conditions") or []:
            if item["type"] == kind:
                return dict(item)
        return None

    def replicas(self) -> tuple[int, int]:
        """(spec.replicas, metadata.generation) of the engine Deployment."""
        deployment = self.get("deployment", self.name)
        return deployment["spec"]["replicas"], deployment["metadata"]["generation"]

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-l", self.selector)["items"]
        return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]

    def ready_ips(self) -> list[str]:
        return [pod["status"]["podIP"] for pod in self.pods() if is_ready(pod)]

    def events(self, reason: str) -> list[dict[str, Any]]:
        """This InferenceDeployment's Events of `reason` (not those of others in the
        namespace)."""
        items = self.get("events", "--field-selector", f"reason={reason}")["items"]
        return [
            item
            for item in items
            if item["involvedObject"]["kind"] == models.KIND
            and item["involvedObject"]["name"] == self.name
        ]

    def scaled(self, replicas: int, reason: str, timeout_s: float) -> list[dict[str, Any]]:
        """Wait for the engine Deployment at `replicas`, then for an Event of `reason`
        (ScaledUp, ScaledDown); return the Events of that reason."""
        try:
            wait.eventually(
                lambda: self.replicas()[0] == replicas,
                f"the scaling to {replicas}",
                timeout_s=timeout_s,
                retry_on=wait.NOT_MADE_YET,
            )
        except AssertionError as error:
            # Why the operator held is in its conditions and the pods' container states, which
            # are gone once the namespace is: put them in the failure.
            try:
                logs = self.diagnostics()
            except (subprocess.CalledProcessError, OSError, KeyError) as unreadable:
                logs = f"(no container logs: {unreadable!r})"
            raise AssertionError(f"{error}\n{self.describe()}\n{logs}") from error
        events: list[dict[str, Any]] = wait.eventually(
            lambda: self.events(reason) or None,
            f"a {reason} Event",
            timeout_s=90,
            retry_on=wait.NOT_MADE_YET,
        )
        return events

    def describe(self) -> str:
        """The CR's status and its pods' readiness and container states, for a failure."""
        lines: list[str] = []
        try:
            status = self.infd().get("status") or {}
            lines.append(f"desiredReplicas: {status.get('desiredReplicas')}")
            for item in status.get("conditions") or []:
                lines.append(
                    f"{item['type']}={item['status']} {item.get('reason')}: {item.get('message')}"
                )
            for pod in self.pods():
                containers = [
                    f"{c['name']} ready={c.get('ready')} restarts={c.get('restartCount')} "
                    f"state={c.get('state')}"
                    for c in pod["status"].get("containerStatuses") or []
                ]
                lines.append(
                    f"pod {pod['metadata']['name']} ready={is_ready(pod)} "
                    f"phase={pod['status'].get('phase')}: {'; '.join(containers)}"
                )
        except wait.NOT_MADE_YET as error:
            lines.append(f"(could not read the state: {error!r})")
        return "\n".join(lines)

    def recorded(self, replicas: int) -> dict[str, Any]:
        """The CR's status once its scaling history ends with a scaling to `replicas` (the
        history is written just after the scale, in the same tick)."""

        def status() -> dict[str, Any] | None:
            found: dict[str, Any] = self.infd()["status"]
            history = found.get("scalingHistory") or []
            return found if history and history[-1]["toReplicas"] == replicas else None

        return wait.eventually(
            status,
            f"the scaling to {replicas} in status.scalingHistory",
            timeout_s=90,
            retry_on=wait.NOT_MADE_YET,
        )

    def kill(self, pod: dict[str, Any], container: str) -> bool:
        """SIGKILL the container's processes, as a crash or an OOM kill would end them."""
        return self.signal(pod, container, signal.SIGKILL)

    def signal(self, pod: dict[str, Any], container: str, sig: signal.Signals) -> bool:
        """Send `sig` to a running container's first process (PID 1 of the container, which
        the container lives and dies with). False when the container is not running
        (restarting, in back-off)."""
        try:
            os.kill(self._task_pid(pod["metadata"]["name"], container), sig)
        except (OSError, ValueError, KeyError, LookupError, subprocess.CalledProcessError):
            return False
        return True

    def _task_pid(self, pod_name: str, container: str) -> int:
        """The host pid of a running container's first process on the real node (LookupError
        when the container is not running)."""
        pod = self.get("pod", pod_name)
        for status in pod["status"].get("containerStatuses") or []:
            if status["name"] == container and "running" in (status.get("state") or {}):
                container_id = status["containerID"].removeprefix("containerd://")
                try:
                    return realnode.container_pid(self.cluster, container_id)
                except AssertionError as gone:
                    raise LookupError(str(gone)) from None
        raise LookupError(f"{pod_name}: container {container} is not running")

    def diagnostics(self) -> str:
        """Each pod's status and the tail of each of its containers' logs (for a failure)."""
        lines = []
        for pod in self.get("pods", "-l", self.selector)["items"]:
            lines.append(f"pod {pod['metadata']['name']}: {json.dumps(pod.get('status'))}")
            for container in pod["spec"]["containers"]:
                found = self.cluster.kubectl(
                    "logs", "-n", self.namespace, pod["metadata"]["name"],
                    "-c", container["name"], "--tail=15", check=False,
                )  # fmt: skip
                lines.append(f"--- {container['name']}:\n{found.stdout}{found.stderr}")
        return "\n".join(lines)

    def names(self, pod_name: str, words: str) -> bool:
        """MetricsAvailable is False and names the pod, with `words` in the message."""
        condition = self.condition("MetricsAvailable")
        return bool(
            condition
            and condition["status"] == "False"
            and f"{pod_name}: " in condition["message"]
            and words in condition["message"]
        )


def wait_ready(story: Story, count: int) -> list[str]:
    """Wait for exactly `count` ready engine pods; their IPs. Prints the story's diagnostics
    when they do not come."""
    try:
        found: list[str] = wait.eventually(
            lambda: ((ips := story.ready_ips()) and len(ips) == count and ips) or None,
            f"{count} ready replica(s)",
            timeout_s=120,
            retry_on=wait.NOT_MADE_YET,
        )
    except pytest.fail.Exception:
        print(story.diagnostics())
        raise
    return found


def metrics_available(story: Story) -> bool:
    condition = story.condition("MetricsAvailable")
    return bool(condition and condition["status"] == "True")


def wait_metrics_available(story: Story) -> None:
    """Wait for MetricsAvailable=True: every ready pod's sidecar reports."""
    wait.eventually(
        lambda: metrics_available(story),
        "MetricsAvailable=True",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        item["type"] == "Ready" and item["status"] == "True"
        for item in pod.get("status", {}).get("conditions", [])
    )


class Watch:
    """The engine Deployment's count while some report is missing.

    The count may change only on a tick that had every ready pod's report fresh: the operator
    writes the scale, status.lastScaleTime and MetricsAvailable in the same tick, so a change
    is allowed when MetricsAvailable is True and turned True no later than that scale. Any
    other change (a scale while a pod's load is unknown) fails the test at once.
    """

    def __init__(self, story: Story) -> None:
        self.story = story
        self.count, self.generation = story.replicas()
        self.changes: list[tuple[int, int]] = []

    def check(self, not_before: float | None = None, what: str = "") -> None:
        replicas, generation = self.story.replicas()
        if (replicas, generation) == (self.count, self.generation):
            return
        status = self.story.infd().get("status") or {}
        condition = self.story.condition("MetricsAvailable") or {}
        fresh = condition.get("status") == "True" and str(status.get("lastScaleTime")) >= str(
            condition.get("lastTransitionTime")
        )
        early = not_before is not None and time.monotonic() < not_before
        seen = f"MetricsAvailable: {condition}; lastScaleTime: {status.get('lastScaleTime')}"
        assert fresh, f"scaled from {self.count} to {replicas} {what}; {seen}"
        assert not early, f"scaled from {self.count} to {replicas} {what}, too early; {seen}"
        self.changes.append((self.count, replicas))
        self.count, self.generation = replicas, generation


def hold(
    watch: Watch,
    until: Callable[[], bool],
    what: str,
    timeout_s: float,
    not_before: float | None = None,
) -> None:
    """Polls until `until()`, checking the Deployment's count at every poll (`Watch`)."""

    def checked() -> bool:
        watch.check(not_before, f"while waiting for {what}")
        return until()

    wait.eventually(checked, what, timeout_s=timeout_s, interval_s=1.0)


class Load:
    """Concurrent completions against `targets` (pod IPs), least loaded first, from a thread."""

    def __init__(self, body: dict[str, Any], port: int, concurrency: int) -> None:
        self.body = body
        self.port = port
        self.concurrency = concurrency
        self.targets: list[str] = []
        self.in_flight: dict[str, int] = {}
        self.completed = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=150)
            self._thread = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            targets = list(self.targets)
            if not targets:
                await asyncio.sleep(0.2)
                continue
            ip = min(targets, key=lambda target: self.in_flight.get(target, 0))
            self.in_flight[ip] = self.in_flight.get(ip, 0) + 1
            try:
                url = f"http://{ip}:{self.port}/v1/completions"
                async with session.post(url, json=self.body) as response:
                    await response.read()
                    if response.status == 200:
                        self.completed += 1
                    else:
                        self.failed += 1
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.failed += 1
                await asyncio.sleep(0.5)
            finally:
                self.in_flight[ip] -= 1
