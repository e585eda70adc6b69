"""Fidelity of the engine twin against real vLLM (CPU build) on one request sequence.

    .venv/bin/python benchmarks/twin_fidelity.py            # 300 requests, about 2 minutes
    .venv/bin/python benchmarks/twin_fidelity.py --quick    # 120 requests: a fast look
    .venv/bin/python benchmarks/twin_fidelity.py --raw-in benchmarks/results/twin_fidelity_run.json

1. The request sequence: consecutive rows of the Azure LLM 2023 conversation trace
   (shipped with kvscale, or --trace), scaled down to the tiny engine: prompt = context / 4
   (capped at 600 tokens), output = generated / 2 (capped at 200), the trace's inter-arrival
   gaps compressed to a mean rate (`--rate`, default 40 requests/s, about 2.5 times what the
   engine serves) so that the 64-block cache saturates and a queue builds.
2. The real engine: vLLM's CPU build serving the tiny model on 127.0.9.3 with block size 32,
   `--num-gpu-blocks-override 64`, `--max-num-seqs 128`, `--max-model-len 1024`, prefix
   caching off, vLLM's CPU token budget (2048), at CPU priority -10 (`--nice`). Every request
   is sent on schedule (open loop) as token ids with `ignore_eos`, so lengths are exact; its
   /metrics is sampled every 0.25 s until the last request ends. `--raw-out` keeps the run.
3. When each request reached the engine is read from the engine's own counters (requests
   inside = running + waiting + finished; see `engine_arrivals`): vLLM's API server passes
   requests on with a delay of 0.1-0.2 s on this machine (seconds when it is busy), which is
   not the engine's doing. Nor is the order always the sending order: under a burst the API
   server hands some requests to the engine ahead of others sent before them, so the engine
   runs with `--enable-log-requests` and its log ("Added request cmpl-<id>") gives the order
   the engine's FCFS queue got them in (runs recorded before this have only the sending
   order).
4. The twin, pure (`kvscale.twin`, no server), with the same block size, block count,
   sequence cap, model length, token budget and prefix caching, fed the same requests in two
   ways:
   - in engine steps: every step lasts one unit, requests arrive at the engine step they
     reached vLLM, and the twin is read at the step counts vLLM reported
     (`vllm:iteration_tokens_total`). This checks the scheduler and the block accounting
     alone, step for step, whatever the machine's load does to vLLM's speed;
   - in seconds: with the step time calibrated on this CPU engine (`profile.cpu_tiny_llama()`,
     constants in `kvscale.twin.calibration`), read at the sample times. This checks the
     whole twin, timing included, and is only as good as the machine is quiet.
   Either way the twin is read as vLLM's /metrics shows it (`EngineTwin.metrics(now)`): the
   end of the last step that ended by then, not the step in flight. A sample in time lands
   in a step with a chance proportional to the step's length, so vLLM's samples often show
   the cache just after requests finished, while the long step admitting the next ones runs;
   the twin read at the same step count shows that only if it finished requests at that very
   step, which is why the step-for-step usage error stays near the comparison's floor.
5. The comparison's own error: the twin against itself through the same measurement (a
   twin in seconds plays vLLM, a twin in steps replays it from its sampled counters). No
   comparison made this way can show less error than this floor.

Printed for each: mean absolute error of KV-cache usage over the samples where either side
has work (target < 0.05), of the waiting queue and of the running count; preemptions real vs
twin (target: within 20%); engine steps; for the run in seconds, TTFT and ITL p50 (both
through vLLM's histogram buckets) and the time to finish everything. `--json` writes the same
figures. Exit status 0 whatever the figures (they are the result).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import datetime
import itertools
import json
import math
import os
import pathlib
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import realengine

from kvscale import tracefile
from kvscale.twin import engine, profile, request

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRACE = tracefile.resolve("conv")
HOST = "127.0.9.3"
SAMPLE_INTERVAL_S = 0.25
MAX_PROMPT = 600
MAX_OUTPUT = 200
USAGE_MAE_TARGET = 0.05
PREEMPTION_TARGET = 0.20


@dataclasses.dataclass(frozen=True)
class Planned:
    offset_s: float  # when to send, from the start of the run
    prompt_tokens: int
    max_tokens: int


@dataclasses.dataclass(frozen=True)
class Sample:
    t: float  # seconds from the start of the run
    usage: float
    running: int
    waiting: int
    preemptions: int
    finished: int = 0
    steps: int = 0  # engine steps so far (vllm:iteration_tokens_total's count)


def load_trace(path: pathlib.Path, start: int, count: int) -> list[tuple[float, int, int]]:
    if not path.is_file():
        raise SystemExit(
            f"the trace {path} is missing (the default ships with kvscale in "
            "kvscale/data/traces/); pass --trace"
        )
    rows: list[tuple[float, int, int]] = []
    with path.open() as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if index < start:
                continue
            if len(rows) == count:
                break
            stamp = datetime.datetime.fromisoformat(row["TIMESTAMP"][:26])
            rows.append((stamp.timestamp(), int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    if len(rows) < count:
        raise SystemExit(f"the trace {path} has fewer than {start + count} rows")
    return rows


def build_workload(rows: list[tuple[float, int, int]], rate: float) -> list[Planned]:
    """Scale lengths down to the tiny engine and time to a mean rate, keeping the gaps' shape."""
    first = rows[0][0]
    span = rows[-1][0] - first
    factor = (len(rows) - 1) / rate / span if span > 0 else 0.0
    return [
        Planned(
            offset_s=(stamp - first) * factor,
            prompt_tokens=max(1, min(MAX_PROMPT, round(context / 4))),
            max_tokens=max(1, min(MAX_OUTPUT, round(generated / 2))),
        )
        for stamp, context, generated in rows
    ]


TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"


@dataclasses.dataclass
class RealRun:
    samples: list[Sample]
    sent: list[float]  # per request, from the start
    completions: list[realengine.Completion]
    start: float  # monotonic
    preemptions: int
    vllm_steps: int
    ttft: realengine.Buckets  # vLLM's own histograms over the run
    itl: realengine.Buckets
    # Request indices in the order vLLM's API server handed them to the engine (from its
    # request log); None for runs recorded without it.
    engine_order: list[int] | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "engine_order": self.engine_order,
            "samples": [dataclasses.asdict(s) for s in self.samples],
            "sent": self.sent,
            "completions": [[c.sent, c.done, c.num_tokens] for c in self.completions],
            "start": self.start,
            "preemptions": self.preemptions,
            "vllm_steps": self.vllm_steps,
            "ttft": self.ttft,
            "itl": self.itl,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RealRun:
        return cls(
            samples=[Sample(**s) for s in data["samples"]],
            sent=data["sent"],
            completions=[
                realengine.Completion(sent, None, done, tokens)
                for sent, done, tokens in data["completions"]
            ],
            start=data["start"],
            preemptions=data["preemptions"],
            vllm_steps=data["vllm_steps"],
            ttft=[(float(b), float(c)) for b, c in data["ttft"]],
            itl=[(float(b), float(c)) for b, c in data["itl"]],
            engine_order=data.get("engine_order"),
        )

    def order(self) -> list[int]:
        """The engine's arrival order if it was recorded, else the sending order."""
        if self.engine_order is not None:
            return self.engine_order
        return sorted(range(len(self.sent)), key=lambda i: self.sent[i])


@dataclasses.dataclass(frozen=True)
class LoggedEngineArgs(realengine.EngineArgs):
    """The engine's flags plus its request log, which names every request as the API server
    hands it to the engine core ("Added request cmpl-<id>"): that is the engine's FCFS order."""

    def argv(self) -> list[str]:
        return [*super().argv(), "--enable-log-requests"]


REQUEST_ID = "kvscale-fidelity-{index}"
ADDED = re.compile(r"Added request cmpl-kvscale-fidelity-(\d+)\b")


def engine_order(log_text: str, count: int) -> list[int] | None:
    """Request indices in the order the engine log says they were added; None unless each of
    the `count` requests appears exactly once."""
    order = [int(match.group(1)) for match in ADDED.finditer(log_text)]
    if sorted(order) != list(range(count)):
        return None
    return order


async def complete_tagged(
    session: aiohttp.ClientSession, base: str, prompt: list[int], max_tokens: int, index: int
) -> realengine.Completion:
    """`realengine.complete` (not streamed) with the request id that the engine log names."""
    body = {
        "model": realengine.engine_env.TINY_MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": False,
        "request_id": REQUEST_ID.format(index=index),
    }
    sent = time.monotonic()
    try:
        async with session.post(base + "/v1/completions", json=body) as response:
            text = await response.text()
            if response.status != 200:
                return realengine.Completion(sent, None, time.monotonic(), 0, text)
            usage = json.loads(text).get("usage") or {}
            tokens = int(usage.get("completion_tokens", 0))
            return realengine.Completion(sent, None, time.monotonic(), tokens)
    except aiohttp.ClientError as error:
        return realengine.Completion(sent, None, time.monotonic(), 0, repr(error))


async def run_real(base: str, workload: list[Planned], seed: int) -> RealRun:
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 320) for _ in range(p.prompt_tokens)] for p in workload]
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        before_text = await realengine.scrape_text(session, base)
        before = realengine.parse_metrics(before_text)
        start = time.monotonic()
        samples: list[Sample] = []
        done = asyncio.Event()

        async def sampler() -> None:
            base_preemptions = before.get("vllm:num_preemptions_total", 0.0)
            base_finished = before.get("vllm:request_success_total", 0.0)
            base_steps = before.get("vllm:iteration_tokens_total_count", 0.0)
            tick = 0
            while not done.is_set():
                asked = time.monotonic()
                values = await realengine.scrape(session, base)
                now = (asked + time.monotonic()) / 2 - start
                samples.append(
                    Sample(
                        t=now,
                        usage=values["vllm:kv_cache_usage_perc"],
                        running=round(values["vllm:num_requests_running"]),
                        waiting=round(values["vllm:num_requests_waiting"]),
                        preemptions=round(values["vllm:num_preemptions_total"] - base_preemptions),
                        finished=round(values["vllm:request_success_total"] - base_finished),
                        steps=round(values["vllm:iteration_tokens_total_count"] - base_steps),
                    )
                )
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * SAMPLE_INTERVAL_S - time.monotonic()))

        async def one(index: int) -> realengine.Completion:
            await asyncio.sleep(max(0.0, start + workload[index].offset_s - time.monotonic()))
            # Not streamed: on two cores, per-token streaming costs the API server and this
            # client enough CPU to delay requests on their way into the engine.
            return await complete_tagged(
                session, base, prompts[index], workload[index].max_tokens, index
            )

        sampling = asyncio.create_task(sampler())
        completions = await asyncio.gather(*(one(i) for i in range(len(workload))))
        done.set()
        await sampling
        after_text = await realengine.scrape_text(session, base)
        after = realengine.parse_metrics(after_text)
    failed = [
        c for i, c in enumerate(completions) if c.error or c.num_tokens != workload[i].max_tokens
    ]
    if failed:
        raise SystemExit(f"{len(failed)} requests to vLLM failed or came back short: {failed[0]}")
    return RealRun(
        samples=samples,
        sent=[c.sent - start for c in completions],
        completions=list(completions),
        start=start,
        preemptions=round(
            after["vllm:num_preemptions_total"] - before.get("vllm:num_preemptions_total", 0.0)
        ),
        vllm_steps=round(
            after["vllm:iteration_tokens_total_count"]
            - before.get("vllm:iteration_tokens_total_count", 0.0)
        ),
        ttft=realengine.bucket_delta(
            realengine.parse_histogram(after_text, TTFT),
            realengine.parse_histogram(before_text, TTFT),
        ),
        itl=realengine.bucket_delta(
            realengine.parse_histogram(after_text, ITL),
            realengine.parse_histogram(before_text, ITL),
        ),
    )


def _interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear y(x) through the points, flat beyond the ends."""
    if not xs or x <= xs[0]:
        return ys[0] if ys else 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def engine_arrivals(
    samples: list[Sample],
    sent: list[float],
    axis: Callable[[Sample], float],
    order: list[int] | None = None,
) -> list[float]:
    """When each request reached the engine, on `axis` (the sample's time, or its engine step
    count), from the send times and the engine's own counters.

    The requests inside the engine at a sample are running + waiting + finished so far, so the
    j-th request to reach the engine did so in the sample interval where that count first
    exceeds j. The j-th send times of the requests that arrived in one interval keep their
    spacing, delayed together just enough that the first of them lands inside the interval
    (vLLM's API server passes requests on with a delay, seconds on a busy machine; its backlog
    changes slowly), and none after the interval's end. Which request is the j-th is `order`,
    the engine's own order when the run recorded it (the API server does not always keep the
    sending order), else the sending order; a request never arrives before it was sent nor
    before the one ahead of it. The times are then read on `axis` by linear interpolation
    between samples. The twin models the engine, so this is the request sequence the engine
    itself saw.
    """
    times = [sample.t for sample in samples]
    marks = [axis(sample) for sample in samples]
    sending = sorted(range(len(sent)), key=lambda i: sent[i])
    if order is None:
        order = sending
    sent_by_rank = [sent[i] for i in sending]
    arrived_t = list(sent)  # requests never seen inside the engine keep their send time
    previous_t, peak, rank, latest = 0.0, 0, 0, 0.0
    for sample in samples:
        peak = max(peak, sample.running + sample.waiting + sample.finished)
        if rank < len(order) and peak >= rank + 1:
            # One delay for the whole group: the API server's backlog changes slowly.
            delay = max(0.0, previous_t - sent_by_rank[rank])
        while rank < len(order) and peak >= rank + 1:
            index = order[rank]
            at_rank = min(sent_by_rank[rank] + delay, sample.t)
            latest = max(latest, at_rank, min(sent[index], sample.t))
            arrived_t[index] = latest
            rank += 1
        previous_t = sample.t
    return [_interpolate(times, marks, t) for t in arrived_t]


# Every step takes one unit: the twin's clock counts engine steps.
UNIT_STEP = profile.LinearStepTime(1.0, 0.0, 0.0, 0.0)


def twin_config(args: realengine.EngineArgs) -> engine.EngineConfig:
    return engine.EngineConfig(
        block_size=args.block_size,
        num_gpu_blocks_override=args.num_gpu_blocks,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_prefix_caching=args.enable_prefix_caching,
        record_token_times=True,
    )


@dataclasses.dataclass
class TwinRun:
    samples: list[Sample]
    requests: list[request.Request]
    steps: int


def run_twin(
    config: engine.EngineConfig,
    prof: profile.Profile,
    workload: list[Planned],
    sent: list[float],
    sample_times: list[float],
    order: list[int] | None = None,
) -> TwinRun:
    """Replay the requests at their send times (requests sent at the same time in `order`,
    default the sending order); read the twin at the sample times."""
    twin = engine.EngineTwin(config, prof)
    if order is None:
        order = sorted(range(len(workload)), key=lambda i: sent[i])
    reqs = [
        request.Request(f"r{i}", workload[i].prompt_tokens, workload[i].max_tokens)
        for i in range(len(workload))
    ]
    events = sorted(
        [(t, 1, j, j) for j, t in enumerate(sample_times)]
        + [(sent[i], 0, rank, i) for rank, i in enumerate(order)]
    )
    samples: list[Sample] = []
    for t, kind, _, index in events:
        twin.advance_until(t)
        if kind == 0:
            twin.add_request(reqs[index], now=t)
        else:
            # As vLLM's /metrics shows it at `t`: the end of the last step that ended by then.
            m = twin.metrics(now=t)
            samples.append(
                Sample(
                    t,
                    m.kv_cache_usage,
                    m.num_requests_running,
                    m.num_requests_waiting,
                    m.num_preemptions_total,
                    finished=m.num_requests_finished_total,
                    steps=m.num_steps_total,
                )
            )
    twin.advance_until(math.inf)
    return TwinRun(samples=samples, requests=reqs, steps=twin.num_steps_total)


def method_floor(
    config: engine.EngineConfig,
    prof: profile.Profile,
    workload: list[Planned],
    sent: list[float],
    sample_times: list[float],
) -> dict[str, float]:
    """The step-indexed comparison's own error: the twin against itself through it.

    A reference twin (in seconds) plays the part of vLLM: it gets the requests at their send
    times and is sampled at the real run's sample times; its sampled counters give estimated
    arrivals in steps, exactly as the real engine's do, and a step-indexed twin replays them.
    What separates the two is only what the measurement loses (arrivals known to a sample
    interval), so no comparison made this way can expect a smaller error.
    """
    reference = run_twin(config, prof, workload, sent, sample_times)
    arrived = engine_arrivals(reference.samples, sent, lambda sample: float(sample.steps))
    replay = run_twin(
        config,
        dataclasses.replace(prof, step_model=UNIT_STEP),
        workload,
        arrived,
        [float(sample.steps) for sample in reference.samples],
    )
    pairs = [
        (a, b)
        for a, b in zip(reference.samples, replay.samples, strict=True)
        if a.running or a.waiting or b.running or b.waiting
    ]
    preempted = reference.samples[-1].preemptions if reference.samples else 0
    replayed = replay.samples[-1].preemptions if replay.samples else 0
    return {
        "usage_mae": statistics.fmean(abs(a.usage - b.usage) for a, b in pairs),
        "waiting_mae": statistics.fmean(abs(a.waiting - b.waiting) for a, b in pairs),
        "preemptions_diff": (replayed - preempted) / max(preempted, 1),
    }


def compare(real: RealRun, twin: TwinRun, workload: list[Planned]) -> dict[str, float]:
    pairs = list(zip(real.samples, twin.samples, strict=True))
    # Only while the real engine has work: the idle tail after the last request is trivially
    # equal and would dilute the error.
    busy = [(r, t) for r, t in pairs if r.running or r.waiting or t.running or t.waiting]
    usage_mae = statistics.fmean(abs(r.usage - t.usage) for r, t in busy)
    waiting_mae = statistics.fmean(abs(r.waiting - t.waiting) for r, t in busy)
    running_mae = statistics.fmean(abs(r.running - t.running) for r, t in busy)
    twin_preemptions = twin.samples[-1].preemptions if twin.samples else 0
    twin_preemptions = max(twin_preemptions, sum(r.num_preemptions for r in twin.requests))
    # Both sides through vLLM's buckets and Prometheus' interpolation, so that the same
    # method gives both p50s.
    twin_ttft = [
        r.first_token_time - r.arrival_time for r in twin.requests if r.first_token_time is not None
    ]
    twin_itl = [
        later - earlier
        for r in twin.requests
        if r.token_times
        for earlier, later in zip(r.token_times, r.token_times[1:], strict=False)
    ]
    ttft_bounds = [bound for bound, _ in real.ttft]
    itl_bounds = [bound for bound, _ in real.itl]
    real_end = max(c.done for c in real.completions) - real.start
    twin_end = max(r.finish_time or 0.0 for r in twin.requests)
    return {
        "requests": float(len(workload)),
        "samples_busy": float(len(busy)),
        "usage_mae": usage_mae,
        "usage_mean_real": statistics.fmean(r.usage for r, _ in busy),
        "usage_mean_twin": statistics.fmean(t.usage for _, t in busy),
        "waiting_mae": waiting_mae,
        "waiting_mean_real": statistics.fmean(r.waiting for r, _ in busy),
        "waiting_mean_twin": statistics.fmean(t.waiting for _, t in busy),
        "waiting_max_real": float(max(r.waiting for r, _ in busy)),
        "waiting_max_twin": float(max(t.waiting for _, t in busy)),
        "running_mae": running_mae,
        "preemptions_real": float(real.preemptions),
        "preemptions_twin": float(twin_preemptions),
        "preemptions_diff": (twin_preemptions - real.preemptions) / max(real.preemptions, 1),
        "steps_real": float(real.vllm_steps),
        "steps_twin": float(twin.steps),
        "ttft_p50_real_s": realengine.bucket_quantile(real.ttft, 0.5),
        "ttft_p50_twin_s": realengine.bucket_quantile(
            realengine.bucket_values(twin_ttft, ttft_bounds), 0.5
        ),
        "itl_p50_real_s": realengine.bucket_quantile(real.itl, 0.5),
        "itl_p50_twin_s": realengine.bucket_quantile(
            realengine.bucket_values(twin_itl, itl_bounds), 0.5
        ),
        "makespan_real_s": real_end,
        "makespan_twin_s": twin_end,
    }


def report(figures: dict[str, float], timed: bool = True) -> str:
    """The figures as text; latencies and durations only when the twin ran in seconds."""
    f = figures
    ok_usage = f["usage_mae"] < USAGE_MAE_TARGET
    ok_preempt = abs(f["preemptions_diff"]) <= PREEMPTION_TARGET
    lines = [
        f"requests: {f['requests']:.0f}; busy samples compared: {f['samples_busy']:.0f}",
        f"KV usage MAE:      {f['usage_mae']:.3f}  (target < {USAGE_MAE_TARGET}: "
        f"{'met' if ok_usage else 'MISSED'}); mean real {f['usage_mean_real']:.3f}, "
        f"twin {f['usage_mean_twin']:.3f}",
        f"waiting MAE:       {f['waiting_mae']:.1f} requests; mean real "
        f"{f['waiting_mean_real']:.1f}, twin {f['waiting_mean_twin']:.1f}; max real "
        f"{f['waiting_max_real']:.0f}, twin {f['waiting_max_twin']:.0f}",
        f"running MAE:       {f['running_mae']:.2f} requests",
        f"preemptions:       real {f['preemptions_real']:.0f}, twin "
        f"{f['preemptions_twin']:.0f} ({f['preemptions_diff']:+.1%}; target within "
        f"{PREEMPTION_TARGET:.0%}: {'met' if ok_preempt else 'MISSED'})",
        f"engine steps:      real {f['steps_real']:.0f}, twin {f['steps_twin']:.0f}",
    ]
    if not timed:
        return "\n".join(lines)
    lines += [
        f"TTFT p50:          real {f['ttft_p50_real_s'] * 1000:.0f} ms, twin "
        f"{f['ttft_p50_twin_s'] * 1000:.0f} ms",
        f"ITL p50:           real {f['itl_p50_real_s'] * 1000:.1f} ms, twin "
        f"{f['itl_p50_twin_s'] * 1000:.1f} ms",
        f"all done after:    real {f['makespan_real_s']:.1f} s, twin {f['makespan_twin_s']:.1f} s",
    ]
    return "\n".join(lines)


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--trace", type=pathlib.Path, default=TRACE)
    cli.add_argument("--start", type=int, default=0, help="first trace row")
    cli.add_argument("--requests", type=int, default=300)
    cli.add_argument("--rate", type=float, default=40.0, help="mean requests per second")
    cli.add_argument("--max-num-seqs", type=int, default=128)
    cli.add_argument("--quick", action="store_true", help="120 requests: a fast look")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--json", type=pathlib.Path, default=None)
    cli.add_argument("--samples-out", type=pathlib.Path, default=None, help="time series CSV")
    cli.add_argument(
        "--log", type=pathlib.Path, default=pathlib.Path("/tmp/kvscale-fidelity-vllm.log")
    )
    cli.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="CPU priority of the real engine and of this client (default -10: ahead of other "
        "work on a shared machine; 0 leaves it)",
    )
    cli.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine's load average to fall below 1.5",
    )
    cli.add_argument(
        "--raw-out", type=pathlib.Path, default=None, help="save the real engine's run (JSON)"
    )
    cli.add_argument(
        "--raw-in",
        type=pathlib.Path,
        default=None,
        help="compare a saved run instead of starting vLLM (same --quick/--requests/--rate)",
    )
    options = cli.parse_args()
    count = 120 if options.quick else options.requests
    if options.nice:
        os.setpriority(os.PRIO_PROCESS, 0, options.nice)
    load = realengine.wait_quiet(1.5, options.wait_quiet)

    workload = build_workload(load_trace(options.trace, options.start, count), options.rate)
    args = LoggedEngineArgs(
        block_size=32, num_gpu_blocks=64, max_num_seqs=options.max_num_seqs, max_model_len=1024
    )
    print(
        f"# {count} requests from {options.trace.name} row {options.start}, {options.rate:g}/s; "
        f"prompts mean {statistics.fmean(p.prompt_tokens for p in workload):.0f} tokens, "
        f"outputs mean {statistics.fmean(p.max_tokens for p in workload):.0f}; engine {args}",
        flush=True,
    )
    if options.raw_in:
        saved = json.loads(options.raw_in.read_text())
        real = RealRun.from_json(saved["run"])
        load, load_after = saved["load_average_before"], saved["load_average_after"]
        print(f"# the real run saved in {options.raw_in}")
    else:
        with realengine.running(HOST, args, options.log, nice=options.nice) as real_engine:
            real = asyncio.run(run_real(real_engine.base_url, workload, options.seed))
        load_after = realengine.load_average()
        real.engine_order = engine_order(options.log.read_text(errors="replace"), count)
        if real.engine_order is None:
            print(f"# the engine log {options.log} lacks some requests: FCFS in sending order")
    if options.raw_out:
        options.raw_out.write_text(
            json.dumps(
                {
                    "load_average_before": load,
                    "load_average_after": load_after,
                    "run": real.to_json(),
                }
            )
        )
    sample_times = [s.t for s in real.samples]
    results: dict[str, object] = {
        "load_average_before": load,
        "load_average_after": load_after,
    }
    print(
        f"# machine load average (1 min): {load:.1f} before, {load_after:.1f} after, "
        f"on {os.cpu_count()} cores"
    )
    twins = {}
    order = real.order()
    if real.engine_order is not None:
        rank = {index: position for position, index in enumerate(order)}
        overtook = sum(
            1 for i in range(count) if any(
                real.sent[j] < real.sent[i] and rank[j] > rank[i] for j in range(count)
            )
        )  # fmt: skip
        results["requests_ahead_of_sending_order"] = overtook
        print(
            f"# the engine's order from its log: {overtook} of {count} requests reached it "
            "ahead of one sent before them"
        )
    arrived = engine_arrivals(real.samples, real.sent, lambda sample: sample.t, order)
    arrived_steps = engine_arrivals(
        real.samples, real.sent, lambda sample: float(sample.steps), order
    )
    lag = statistics.fmean(a - s for a, s in zip(arrived, real.sent, strict=True))
    results["frontend_lag_mean_s"] = lag
    print(f"# requests reached the engine {lag * 1000:.0f} ms after they were sent, on average")
    sample_steps = [float(s.steps) for s in real.samples]
    variants = (
        ("steps", dataclasses.replace(profile.cpu_tiny_llama(), step_model=UNIT_STEP),
         arrived_steps, sample_steps,
         "in engine steps: the scheduler and KV cache alone (no clock, so the machine's "
         "load does not enter)"),
        ("seconds", profile.cpu_tiny_llama(), arrived, sample_times,
         "in seconds: with the step time calibrated on this CPU engine "
         "(kvscale.twin.calibration)"),
    )  # fmt: skip
    for name, prof, arrivals, marks, title in variants:
        twins[name] = run_twin(twin_config(args), prof, workload, arrivals, marks, order)
        figures = compare(real, twins[name], workload)
        results[name] = figures
        print(f"\n== twin {title}\n{report(figures, timed=name != 'steps')}")
    floor = method_floor(
        twin_config(args), profile.cpu_tiny_llama(), workload, real.sent, sample_times
    )
    results["method_floor"] = floor
    print(
        "\n== the step-indexed comparison's own error (the twin against itself through it):\n"
        f"KV usage MAE {floor['usage_mae']:.3f}, waiting MAE {floor['waiting_mae']:.1f}, "
        f"preemptions {floor['preemptions_diff']:+.1%}"
    )
    if options.samples_out:
        chosen = twins["steps"]
        with options.samples_out.open("w") as out:
            out.write(
                "t,usage_real,usage_twin,running_real,running_twin,waiting_real,"
                "waiting_twin,preemptions_real,preemptions_twin\n"
            )
            for r, t in zip(real.samples, chosen.samples, strict=True):
                out.write(
                    f"{r.t:.3f},{r.usage:.4f},{t.usage:.4f},{r.running},{t.running},"
                    f"{r.waiting},{t.waiting},{r.preemptions},{t.preemptions}\n"
                )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
