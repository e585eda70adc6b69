"""How fast the autoscale loop reacts, and how far one operator process scales.

    .venv/bin/python benchmarks/autoscale_bench.py            # full run, about 6 minutes
    .venv/bin/python benchmarks/autoscale_bench.py --quick    # fewer repetitions

What runs. The operator side is the real `kvscale_operator.autoscaler.autoscale.Loop` with the real
`collector.Collector` (one aiohttp session) and the real decision; the sidecars are a fake
fleet: one aiohttp server process (`serve`, below) listening on one loopback address per pod
(127.77.x.y:9090), each answering `GET /v1/occupancy` with a valid v1 report whose numbers a
control endpoint sets. The scale target is a fake, in-memory Kubernetes API (no API server):
the scale patch is a method call that records when it happened. The operator side is pinned
to one core and the fleet to the other.

1. Reaction time: two ready pods at occupancy 0.3, the loop ticking every second on the real
   clock; then, at a random phase of the tick, the fleet's occupancy steps up and the time
   from the step (the control call returned) to the scale patch is measured, once per
   repetition with a fresh loop. Steps are
   run under two settings: the CRD defaults (stable 60 s, panic 6 s) and the e2e test's
   (stable 10 s, panic 4 s). The decision scales up on the tick's own demand once it is above
   the tolerance band, so the time is the tick phase, the sidecar's report age and the loop's
   own part (the tick duration, reported beside it).
2. Scale: 100, 500 and 2,000 ready pods (one sidecar each), a 2 s tick. Per tick: read the
   pods (from the inventory), ask the sampled sidecars (Knative's sample: 14, 15, 16 pods),
   adapt, decide, write status. Reported: tick duration p50/p99. Then a full scrape of every
   sidecar at once (what a tick would cost without sampling): duration, reports per second,
   errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import ipaddress
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import prometheus_client
from aiohttp import web

from kvscale import report
from kvscale_operator import kube, metrics
from kvscale_operator.autoscaler import autoscale, collector

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "autoscale_bench.json"
FLEET_BASE = ipaddress.IPv4Address("127.77.0.1")
SIDECAR_PORT = 9090
BLOCKS = 65  # 64 usable


# --- the fake sidecar fleet (runs in its own process) ---------------------------------------


def fleet_address(index: int) -> str:
    return str(FLEET_BASE + index)


def pod_name(index: int) -> str:
    return f"pod-{index:04d}"


class Fleet:
    """What every fake sidecar answers: one occupancy for all (set through /set).

    Answers are rendered once per change, not per request, so the fleet's own cost stays
    small beside the operator's: the operator reads only `age_seconds` for time, and that
    stays 0.1 s however old the rendered `served_at` is.
    """

    def __init__(self, num_pods: int) -> None:
        self.by_address = {fleet_address(index): pod_name(index) for index in range(num_pods)}
        self.answers: dict[str, bytes] = {}
        self.set(used=19, running=2, waiting=0)

    def set(self, used: int, running: int, waiting: int) -> None:
        self.answers = {
            address: self.render(pod, used, running, waiting).encode()
            for address, pod in self.by_address.items()
        }

    @staticmethod
    def render(pod: str, used: int, running: int, waiting: int) -> str:
        now = time.time()
        return report.OccupancyReport(
            pod=pod,
            health=report.Health.OK,
            sampled_at=now - 0.1,
            checked_at=now - 0.1,
            served_at=now,
            age_seconds=0.1,
            block_size=32,
            num_gpu_blocks=BLOCKS,
            num_used_blocks=used,
            usage_ratio=used / (BLOCKS - 1),
            kv_capacity_tokens=(BLOCKS - 1) * 32,
            num_requests_running=running,
            num_requests_waiting=waiting,
            preemptions_total=0,
            preemptions_per_second=0.0,
        ).to_json()


async def serve(num_pods: int) -> None:
    fleet = Fleet(num_pods)

    async def occupancy(request: web.Request) -> web.Response:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        address = sockname[0] if sockname else ""
        return web.Response(body=fleet.answers.get(address, b"{}"), content_type="application/json")

    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        fleet.set(int(body["used"]), int(body.get("running", 2)), int(body.get("waiting", 0)))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/v1/occupancy", occupancy)
    app.router.add_post("/set", control)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for address in fleet.by_address:
        await web.TCPSite(runner, address, SIDECAR_PORT, backlog=1024).start()
    control_site = web.TCPSite(runner, "127.0.0.1", 0)
    await control_site.start()
    port = runner.addresses[-1][1]
    print(json.dumps({"control": f"http://127.0.0.1:{port}/set"}), flush=True)
    # Serve until stdin closes: the benchmark closes it, or its death does.
    await asyncio.to_thread(sys.stdin.buffer.read)


class FleetProcess:
    """The fleet in a subprocess on the other core."""

    def __init__(self, num_pods: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "serve", "--pods", str(num_pods)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fleet of {num_pods} did not start")
        self.control = json.loads(line)["control"]

    async def set(self, session: aiohttp.ClientSession, **values: int) -> None:
        async with session.post(self.control, json=values) as response:
            await response.read()

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the operator side -----------------------------------------------------------------------


class FakeKube:
    """The Deployment, the pods and the CR in memory; the scale patch records its time."""

    def __init__(self, infd: dict[str, Any], replicas: int, num_pods: int) -> None:
        self.infd = copy.deepcopy(infd)
        self.replicas = replicas
        self.version = 1
        self.scaled: list[tuple[float, int]] = []
        self.scaled_event = asyncio.Event()
        self.pods = [
            {
                "metadata": {
                    "name": pod_name(index),
                    "namespace": "bench",
                    "uid": f"uid-{index}",
                    "resourceVersion": "1",
                    "labels": {"kvscale.dev/inference-deployment": "bench"},
                    # Marked already, as by an earlier operator: no mark writes in the timings.
                    "annotations": {"kvscale.dev/ready-once": "2026-01-01T00:00:00Z"},
                },
                "status": {
                    "phase": "Running",
                    "podIP": fleet_address(index),
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "True"},
                    ],
                    "containerStatuses": [{"name": "engine", "state": {"running": {}}}],
                },
            }
            for index in range(num_pods)
        ]

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return {
            "metadata": {
                "name": name,
                "resourceVersion": str(self.version),
                "ownerReferences": [{"uid": self.infd["metadata"]["uid"], "controller": True}],
            },
            "spec": {"replicas": self.replicas},
        }

    async def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return self.pods

    async def scale_deployment(
        self, namespace: str, name: str, replicas: int, *, expected: int | None = None
    ) -> None:
        self.scaled.append((time.monotonic(), replicas))
        self.scaled_event.set()
        self.replicas = replicas
        self.version += 1

    async def annotate_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        return None

    async def update_status(
        self, namespace: str, name: str, mutate: kube.StatusMutation
    ) -> dict[str, Any] | None:
        fields = mutate(self.infd)
        if fields:
            self.infd.setdefault("status", {}).update(fields)
        return self.infd


class NoEvents:
    def info(self, reason: str, message: str) -> None:
        return None

    def warn(self, reason: str, message: str) -> None:
        return None


def cr(**scaling: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvscale.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "bench", "namespace": "bench", "uid": "bench-uid", "generation": 1},
        "spec": {"model": {"name": "m"}, "scaling": {"maxReplicas": 10_000, **scaling}},
    }


def deps(api: FakeKube, scraper: collector.Collector) -> autoscale.Deps:
    registry = prometheus_client.CollectorRegistry()
    return autoscale.Deps(
        api=api,
        collector=scraper,
        metrics=metrics.Autoscaler.create(registry),
        events_for=lambda body: NoEvents(),
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


PROFILES = {
    "crd-defaults": {"tickSeconds": 1},
    "e2e-test": {
        "tickSeconds": 1,
        "stableWindowSeconds": 10,
        "panicWindowSeconds": 4,
        "scaleDownDelaySeconds": 20,
    },
}
# (label, occupancy per pod after the step, fleet settings): used + waiting requests, the
# waiting ones estimated at the running ones' mean blocks each (docs/scaling.md).
STEPS = {
    "to 0.8 (no queue, just above the band)": {"used": 51, "running": 4, "waiting": 0},
    "to 1.0 (full, no queue)": {"used": 64, "running": 4, "waiting": 0},
    "to 1.5 (queue of 2)": {"used": 64, "running": 4, "waiting": 2},
    "to 3.0 (queue of 8)": {"used": 64, "running": 4, "waiting": 8},
}
RUNS = [
    ("crd-defaults", "to 0.8 (no queue, just above the band)"),
    ("crd-defaults", "to 1.5 (queue of 2)"),
    ("crd-defaults", "to 3.0 (queue of 8)"),
    ("e2e-test", "to 1.0 (full, no queue)"),
    ("e2e-test", "to 3.0 (queue of 8)"),
]


async def reaction(repetitions: int) -> list[dict[str, Any]]:
    phases = random.Random(4)
    fleet = FleetProcess(2)
    results = []
    try:
        async with aiohttp.ClientSession(trust_env=False) as control:
            session = collector.Collector.session()
            scraper = collector.Collector(session)
            try:
                for profile, step in RUNS:
                    settings = PROFILES[profile]
                    warmup = float(settings.get("panicWindowSeconds", 6)) + 2
                    tick = float(settings["tickSeconds"])
                    times: list[float] = []
                    ticks: list[float] = []
                    for _ in range(repetitions):
                        await fleet.set(control, used=19, running=2, waiting=0)
                        api = FakeKube(cr(**settings), 2, 2)
                        shared = deps(api, scraper)
                        loop = autoscale.Loop(api.infd, shared)
                        task = asyncio.create_task(loop.run())
                        # The step lands anywhere within a tick, as load does.
                        await asyncio.sleep(warmup + phases.uniform(0, tick))
                        await fleet.set(control, **STEPS[step])
                        stepped = time.monotonic()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(api.scaled_event.wait(), 120)
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        if api.scaled:
                            times.append(api.scaled[0][0] - stepped)
                        for family in shared.metrics.loop_seconds.collect():
                            for sample in family.samples:
                                if sample.name.endswith("_sum"):
                                    total = sample.value
                                if sample.name.endswith("_count"):
                                    count = sample.value
                        ticks.append(total / count * 1000)
                    results.append(
                        {
                            "settings": profile,
                            "step": step,
                            "repetitions": repetitions,
                            "scaled": len(times),
                            "p50_s": round(percentile(times, 0.5), 2) if times else None,
                            "p99_s": round(percentile(times, 0.99), 2) if times else None,
                            "max_s": round(max(times), 2) if times else None,
                            "tick_mean_ms": round(statistics.mean(ticks), 2),
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
            finally:
                await session.close()
    finally:
        fleet.stop()
    return results


async def scale(sizes: Sequence[int], ticks: int) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        fleet = FleetProcess(size)
        session = collector.Collector.session()
        scraper = collector.Collector(session)
        try:
            api = FakeKube(cr(tickSeconds=2), size, size)
            async with aiohttp.ClientSession(trust_env=False) as control:
                await fleet.set(control, used=45, running=3, waiting=0)  # at target: no action
            loop = autoscale.Loop(api.infd, deps(api, scraper))
            durations = []
            polled = 0
            for index in range(ticks + 1):
                started = time.monotonic()
                result = await loop.tick()
                took = time.monotonic() - started
                if index > 0:  # the first tick lists the pods and opens connections
                    durations.append(took)
                polled = result.tick.num_polled
                await asyncio.sleep(max(0.0, 2.0 - took))
            targets = [
                collector.Target(pod_name(i), f"uid-{i}", collector.url(fleet_address(i), 9090))
                for i in range(size)
            ]
            full = []
            errors = 0
            for _ in range(5):
                started = time.monotonic()
                answers = await scraper.collect(targets, timeout_seconds=1.0)
                full.append(time.monotonic() - started)
                errors += sum(1 for answer in answers if answer.report is None)
                await asyncio.sleep(2.0)
            row = {
                "pods": size,
                "sampled_per_tick": polled,
                "tick_p50_ms": round(percentile(durations, 0.5) * 1000, 1),
                "tick_p99_ms": round(percentile(durations, 0.99) * 1000, 1),
                "ticks": len(durations),
                "full_scrape_p50_ms": round(percentile(full, 0.5) * 1000, 1),
                "full_scrape_max_ms": round(max(full) * 1000, 1),
                "full_scrape_reports_per_s": round(size / percentile(full, 0.5)),
                "full_scrape_errors": errors,
            }
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            await session.close()
            fleet.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    serving = sub.add_parser("serve", help="(internal) run the fake sidecar fleet")
    serving.add_argument("--pods", type=int, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {(os.cpu_count() or 1) - 1})
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.pods))
        return 0
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {0})
    repetitions, ticks = (3, 5) if args.quick else (10, 20)
    load = os.getloadavg()
    reactions = asyncio.run(reaction(repetitions))
    scaling = asyncio.run(scale((100, 500, 2000), ticks))
    summary = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores; load average at start {load[0]:.2f}",
        "operator_side": "real autoscale.Loop + collector.Collector, pinned to one core",
        "sidecars": "fake fleet, one aiohttp process, one loopback address per pod",
        "scale_target": "fake in-memory API (no API server)",
        "reaction": reactions,
        "scale": scaling,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
