"""A real vLLM CPU engine for benchmarks: start, wait, load, scrape, stop. Does I/O.

Shared by `cpu_calibrate.py` (the twin's CPU step-time constants) and `twin_fidelity.py` (the
twin against vLLM on one request sequence). Each starts at most one engine at a time, on a
loopback address, from the cached environment of `kvscale.localstack.engine_env`, as its own
session so that stopping it leaves none of vLLM's processes behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence

import aiohttp
from prometheus_client import parser

from kvscale.localstack import engine_env

READY_DEADLINE_S = 600.0
MIN_AVAILABLE_GIB = 8.0


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def available_gib() -> float:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / (1024 * 1024)
    return 0.0


def load_average() -> float:
    """The machine's 1-minute load average (runnable processes, all cores)."""
    return float(pathlib.Path("/proc/loadavg").read_text().split()[0])


def wait_quiet(max_load: float, timeout_s: float) -> float:
    """Wait up to `timeout_s` for the 1-minute load average to fall to `max_load`; returns it.

    The machines this runs on are small and shared: a measurement taken while other work runs
    measures that work as much as vLLM.
    """
    deadline = time.monotonic() + timeout_s
    load = load_average()
    while load > max_load and time.monotonic() < deadline:
        time.sleep(5.0)
        load = load_average()
    return load


@dataclasses.dataclass(frozen=True)
class EngineArgs:
    """The vLLM flags the benchmarks vary; prefix caching is off unless asked for."""

    block_size: int = 32
    num_gpu_blocks: int = 64
    max_num_seqs: int = 128
    max_model_len: int = 1024
    max_num_batched_tokens: int | None = None  # None: vLLM's CPU default (2048)
    enable_prefix_caching: bool = False

    def argv(self) -> list[str]:
        args = [
            "--block-size",
            str(self.block_size),
            "--num-gpu-blocks-override",
            str(self.num_gpu_blocks),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--max-model-len",
            str(self.max_model_len),
            "--enable-prefix-caching"
            if self.enable_prefix_caching
            else "--no-enable-prefix-caching",
        ]
        if self.max_num_batched_tokens is not None:
            args += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        return args


@dataclasses.dataclass
class Engine:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: pathlib.Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running(
    host: str, args: EngineArgs, log_path: pathlib.Path, progress: bool = True, nice: int = 0
) -> Iterator[Engine]:
    """A real vLLM engine for the block; killed (its whole session) at the end.

    `nice` < 0 runs the engine's processes (API server, engine core, worker: the children
    inherit it) ahead of other work on a shared machine, so that what is measured is vLLM
    rather than the machine's other load (needs root or CAP_SYS_NICE).
    """
    if available_gib() < MIN_AVAILABLE_GIB:
        raise SystemExit(
            f"only {available_gib():.1f} GiB of memory available; a vLLM CPU engine needs about "
            f"3 GiB and this benchmark waits for {MIN_AVAILABLE_GIB:.0f} (stop other engines)"
        )
    python = engine_env.vllm_python()
    port = free_port(host)
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        engine_env.TINY_MODEL,
        "--served-model-name",
        engine_env.TINY_MODEL,
        "--host",
        host,
        "--port",
        str(port),
        *args.argv(),
    ]
    env = {**os.environ, **engine_env.engine_environment()}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Set in the child before vLLM starts, so every process it spawns inherits it.
            preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)) if nice else None,
        )
    engine = Engine(process=process, base_url=f"http://{host}:{port}", log_path=log_path)
    try:
        started = time.monotonic()
        _wait_ready(engine)
        if progress:
            print(f"# vLLM ready at {engine.base_url} in {time.monotonic() - started:.0f} s")
        yield engine
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_ready(engine: Engine) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            raise SystemExit(
                f"vLLM exited with {engine.process.returncode} while starting:\n{engine.log_tail()}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(engine.base_url + "/health", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(1.0)
    raise SystemExit(f"vLLM not healthy in {READY_DEADLINE_S:.0f} s:\n{engine.log_tail()}")


Scrape = dict[str, float]


def parse_metrics(text: str) -> Scrape:
    """Sample name -> value, summed over label sets (one engine, so only by-reason splits)."""
    values: Scrape = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") or sample.name.endswith("_created"):
                continue
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), +Inf last


def parse_histogram(text: str, name: str) -> Buckets:
    """One histogram's cumulative buckets (summed over label sets)."""
    found: dict[float, float] = {}
    for family in parser.text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                bound = float(sample.labels["le"])
                found[bound] = found.get(bound, 0.0) + float(sample.value)
    return sorted(found.items())


def bucket_delta(after: Buckets, before: Buckets) -> Buckets:
    old = dict(before)
    return [(bound, count - old.get(bound, 0.0)) for bound, count in after]


def bucket_values(values: Sequence[float], bounds: Sequence[float]) -> Buckets:
    """Cumulative buckets of `values` with the given upper bounds (the last is +Inf)."""
    ordered = sorted(values)
    counts = []
    index = 0
    for bound in bounds:
        while index < len(ordered) and ordered[index] <= bound:
            index += 1
        counts.append((bound, float(index)))
    return counts


def bucket_quantile(buckets: Buckets, q: float) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket holding the rank."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


async def scrape_text(session: aiohttp.ClientSession, base_url: str) -> str:
    # Once more on a dropped connection: the server may close an idle keep-alive connection
    # just as it is reused.
    for attempt in (1, 2):
        try:
            async with session.get(base_url + "/metrics") as response:
                return await response.text()
        except aiohttp.ServerDisconnectedError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def scrape(session: aiohttp.ClientSession, base_url: str) -> Scrape:
    return parse_metrics(await scrape_text(session, base_url))


@dataclasses.dataclass
class Completion:
    sent: float  # monotonic seconds
    first_token: float | None
    done: float
    num_tokens: int
    error: str | None = None
    chunk_times: list[float] = dataclasses.field(default_factory=list)  # text chunks


async def complete(
    session: aiohttp.ClientSession,
    base_url: str,
    prompt: Sequence[int],
    max_tokens: int,
    model: str = engine_env.TINY_MODEL,
    stream: bool = True,
) -> Completion:
    """One completion with exact lengths (token ids in, `ignore_eos`), streamed or not."""
    body: dict[str, object] = {
        "model": model,
        "prompt": list(prompt),
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    sent = time.monotonic()
    if not stream:
        try:
            async with session.post(base_url + "/v1/completions", json=body) as response:
                text = await response.text()
                if response.status != 200:
                    return Completion(sent, None, time.monotonic(), 0, text)
                usage = json.loads(text).get("usage") or {}
                tokens = int(usage.get("completion_tokens", 0))
                return Completion(sent, None, time.monotonic(), tokens)
        except aiohttp.ClientError as error:
            return Completion(sent, None, time.monotonic(), 0, repr(error))
    chunks: list[float] = []
    tokens = 0
    try:
        async with session.post(base_url + "/v1/completions", json=body) as response:
            if response.status != 200:
                return Completion(sent, None, time.monotonic(), 0, await response.text())
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if '"text"' in line:
                    chunks.append(time.monotonic())
                if '"completion_tokens"' in line:
                    usage = json.loads(line[6:]).get("usage") or {}
                    tokens = int(usage.get("completion_tokens", 0))
    except aiohttp.ClientError as error:
        first = chunks[0] if chunks else None
        return Completion(sent, first, time.monotonic(), tokens, repr(error), chunks)
    first = chunks[0] if chunks else None
    return Completion(sent, first, time.monotonic(), tokens, None, chunks)
