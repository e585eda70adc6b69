"""The HTTP API of one twin, as vLLM's OpenAI server speaks it (aiohttp). Does I/O.

- `POST /v1/completions` — a prompt as text or token ids, `max_tokens` (default 16, as vLLM),
  `stream` true/false (server-sent events, one chunk per token hand-out, `[DONE]` at the end,
  a usage chunk with `stream_options.include_usage`). Exactly `max_tokens` tokens come out
  (the twin models `ignore_eos`; stop strings and EOS are not modelled); their text is a
  placeholder. A text prompt counts one token per 4 UTF-8 bytes (the usual BPE average; the
  twin has no tokenizer): send token ids for exact lengths. A client that goes away aborts its
  request, freeing its blocks, as in vLLM.
- `GET /v1/models`, `GET /health` (200 while serving, 503 while draining), `GET /metrics`
  (Prometheus text with vLLM's names, `exposition`; plus process and Python collectors, as
  vLLM's server has).

Errors are vLLM's shape, `{"error": {"message", "type", "param", "code"}}`, with its messages
for an unknown model and an over-long request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import exposition as prom_exposition
from prometheus_client import gc_collector, metrics_core, platform_collector, process_collector
from prometheus_client import registry as prom_registry

from kvscale.twinserver import driver, exposition

DEFAULT_MAX_TOKENS = 16
BYTES_PER_TOKEN = 4
# Placeholder text, one word per token.
_WORDS = (" the", " twin", " of", " a", " paged", " cache", " keeps", " its", " blocks")
_DISCONNECT_POLL_S = 0.5

_TWIN = web.AppKey("kvscale_twin", driver.Twin)
_REGISTRY = web.AppKey("kvscale_twin_registry", prom_registry.CollectorRegistry)


class _Collector(prom_registry.Collector):
    def __init__(self, twin: driver.Twin) -> None:
        self._twin = twin

    def collect(self) -> Iterable[metrics_core.Metric]:
        return exposition.families(self._twin.snapshot())


def metrics_registry(twin: driver.Twin) -> prom_registry.CollectorRegistry:
    """A registry of this twin alone: what its /metrics serves."""
    registry = prom_registry.CollectorRegistry(auto_describe=False)
    # What vLLM's /metrics starts with: the Python runtime's and the process's own metrics.
    gc_collector.GCCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    process_collector.ProcessCollector(registry=registry)
    registry.register(_Collector(twin))
    return registry


def build_app(twin: driver.Twin) -> web.Application:
    app = web.Application()
    app[_TWIN] = twin
    app[_REGISTRY] = metrics_registry(twin)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


def _error(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.json_response(body, status=status)


def _bad(message: str, param: str | None = None) -> web.Response:
    return _error(400, message, "BadRequestError", param)


class _RequestError(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__()
        self.response = response


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return max(1, math.ceil(len(prompt.encode("utf-8")) / BYTES_PER_TOKEN))
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)
    ):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) == 1:
        return _prompt_tokens(prompt[0])  # a batch of one
    if (
        isinstance(prompt, list)
        and len(prompt) > 1
        and all(isinstance(p, str | list) for p in prompt)
    ):
        raise _RequestError(_bad("the engine twin serves one prompt per request", "prompt"))
    raise _RequestError(
        _bad("prompt must be a non-empty string or a list of token ids (integers >= 0)", "prompt")
    )


def _parse(body: Any, twin: driver.Twin) -> tuple[str, int, int, bool, bool]:
    """(model, prompt tokens, max tokens, stream, include usage) or _RequestError."""
    if not isinstance(body, dict):
        raise _RequestError(_bad("the request body must be a JSON object"))
    names = {twin.settings.served_model_name}
    model = body.get("model") or twin.settings.served_model_name
    if model not in names:
        raise _RequestError(
            _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        )
    if "prompt" not in body:
        raise _RequestError(_bad("prompt is required", "prompt"))
    num_prompt = _prompt_tokens(body["prompt"])
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _RequestError(_bad(f"max_tokens = {max_tokens!r}, must be an integer >= 1",
                                 "max_tokens"))  # fmt: skip
    n = body.get("n", 1)
    if n not in (None, 1):
        raise _RequestError(_bad(f"n = {n!r}: the engine twin serves n = 1 only", "n"))
    limit = twin.max_model_len
    if num_prompt + max_tokens > limit:
        raise _RequestError(
            _bad(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{num_prompt + max_tokens} tokens ({num_prompt} in the messages, {max_tokens} "
                "in the completion). Please reduce the length of the messages or completion.",
                "max_tokens",
            )
        )
    stream = bool(body.get("stream", False))
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return model, num_prompt, max_tokens, stream, include_usage


def _text(start: int, end: int) -> str:
    return "".join(_WORDS[i % len(_WORDS)] for i in range(start, end))


def _usage(num_prompt: int, num_output: int) -> dict[str, Any]:
    return {
        "prompt_tokens": num_prompt,
        "total_tokens": num_prompt + num_output,
        "completion_tokens": num_output,
        "prompt_tokens_details": None,
    }


async def _completions(request: web.Request) -> web.StreamResponse:
    twin = request.app[_TWIN]
    if not twin.accepting:
        return _error(503, "the engine is shutting down", "ServiceUnavailableError")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _bad("the request body is not valid JSON")
    try:
        model, num_prompt, max_tokens, stream_mode, include_usage = _parse(body, twin)
        try:
            stream = twin.submit(num_prompt, max_tokens)
        except ValueError as error:
            raise _RequestError(_bad(str(error))) from None
    except _RequestError as error:
        return error.response
    head = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    try:
        if stream_mode:
            return await _stream(request, twin, stream, head, num_prompt, include_usage)
        return await _whole(request, stream, head, num_prompt)
    finally:
        if not stream.done:
            twin.cancel(stream)  # the client went away, or the handler was cancelled


async def _next(stream: driver.Stream, request: web.Request) -> bool:
    """Wait for more tokens; False if the client disconnected meanwhile."""
    while not stream.changed.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.changed.wait(), _DISCONNECT_POLL_S)
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
    stream.changed.clear()
    return True


def _finish_reason(stream: driver.Stream) -> str:
    return "abort" if stream.aborted else "length"


async def _whole(
    request: web.Request, stream: driver.Stream, head: dict[str, Any], num_prompt: int
) -> web.Response:
    while not stream.done:
        if not await _next(stream, request):
            return web.Response(status=499)  # nobody is listening any more
    num_output = stream.available
    choice = {
        "index": 0,
        "text": _text(0, num_output),
        "logprobs": None,
        "finish_reason": _finish_reason(stream),
        "stop_reason": None,
        "prompt_logprobs": None,
    }
    return web.json_response({**head, "choices": [choice], "usage": _usage(num_prompt, num_output)})


async def _stream(
    request: web.Request,
    twin: driver.Twin,
    stream: driver.Stream,
    head: dict[str, Any],
    num_prompt: int,
    include_usage: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    sent = 0

    async def event(payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        await response.write(f"data: {data}\n\n".encode())

    try:
        while True:
            if stream.available > sent or stream.done:
                last = stream.done
                choice = {
                    "index": 0,
                    "text": _text(sent, stream.available),
                    "logprobs": None,
                    "finish_reason": _finish_reason(stream) if last else None,
                    "stop_reason": None,
                }
                await event({**head, "choices": [choice], "usage": None})
                sent = stream.available
                if last:
                    break
            if not await _next(stream, request):
                return response
        if include_usage:
            await event({**head, "choices": [], "usage": _usage(num_prompt, sent)})
        await event("[DONE]")
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away: the handler's finally aborts the request
    return response


async def _models(request: web.Request) -> web.Response:
    twin = request.app[_TWIN]
    name = twin.settings.served_model_name
    card = {
        "id": name,
        "object": "model",
        "created": int(twin.created),
        "owned_by": "vllm",
        "root": twin.settings.model,
        "parent": None,
        "max_model_len": twin.max_model_len,
    }
    return web.json_response({"object": "list", "data": [card]})


async def _health(request: web.Request) -> web.Response:
    if request.app[_TWIN].accepting:
        return web.Response()
    return web.Response(status=503, text="shutting down")


async def _metrics(request: web.Request) -> web.Response:
    body = prom_exposition.generate_latest(request.app[_REGISTRY])
    # The text format version vLLM's server answers a plain scrape with.
    return web.Response(
        body=body, headers={"Content-Type": prom_exposition.CONTENT_TYPE_PLAIN_0_0_4}
    )
