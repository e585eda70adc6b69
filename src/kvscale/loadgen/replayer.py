"""Send a trace's requests to the engine pods at their arrival times. Does I/O (HTTP).

`Replayer.run(requests, start)` starts each request at `start + arrival_s` (monotonic clock)
as its own task, all over ONE aiohttp session, at most `max_in_flight` at a time. Each request
is `POST http://<pod IP>:<engine port>/v1/completions` with

- `prompt`: token ids of exactly the trace's prompt length (`workload.prompt_ids`), so the
  tokenizer cannot change the length;
- `max_tokens` = the trace's output tokens and `ignore_eos: true`, so the engine generates
  exactly that many;
- `stream: true`, so the first token's arrival is seen (time to first token), and
  `stream_options.include_usage`, so the response says how many tokens it generated.

The pod is the router's choice among the ready pods at that moment (`pods()`, the watcher's
latest view). When there is none (no pod ready, or with the router's `max_load`, none with
room) the request is held, first come first served, up to `no_pod_timeout_s`; held requests
are counted (`counters.held`) and their wait is part of their latency. A connection error
before any response (a pod that just went away, or a kept-alive connection it closed) is
retried once, on another pod when one has room, else on the same one; anything later is the
request's failure. Outcomes are `summary.Outcome`s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Sequence

import aiohttp

from kvscale import trace
from kvscale.loadgen import router, summary, timeline, workload

_TAIL_BYTES = 4096
# How often the request at the head of the line asks again for a pod with room.
_NO_POD_POLL_S = 0.05


@dataclasses.dataclass(frozen=True)
class Settings:
    """How requests are sent. Validated on construction; errors name the field."""

    model: str
    """The served model name."""
    engine_port: int
    vocab_size: int
    """Token ids are drawn from [first_token_id, vocab_size)."""
    first_token_id: int = 3
    """The tiny model's ids 0-2 are <unk>, <s>, </s>; prompts use ordinary tokens only."""
    seed: int = 0
    max_in_flight: int = 512
    request_timeout_s: float = 900.0
    connect_timeout_s: float = 3.0
    no_pod_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model: must not be empty")
        if not 1 <= self.engine_port <= 65535:
            raise ValueError(f"engine_port = {self.engine_port}: must be in 1..65535")
        if not 0 <= self.first_token_id < self.vocab_size:
            raise ValueError(f"first_token_id = {self.first_token_id}: must be in [0, vocab_size)")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight = {self.max_in_flight}: must be >= 1")
        for name in ("request_timeout_s", "connect_timeout_s", "no_pod_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)}: must be > 0")


class _RefusedError(Exception):
    """The pod could not be reached before any response: worth one try elsewhere."""


class Replayer:
    """Replays requests; `counters` and `in_flight` are readable while it runs."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        routing: router.Router,
        pods: Callable[[], Sequence[router.Candidate]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._settings = settings
        self._router = routing
        self._pods = pods
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._dispatch = asyncio.Lock()
        self.in_flight: dict[str, router.InFlight] = {}
        self.counters = timeline.Counters()

    async def run(
        self, requests: Sequence[trace.TraceRequest], start: float
    ) -> list[summary.Outcome]:
        """Send every request at `start + arrival_s`; return their outcomes, in trace order."""
        tasks = []
        for index, request in enumerate(requests):
            delay = start + request.arrival_s - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(index, request, start)))
        return list(await asyncio.gather(*tasks))

    def _count(
        self, *, arrived: int = 0, held: int = 0, finished: int = 0, failed: int = 0
    ) -> None:
        c = self.counters
        self.counters = timeline.Counters(
            c.arrived + arrived, c.held + held, c.finished + finished, c.failed + failed
        )

    async def _choose(self, avoid: frozenset[str]) -> router.Choice | None:
        """A pod for the next request, holding it while no ready pod has room.

        Requests are served in arrival order: only the one at the head of the line (holding
        the lock) asks the router; the rest queue on the lock, which is first come, first
        served. `avoid` (the pod that just refused a retried request) is passed over when
        another pod has room, and taken when none has: a refusal is often only a kept-alive
        connection the engine had closed, and waiting for another pod would hold the line.
        """
        self._count(held=1)
        try:
            async with self._dispatch:
                deadline = self._clock() + self._settings.no_pod_timeout_s
                while True:
                    pods = self._pods()
                    choice = self._router.choose(pods, self.in_flight, avoid) or (
                        self._router.choose(pods, self.in_flight) if avoid else None
                    )
                    if choice is not None or self._clock() >= deadline:
                        return choice
                    await asyncio.sleep(_NO_POD_POLL_S)
        finally:
            self._count(held=-1)

    async def _one(self, index: int, request: trace.TraceRequest, start: float) -> summary.Outcome:
        self._count(arrived=1)
        outcome = summary.Outcome(
            index=index,
            scheduled_s=request.arrival_s,
            prompt_tokens=request.prompt_tokens,
            output_tokens=request.output_tokens,
        )
        body = {
            "model": self._settings.model,
            "prompt": workload.prompt_ids(
                index,
                request.prompt_tokens,
                first_id=self._settings.first_token_id,
                vocab_size=self._settings.vocab_size,
                seed=self._settings.seed,
            ),
            "max_tokens": request.output_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        tokens = request.prompt_tokens + request.output_tokens
        tried: frozenset[str] = frozenset()
        for attempt in range(2):
            choice = await self._choose(tried)
            if choice is None:
                wanted = "pod with room" if self._router.max_load is not None else "pod"
                outcome = dataclasses.replace(outcome, error=f"no ready {wanted}")
                break
            # Booked before the next await, so the next request in line sees this one.
            self.in_flight[choice.pod] = self.in_flight.get(choice.pod, router.InFlight()).add(
                tokens
            )
            if attempt == 0:
                outcome = dataclasses.replace(outcome, sent_s=self._clock() - start)
            outcome = dataclasses.replace(outcome, pod=choice.pod, retried=attempt > 0)
            try:
                async with self._slots:
                    outcome = await self._send(choice, body, outcome, start + request.arrival_s)
                break
            except _RefusedError as refused:
                outcome = dataclasses.replace(outcome, error=str(refused))
                tried = tried | {choice.pod}
            finally:
                self.in_flight[choice.pod] = self.in_flight[choice.pod].remove(tokens)
        if outcome.ok:
            self._count(finished=1)
        else:
            self._count(failed=1)
        return outcome

    async def _send(
        self,
        choice: router.Choice,
        body: dict[str, object],
        outcome: summary.Outcome,
        scheduled: float,
    ) -> summary.Outcome:
        url = f"http://{choice.ip}:{self._settings.engine_port}/v1/completions"
        timeout = aiohttp.ClientTimeout(
            total=self._settings.request_timeout_s, sock_connect=self._settings.connect_timeout_s
        )
        first: float | None = None
        tail = b""
        try:
            async with self._session.post(url, json=body, timeout=timeout) as response:
                if response.status != 200:
                    text = (await response.text())[:120].replace("\n", " ")
                    return dataclasses.replace(outcome, error=f"HTTP {response.status}: {text}")
                async for chunk in response.content.iter_any():
                    if first is None and b"data:" in chunk:
                        first = self._clock()
                    tail = (tail + chunk)[-_TAIL_BYTES:]
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as error:
            if first is None and not tail:
                raise _RefusedError(f"{choice.pod}: {type(error).__name__}") from error
            return dataclasses.replace(outcome, error=f"stream broken: {type(error).__name__}")
        except aiohttp.ClientError as error:
            return dataclasses.replace(outcome, error=f"{type(error).__name__}")
        except TimeoutError:
            return dataclasses.replace(outcome, error="timed out")
        end = self._clock()
        problem, received = _read_tail(tail)
        if not problem and received is not None and received != outcome.output_tokens:
            problem = f"short response: {received} of {outcome.output_tokens} tokens"
        return dataclasses.replace(
            outcome,
            ttft_s=None if first is None else first - scheduled,
            latency_s=end - scheduled,
            received_tokens=received,
            error=problem,
        )


def _read_tail(tail: bytes) -> tuple[str, int | None]:
    """(error, completion tokens) from the end of an SSE stream."""
    events = [
        line[len(b"data:") :].strip() for line in tail.split(b"\n") if line.startswith(b"data:")
    ]
    if not events or events[-1] != b"[DONE]":
        return "stream ended without [DONE]", None
    received = None
    for payload in reversed(events[:-1]):
        try:
            document = json.loads(payload)
        except ValueError:
            continue
        if isinstance(document, dict) and "error" in document:
            return f"engine error: {str(document['error'])[:100]}", None
        usage = document.get("usage") if isinstance(document, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            received = usage["completion_tokens"]
            break
    return "", received
