"""`kvscale twin` as a process: OpenAI completions, vLLM's /metrics under load, many twins in
one process, and SIGTERM draining in-flight requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from kvscale_sidecar import vllm_metrics

pytestmark = pytest.mark.slow

READY_DEADLINE_S = 30.0
# The tiny model on the CPU-calibrated profile, with the 64-block cache the fidelity check uses.
SMALL = ["--model", "kvscale/tiny-llama", "--block-size", "32", "--num-gpu-blocks-override",
         "64", "--max-model-len", "1024"]  # fmt: skip


def _address() -> tuple[str, int]:
    host = f"127.2.{random.randrange(1, 250)}.{random.randrange(1, 250)}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return host, port


class Server:
    def __init__(self, process: subprocess.Popen[bytes], urls: list[str], log: pathlib.Path):
        self.process = process
        self.urls = urls
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def twin(tmp_path: pathlib.Path, *args: str, count: int = 1) -> Iterator[Server]:
    addresses = [_address() for _ in range(count)]
    listen = [item for host, port in addresses for item in ("--listen", f"{host}:{port}")]
    log = tmp_path / "twin.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kvscale.cli", "twin", *args, *listen],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, [f"http://{h}:{p}" for h, p in addresses], log)
    try:
        asyncio.run(_wait_healthy(server))
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    async with aiohttp.ClientSession() as session:
        for url in server.urls:
            while True:
                if server.process.poll() is not None:
                    pytest.fail(f"kvscale twin exited at start:\n{server.log_text()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/health") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    pytest.fail(f"kvscale twin not healthy in time:\n{server.log_text()}")
                await asyncio.sleep(0.1)


async def _complete(
    session: aiohttp.ClientSession, url: str, **body: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(url + "/v1/completions", json=body) as response:
        return response.status, await response.json()


async def _stream(
    session: aiohttp.ClientSession, url: str, started: asyncio.Event | None = None, **body: Any
) -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = []
    async with session.post(url + "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status == 200
        async for raw in response.content:
            line = raw.decode().strip()
            if not line:
                continue
            assert line.startswith("data: ")
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
            if started is not None:
                started.set()
    return events


async def _metrics(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


def test_completions_work_streamed_and_not(tmp_path: pathlib.Path) -> None:
    async def check(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            status, whole = await _complete(
                session, url, model="kvscale/tiny-llama", prompt=[5, 6, 7, 8], max_tokens=12,
                ignore_eos=True,
            )  # fmt: skip
            assert status == 200
            assert whole["object"] == "text_completion"
            assert whole["choices"][0]["finish_reason"] == "length"
            assert whole["usage"]["prompt_tokens"] == 4
            assert whole["usage"]["completion_tokens"] == 12

            events = await _stream(
                session, url, prompt="a text prompt", max_tokens=9,
                stream_options={"include_usage": True},
            )  # fmt: skip
            assert events[-1] == "[DONE]"
            usage = events[-2]
            assert isinstance(usage, dict)
            assert usage["choices"] == []
            assert usage["usage"]["completion_tokens"] == 9
            chunks = [e for e in events[:-2] if isinstance(e, dict)]
            assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
            assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])

            status, error = await _complete(session, url, model="other", prompt=[1], max_tokens=1)
            assert status == 404
            assert "does not exist" in error["error"]["message"]
            status, error = await _complete(session, url, prompt=[1] * 1000, max_tokens=100)
            assert status == 400
            assert "maximum context length is 1024" in error["error"]["message"]
            async with session.get(url + "/v1/models") as response:
                models = await response.json()
            assert [m["id"] for m in models["data"]] == ["kvscale/tiny-llama"]

    with twin(tmp_path, *SMALL) as server:
        asyncio.run(check(server.urls[0]))


def test_metrics_move_under_load_and_count_what_was_served(tmp_path: pathlib.Path) -> None:
    num_requests, prompt, output = 20, 300, 150

    async def load(url: str) -> tuple[list[vllm_metrics.EngineSample], str, str]:
        async with aiohttp.ClientSession() as session:
            before = await _metrics(session, url)
            tasks = [
                asyncio.create_task(_complete(session, url, prompt=[9] * prompt, max_tokens=output))
                for _ in range(num_requests)
            ]
            seen = []
            while not all(t.done() for t in tasks):
                seen.append(vllm_metrics.parse(await _metrics(session, url)))
                await asyncio.sleep(0.05)
            results = [t.result() for t in tasks]
            assert all(status == 200 for status, _ in results)
            return seen, before, await _metrics(session, url)

    with twin(tmp_path, *SMALL) as server:
        seen, before, after = asyncio.run(load(server.urls[0]))
    first, last = vllm_metrics.parse(before), vllm_metrics.parse(after)
    assert first.kv_cache_usage == 0
    assert max(s.kv_cache_usage for s in seen) > 0.5
    assert max(s.num_requests_running for s in seen) > 0
    assert max(s.num_requests_waiting for s in seen) > 0  # 20 x 450 tokens > 2016 slots
    assert last.num_preemptions > first.num_preemptions
    assert (last.kv_cache_usage, last.num_requests_running, last.num_requests_waiting) == (0, 0, 0)
    generated = [
        line for line in after.splitlines() if line.startswith("vllm:generation_tokens_total")
    ]
    assert generated == [
        'vllm:generation_tokens_total{engine="0",model_name="kvscale/tiny-llama"} '
        f"{float(num_requests * output)}"
    ]


def test_one_process_serves_independent_twins(tmp_path: pathlib.Path) -> None:
    async def check(urls: list[str]) -> tuple[str, str]:
        async with aiohttp.ClientSession() as session:
            status, _ = await _complete(session, urls[0], prompt=[3] * 100, max_tokens=40)
            assert status == 200
            return await _metrics(session, urls[0]), await _metrics(session, urls[1])

    with twin(tmp_path, *SMALL, count=3) as server:
        loaded, idle = asyncio.run(check(server.urls))
    assert "vllm:generation_tokens_total" in loaded
    assert 'model_name="kvscale/tiny-llama"} 40.0' in loaded
    assert 'vllm:generation_tokens_total{engine="0",model_name="kvscale/tiny-llama"} 0.0' in idle


def _sigterm_during_a_stream(
    server: Server, max_tokens: int
) -> tuple[list[dict[str, Any] | str], bool, int]:
    """Start a stream, SIGTERM the twin once tokens flow; return the stream's events, whether
    a new connection was refused meanwhile, and the exit code."""

    async def run() -> tuple[list[dict[str, Any] | str], bool]:
        url = server.urls[0]
        async with aiohttp.ClientSession() as session:
            started = asyncio.Event()
            stream = asyncio.create_task(
                _stream(session, url, started, prompt=[4] * 64, max_tokens=max_tokens)
            )
            await started.wait()
            os.kill(server.process.pid, signal.SIGTERM)
            await asyncio.sleep(0.3)
            refused = False
            try:
                async with aiohttp.ClientSession() as fresh, fresh.get(url + "/health") as reply:
                    refused = reply.status == 503
            except aiohttp.ClientConnectionError:
                refused = True
            return await stream, refused

    events, refused = asyncio.run(run())
    return events, refused, server.process.wait(timeout=60)


def test_sigterm_lets_in_flight_requests_finish_within_the_shutdown_timeout(
    tmp_path: pathlib.Path,
) -> None:
    # Twenty times slower than modelled: 80 tokens take seconds, so SIGTERM lands mid-stream.
    with twin(tmp_path, *SMALL, "--time-scale", "0.05", "--shutdown-timeout", "60") as server:
        events, refused, code = _sigterm_during_a_stream(server, max_tokens=80)
        log = server.log_text()
    assert refused, "a new request got through after SIGTERM"
    assert code == 0, log
    chunks = [e for e in events if isinstance(e, dict)]
    assert sum(len(c["choices"][0]["text"].split()) for c in chunks) == 80
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-1] == "[DONE]"
    assert "draining" in log


def test_sigterm_with_no_shutdown_timeout_aborts_in_flight_requests(
    tmp_path: pathlib.Path,
) -> None:
    with twin(tmp_path, *SMALL, "--time-scale", "0.05") as server:
        events, _, code = _sigterm_during_a_stream(server, max_tokens=500)
    assert code == 0
    chunks = [e for e in events if isinstance(e, dict)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "abort"
    assert sum(len(c["choices"][0]["text"].split()) for c in chunks) < 500
