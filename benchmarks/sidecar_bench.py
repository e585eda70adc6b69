"""Benchmark of the engine sidecar: its cost while polling, and its answer time under load.

    .venv/bin/python benchmarks/sidecar_bench.py                 # against a fake engine
    .venv/bin/python benchmarks/sidecar_bench.py --engine-url http://127.0.0.1:8000   # real vLLM

Runs the real `kvscale sidecar` command as a process and measures it from outside:

1. idle polling: the sidecar scrapes the engine every 250 ms for `--poll-seconds`; its CPU time
   (from /proc, as a share of one core) and its resident memory (now and peak);
2. serving: `GET /v1/occupancy` at `--rate` requests per second (open loop: requests are sent
   on schedule, whatever the previous ones are doing) for `--serve-seconds`; latency p50/p99/max
   as the client sees it, and the sidecar's CPU share meanwhile.

Without --engine-url the engine is a small HTTP server in its own process that answers /health
and serves a real vLLM /metrics capture (tests/data/vllm_metrics_loaded.txt) at every scrape, so
the sidecar parses exactly what a loaded vLLM sends. Targets (from the issue): under 2% of one
core and under 60 MB RSS while polling, p99 under 5 ms at 200 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

ROOT = pathlib.Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "tests" / "data" / "vllm_metrics_loaded.txt"
HOST = "127.0.8.10"
TICKS = os.sysconf("SC_CLK_TCK")

CPU_TARGET_PERCENT = 2.0
RSS_TARGET_MB = 60.0
P99_TARGET_MS = 5.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _memory_mb(pid: int) -> tuple[float, float]:
    """Resident memory now and at its peak, in MB (VmRSS, VmHWM)."""
    found = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def _serve_fake_engine(listen: str) -> None:
    """The fake engine's process: /health 200, /metrics the capture."""
    host, port = listen.rsplit(":", 1)
    body = CAPTURE.read_bytes()

    async def health(request: web.Request) -> web.Response:
        return web.Response()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


def _wait_http(url: str, deadline_s: float, process: subprocess.Popen[bytes]) -> None:
    async def poll() -> None:
        deadline = time.monotonic() + deadline_s
        async with aiohttp.ClientSession() as session:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"{process.args!r} exited with {process.returncode}")
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url} did not answer 200 within {deadline_s:.0f}s")
                await asyncio.sleep(0.1)

    asyncio.run(poll())


async def _serve_load(url: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Open-loop GETs at `rate`/s for `seconds`: latencies in ms, and the number of failures."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal failures
            started = time.perf_counter()
            try:
                async with session.get(url) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(round(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, failures


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine-url", default=None, help="a real engine; default: a fake one")
    parser.add_argument("--poll-seconds", type=float, default=20.0)
    parser.add_argument("--serve-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--fake-engine", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_engine:
        _serve_fake_engine(args.fake_engine)
        return 0

    children: list[subprocess.Popen[bytes]] = []
    try:
        engine_url = args.engine_url
        if engine_url is None:
            listen = f"{HOST}:{_free_port(HOST)}"
            fake = subprocess.Popen([sys.executable, __file__, "--fake-engine", listen])
            children.append(fake)
            engine_url = f"http://{listen}"
            _wait_http(engine_url + "/health", 30, fake)
            what = f"a fake engine serving a real vLLM capture ({CAPTURE.stat().st_size} bytes)"
        else:
            what = "a real engine"
        sidecar_listen = f"{HOST}:{_free_port(HOST)}"
        sidecar = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kvscale.cli",
                "sidecar",
                "--engine-url",
                engine_url,
                "--listen",
                sidecar_listen,
                "--pod",
                "bench",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(sidecar)
        base = f"http://{sidecar_listen}"
        _wait_http(base + "/readyz", 30, sidecar)
        time.sleep(1.0)  # past start-up work (imports, first scrape)

        print(f"sidecar polling {engine_url} every 0.25 s, {what}")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        cpu_before, wall_before = _cpu_seconds(sidecar.pid), time.monotonic()
        time.sleep(args.poll_seconds)
        cpu = _cpu_seconds(sidecar.pid) - cpu_before
        wall = time.monotonic() - wall_before
        share = 100 * cpu / wall
        rss, peak = _memory_mb(sidecar.pid)
        print(
            f"  idle polling for {wall:.1f} s: CPU {share:.2f}% of one core "
            f"(target < {CPU_TARGET_PERCENT:g}%: {_verdict(share < CPU_TARGET_PERCENT)})"
        )
        print(
            f"  RSS {rss:.1f} MB, peak {peak:.1f} MB "
            f"(target < {RSS_TARGET_MB:g} MB: {_verdict(peak < RSS_TARGET_MB)})"
        )

        cpu_before, wall_before = _cpu_seconds(sidecar.pid), time.monotonic()
        latencies, failures = asyncio.run(
            _serve_load(base + "/v1/occupancy", args.rate, args.serve_seconds)
        )
        serve_share = (
            100 * (_cpu_seconds(sidecar.pid) - cpu_before) / (time.monotonic() - wall_before)
        )
        p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
        print(
            f"  GET /v1/occupancy at {args.rate:g}/s for {args.serve_seconds:g} s: "
            f"{len(latencies)} answered, {failures} failed; latency p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms, max {max(latencies):.2f} ms, mean "
            f"{statistics.fmean(latencies):.2f} ms "
            f"(target p99 < {P99_TARGET_MS:g} ms: {_verdict(p99 < P99_TARGET_MS)})"
        )
        rss, peak = _memory_mb(sidecar.pid)
        print(f"  meanwhile: sidecar CPU {serve_share:.1f}% of one core, RSS peak {peak:.1f} MB")
        print(f"machine load average after: {os.getloadavg()[0]:.2f}")
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
