"""The replayer over real HTTP: an OpenAI-style streaming server on loopback stands in for the
engine pods (vLLM itself is exercised by the demo). Exact prompts and token counts, time to
first token, one retry elsewhere on a refused connection, errors recorded, concurrency bounded,
and no request to a pod that is not among the ready ones."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kvscale import trace
from kvscale.loadgen import replayer, router, timeline

SERVING_IP = "127.0.0.2"
DEAD_IP = "127.0.0.3"  # nothing listens there: connections are refused
VOCAB = 320


@dataclasses.dataclass
class Engine:
    """What the fake engine saw and how it answers."""

    mode: str = "ok"  # ok | http-400 | short
    token_delay_s: float = 0.01
    bodies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    running: int = 0
    peak_running: int = 0


ENGINE = web.AppKey("engine", Engine)


async def _completions(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    body = await request.json()
    engine.bodies.append(body)
    if engine.mode == "http-400":
        return web.json_response({"error": {"message": "too long"}}, status=400)
    engine.running += 1
    engine.peak_running = max(engine.peak_running, engine.running)
    try:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        tokens = body["max_tokens"] - (1 if engine.mode == "short" else 0)
        for _ in range(tokens):
            await asyncio.sleep(engine.token_delay_s)
            chunk = {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"choices": [], "usage": {"completion_tokens": tokens}}
        await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response
    finally:
        engine.running -= 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((SERVING_IP, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def port() -> int:
    return _free_port()


async def _replay(
    engine: Engine,
    port: int,
    pods: list[router.Candidate],
    requests: list[trace.TraceRequest],
    rule: router.Router | None = None,
    during: Callable[[replayer.Replayer], Awaitable[None]] | None = None,
    **settings: Any,
) -> tuple[list[Any], replayer.Replayer]:
    app = web.Application()
    app[ENGINE] = engine
    app.router.add_post("/v1/completions", _completions)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, SERVING_IP, port).start()
    try:
        async with aiohttp.ClientSession() as session:
            send = replayer.Replayer(
                session,
                replayer.Settings(model="tiny", engine_port=port, vocab_size=VOCAB, **settings),
                rule or router.Router(8192),
                lambda: pods,
            )
            replay = send.run(requests, time.monotonic())
            if during is None:
                return await replay, send
            outcomes, _ = await asyncio.gather(replay, during(send))
            return outcomes, send
    finally:
        await runner.cleanup()


def _requests(count: int, prompt: int = 40, output: int = 5) -> list[trace.TraceRequest]:
    return [trace.TraceRequest(0.01 * i, prompt + i, output) for i in range(count)]


def test_requests_carry_exact_token_prompts_and_record_latency(port: int) -> None:
    engine = Engine()
    pods = [router.Candidate("a", SERVING_IP)]
    outcomes, send = asyncio.run(_replay(engine, port, pods, _requests(3)))
    assert [o.error for o in outcomes] == ["", "", ""]
    assert [len(b["prompt"]) for b in engine.bodies] == [40, 41, 42]
    assert all(isinstance(t, int) and 3 <= t < VOCAB for b in engine.bodies for t in b["prompt"])
    assert all(b["ignore_eos"] and b["stream"] and b["max_tokens"] == 5 for b in engine.bodies)
    for outcome in outcomes:
        assert outcome.received_tokens == 5
        assert outcome.pod == "a"
        assert outcome.ttft_s is not None
        assert outcome.latency_s is not None
        assert 0 < outcome.ttft_s < outcome.latency_s
    assert send.counters == timeline.Counters(arrived=3, held=0, finished=3, failed=0)
    assert send.in_flight["a"] == router.InFlight()


def test_refused_connection_is_retried_once_on_another_pod(port: int) -> None:
    # Both look idle; the name tie-break picks "dead" first, and its refusal sends the request
    # to "live".
    pods = [router.Candidate("dead", DEAD_IP), router.Candidate("live", SERVING_IP)]
    (outcome,) = asyncio.run(_replay(Engine(), port, pods, _requests(1)))[0]
    assert outcome.error == ""
    assert outcome.pod == "live"
    assert outcome.retried


def test_refused_everywhere_fails_after_one_retry(port: int) -> None:
    pods = [router.Candidate("dead", DEAD_IP), router.Candidate("dead2", DEAD_IP)]
    outcomes, send = asyncio.run(_replay(Engine(), port, pods, _requests(1)))
    assert outcomes[0].retried
    assert outcomes[0].error.startswith("dead2: ")
    assert send.counters == timeline.Counters(arrived=1, held=0, finished=0, failed=1)


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        pytest.param("http-400", "HTTP 400: ", id="http-error"),
        pytest.param("short", "short response: 4 of 5 tokens", id="fewer-tokens-than-asked"),
    ],
)
def test_engine_errors_are_recorded_not_retried(port: int, mode: str, error: str) -> None:
    engine = Engine(mode=mode)
    pods = [router.Candidate("a", SERVING_IP), router.Candidate("b", SERVING_IP)]
    (outcome,) = asyncio.run(_replay(engine, port, pods, _requests(1)))[0]
    assert outcome.error.startswith(error)
    assert not outcome.retried
    assert len(engine.bodies) == 1


def test_no_ready_pod_means_no_request(port: int) -> None:
    engine = Engine()
    outcomes, send = asyncio.run(_replay(engine, port, [], _requests(2), no_pod_timeout_s=0.3))
    assert [o.error for o in outcomes] == ["no ready pod", "no ready pod"]
    assert engine.bodies == []
    assert all(o.sent_s is None for o in outcomes)
    assert send.counters == timeline.Counters(arrived=2, held=0, finished=0, failed=2)


def test_concurrency_is_bounded(port: int) -> None:
    engine = Engine(token_delay_s=0.02)
    pods = [router.Candidate("a", SERVING_IP)]
    outcomes, _ = asyncio.run(_replay(engine, port, pods, _requests(6), max_in_flight=2))
    assert all(o.ok for o in outcomes)
    assert engine.peak_running == 2


def test_full_pods_hold_requests_in_arrival_order(port: int) -> None:
    # One request of 50 tokens fills a pod to the limit: the others wait their turn.
    engine = Engine(token_delay_s=0.02)
    pods = [router.Candidate("a", SERVING_IP)]
    rule = router.Router(100, max_load=0.5)
    requests = [trace.TraceRequest(0.001 * i, 45, 5) for i in range(4)]
    outcomes, send = asyncio.run(_replay(engine, port, pods, requests, rule))
    assert all(o.ok for o in outcomes)
    assert engine.peak_running == 1
    sent = [o.sent_s for o in outcomes]
    assert sent == sorted(sent)
    assert send.counters == timeline.Counters(arrived=4, held=0, finished=4, failed=0)


def test_held_requests_go_to_a_pod_that_becomes_ready(port: int) -> None:
    engine = Engine(token_delay_s=0.05)
    pods = [router.Candidate("a", SERVING_IP)]
    seen_held: list[int] = []

    async def grow(send: replayer.Replayer) -> None:
        await asyncio.sleep(0.1)
        seen_held.append(send.counters.held)
        pods.append(router.Candidate("b", SERVING_IP))

    requests = [trace.TraceRequest(0.0, 45, 5), trace.TraceRequest(0.001, 45, 5)]
    outcomes, _ = asyncio.run(
        _replay(engine, port, pods, requests, router.Router(100, max_load=0.5), during=grow)
    )
    assert seen_held == [1]
    assert [o.pod for o in outcomes] == ["a", "b"]
    assert all(o.ok for o in outcomes)


def test_refusal_by_the_only_pod_is_retried_there_not_held() -> None:
    # A refusal is often a kept-alive connection the engine closed; with no other pod the
    # retry goes to the same one instead of holding the line until another appears.
    pods = [router.Candidate("dead", DEAD_IP)]
    outcomes, send = asyncio.run(
        _replay(Engine(), _free_port(), pods, _requests(2), no_pod_timeout_s=60.0)
    )
    assert [o.retried for o in outcomes] == [True, True]
    assert all(o.error.startswith("dead: ") for o in outcomes)
    assert send.counters == timeline.Counters(arrived=2, held=0, finished=0, failed=2)
