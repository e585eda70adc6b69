"""Chaos, first scenario (issue 14, item c): one engine killed (SIGKILL), or hung (SIGSTOP),
while serving.

Two engine twins behind the operator, light steady load spread over both by pod IP, with
request accounting per engine. One engine's process group is killed (or stopped, then resumed
after the watch) mid-stream. Goals: no
request fails on the surviving engine, the requests cut are at most those in flight on the
killed engine at the kill (plus those a router sent to it before it left the ready set), and
the Deployment's count does not move (no scale action on missing data, none spurious).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from tests.integration.autoscale_story import Story, Watch, is_ready
from tests.integration.conftest import Operator
from tests.support import manifest, wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "chaos"
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
ENGINE_PORT = 8000


def infd() -> dict[str, Any]:
    scaling = manifest.autoscaling(8, 15)
    scaling["minReplicas"] = 2  # two engines from the start: one to kill, one to keep serving
    spec = {
        "model": {"name": MODEL},
        "engine": {
            "image": "ghcr.io/kvscale/engine-twin:0.1.0",
            "blockSize": 16,
            "maxModelLen": 4096,
            "shutdownGraceSeconds": 1,
            "extraArgs": ["--num-gpu-blocks-override", "512"],
        },
        "resources": {"gpusPerReplica": 1, "cpu": "100m", "memory": "256Mi"},
        "scaling": scaling,
    }
    return manifest.inference_deployment(NAME, spec)


@dataclasses.dataclass
class Tally:
    """One engine's requests: sent, completed, failed (with why)."""

    sent: int = 0
    completed: int = 0
    failed: int = 0
    in_flight: int = 0
    why: dict[str, int] = dataclasses.field(default_factory=dict)


class Accounted:
    """Concurrent completions over the ready pod IPs (least loaded first), counted per IP.

    `targets` is the router's view of the ready set, refreshed by the caller; a request sent
    to an engine that has just died fails, and is counted against that engine.
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.targets: list[str] = []
        self.tallies: dict[str, Tally] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=150)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        body = {"model": MODEL, "prompt": [7] * 200, "max_tokens": 60}
        while not self._stop.is_set():
            targets = list(self.targets)
            if not targets:
                await asyncio.sleep(0.2)
                continue
            ip = min(targets, key=lambda t: self.tallies.setdefault(t, Tally()).in_flight)
            tally = self.tallies[ip]
            tally.sent += 1
            tally.in_flight += 1
            try:
                url = f"http://{ip}:{ENGINE_PORT}/v1/completions"
                async with session.post(url, json=body) as response:
                    await response.read()
                    if response.status == 200:
                        tally.completed += 1
                    else:
                        self._fail(tally, f"HTTP {response.status}")
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                self._fail(tally, type(error).__name__)
                await asyncio.sleep(0.2)
            finally:
                tally.in_flight -= 1

    @staticmethod
    def _fail(tally: Tally, why: str) -> None:
        tally.failed += 1
        tally.why[why] = tally.why.get(why, 0) + 1


@pytest.fixture
def story(cluster: local.Cluster, namespace: str, operator: Operator) -> Iterator[Story]:
    yield Story(cluster, namespace, NAME)
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "infd", NAME, "-n", namespace, "--wait=false")


def pause(story: Story, pod: dict[str, Any], sig: signal.Signals) -> None:
    """SIGSTOP (a hung engine) or SIGCONT its container's process group."""
    pid = json.loads(story.pid_file(pod, "engine").read_text())["pid"]
    os.killpg(pid, sig)


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_an_engine_killed_or_hung_while_serving_cuts_only_its_own_requests(
    story: Story, fault: str
) -> None:
    story.cluster.kubectl("apply", "-n", story.namespace, "-f", "-", input=json.dumps(infd()))
    ips = wait.eventually(
        lambda: ((found := story.ready_ips()) and len(found) == 2 and found) or None,
        "2 ready replicas",
        timeout_s=120,
        retry_on=wait.NOT_MADE_YET,
    )
    wait.eventually(
        lambda: (c := story.condition("MetricsAvailable")) and c["status"] == "True",
        "MetricsAvailable=True",
        timeout_s=90,
        retry_on=wait.NOT_MADE_YET,
    )
    (victim,) = [p for p in story.pods() if p["status"]["podIP"] == ips[0]]
    watch = Watch(story)
    load = Accounted(concurrency=4)
    load.targets = list(ips)
    load.start()
    try:
        time.sleep(5)
        in_flight_at_kill = load.tallies[ips[0]].in_flight
        if fault == "killed":
            assert story.kill(victim, "engine"), "the engine's process was not running"
        else:
            pause(story, victim, signal.SIGSTOP)
        sent_at_kill = load.tallies[ips[0]].sent
        sent_until_dropped: int | None = None
        faulted_at = time.monotonic()
        dropped_after_s: float | None = None
        seen: set[tuple[str, str]] = set()  # MetricsAvailable (status, reason) during the fault
        # The router's view follows readiness, as a Service's endpoints would.
        until = time.monotonic() + 30
        while time.monotonic() < until:
            load.targets = story.ready_ips() or load.targets
            if sent_until_dropped is None and ips[0] not in load.targets:
                sent_until_dropped = load.tallies[ips[0]].sent
                dropped_after_s = time.monotonic() - faulted_at
            condition = story.condition("MetricsAvailable") or {}
            seen.add((str(condition.get("status")), str(condition.get("reason"))))
            watch.check(what=f"after an engine was {fault}")
            time.sleep(0.5)
    finally:
        if fault == "hung":  # resumed, so requests stuck on it end and nothing stays stopped
            with contextlib.suppress(OSError, ValueError, KeyError):
                pause(story, victim, signal.SIGCONT)
        load.stop()
    victim_tally, survivor = load.tallies[ips[0]], load.tallies[ips[1]]
    print(f"{fault} engine: {victim_tally}; in flight at the kill: {in_flight_at_kill}")
    print(f"surviving engine: {survivor}; count changes: {watch.changes}")
    print(f"left the ready set after {dropped_after_s} s; MetricsAvailable seen: {sorted(seen)}")
    assert survivor.completed > 0
    assert survivor.failed == 0, f"the surviving engine failed requests: {survivor.why}"
    assert watch.changes == [], f"scale actions during the fault: {watch.changes}"
    # The kill cuts what was in flight; sends in the moments before readiness dropped the pod
    # may fail too (the router's window), but nothing else.
    dropped = victim_tally.sent if sent_until_dropped is None else sent_until_dropped
    window = dropped - sent_at_kill
    print(f"sent to the {fault} engine before readiness dropped it: {window}")
    assert victim_tally.failed <= in_flight_at_kill + window, victim_tally.why
    assert any(is_ready(p) for p in story.pods())
