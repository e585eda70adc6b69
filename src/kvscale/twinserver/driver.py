"""One engine twin on wall-clock time: requests in, tokens out when their time comes. Does I/O
(reads the clock, sleeps on the event loop).

Twin time is wall time since the twin started, times `time_scale`. A driver task advances the
pure engine to "now" (`EngineTwin.advance_until`), feeds the histograms from the step results,
and hands each request the tokens whose modelled emission time has passed; tokens of a step
still in flight wait for their time. Between passes it sleeps until the engine's next step
ends or the next pending token is due, but never less than a tick (`--tick-ms`), so a busy
twin wakes about 100 times a second whatever its step time, and an idle one (nothing running
or waiting) sleeps until a request arrives. Latencies in the metrics are the modelled ones,
exact whatever the tick; clients see tokens up to a tick late.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
import uuid
from collections.abc import Callable

from kvscale.twin import engine, request
from kvscale.twinserver import exposition, settings

Clock = Callable[[], float]


class Stream:
    """A request's output as the server hands it out: how many tokens are due so far."""

    def __init__(self, req: request.Request) -> None:
        self.request = req
        self.available = 0  # tokens whose emission time has passed
        self.aborted = False  # dropped by the server (shutdown), not finished
        self.changed = asyncio.Event()

    @property
    def done(self) -> bool:
        """Every token is due (the request finished), or it was aborted."""
        return self.aborted or (
            self.request.status is request.RequestStatus.FINISHED
            and self.available >= self.request.max_tokens
        )


class Twin:
    """An `EngineTwin` behind a clock, with the metrics the server exports."""

    def __init__(
        self, config: settings.Settings, clock: Clock = time.monotonic, wall: Clock = time.time
    ) -> None:
        self.settings = config
        self.engine = engine.EngineTwin(config.engine, config.profile)
        self._clock = clock
        self._origin = clock()
        self.created = wall()
        sched = self.engine.scheduler_config
        self.histograms = exposition.Histograms.for_max_model_len(sched.max_model_len)
        self.counters = exposition.Counters()
        self.cache_config = exposition.cache_config_labels(
            block_size=sched.block_size,
            user_specified_block_size=config.user_specified_block_size,
            num_gpu_blocks=sched.num_gpu_blocks,
            num_gpu_blocks_override=config.engine.num_gpu_blocks_override,
            gpu_memory_utilization=config.engine.gpu_memory_utilization,
            cache_dtype=config.kv_cache_dtype,
            enable_prefix_caching=sched.enable_prefix_caching,
            max_model_len=sched.max_model_len,
            kv_cache_memory_bytes=config.kv_cache_memory_bytes,
            kv_offloading_size=config.kv_offloading_size_gib,
            kv_offloading_backend=config.kv_offloading_backend,
            num_cpu_blocks=sched.num_cpu_blocks or None,
        )
        self._block_bytes = config.profile.block_bytes(sched.block_size)
        self._streams: dict[str, Stream] = {}
        self._pending: set[Stream] = set()  # streams with tokens not yet due
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while no request is live
        self._idle.set()
        self.accepting = True

    @property
    def max_model_len(self) -> int:
        return self.engine.scheduler_config.max_model_len

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    def now(self) -> float:
        """Twin time: wall seconds since start, times the time scale."""
        return (self._clock() - self._origin) * self.settings.time_scale

    def submit(self, num_prompt_tokens: int, max_tokens: int) -> Stream:
        """Queue a request now; ValueError (from the engine) when its sizes are not servable."""
        req = request.Request(f"cmpl-{uuid.uuid4().hex}", num_prompt_tokens, max_tokens)
        self.engine.add_request(req, self.now())
        stream = Stream(req)
        self._streams[req.request_id] = stream
        self._idle.clear()
        self._wake.set()
        return stream

    def cancel(self, stream: Stream) -> None:
        """The client went away: drop the request and free its blocks, as vLLM aborts it."""
        rid = stream.request.request_id
        if self.engine.get(rid) is not None:
            self.engine.abort(rid)
            self.counters.finished["abort"] += 1
        self._forget(stream)

    def abort_all(self) -> None:
        """End every live request (shutdown): their handlers see `aborted`."""
        for stream in list(self._streams.values()):
            self.cancel(stream)
            stream.aborted = True
            stream.changed.set()

    def snapshot(self) -> exposition.Snapshot:
        return exposition.Snapshot(
            model_name=self.settings.served_model_name,
            metrics=self.engine.metrics(),
            histograms=self.histograms,
            counters=self.counters,
            cache_config=self.cache_config,
            created=self.created,
            swap=self.settings.kv_offloading_size_gib is not None,
        )

    def pump(self) -> float | None:
        """One pass: advance the engine to now, feed the metrics, hand out due tokens. Returns
        the wall seconds until the next pass is useful, None when only an arrival can be."""
        now = self.now()
        result = self.engine.advance_until(now)
        self._observe(result)
        self._deliver(result, now)
        return self._next_delay(now)

    async def run(self) -> None:
        """The driver: pump, then sleep until the next pass or an arrival; until cancelled."""
        while True:
            delay = self.pump()
            if delay is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every live request to finish; True if they all did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self._streams

    # --- helpers --------------------------------------------------------------------------

    def _forget(self, stream: Stream) -> None:
        self._streams.pop(stream.request.request_id, None)
        self._pending.discard(stream)
        if not self._streams:
            self._idle.set()

    def _observe(self, result: engine.StepResult) -> None:
        hists = self.histograms
        for req in result.first_tokens:
            assert req.first_token_time is not None
            hists.ttft.observe(req.first_token_time - req.arrival_time)
        for seconds, count in result.itl:
            hists.itl.observe(seconds, count)
        for req in result.finished:
            assert req.finish_time is not None
            assert req.first_token_time is not None
            hists.e2e.observe(req.finish_time - req.arrival_time)
            # vLLM's phases: queued -> first scheduled -> first token -> last token.
            scheduled = req.scheduled_time
            assert scheduled is not None  # a request that finished was scheduled
            hists.queue.observe(scheduled - req.arrival_time)
            hists.inference.observe(req.finish_time - scheduled)
            hists.prefill.observe(req.first_token_time - scheduled)
            hists.decode.observe(req.finish_time - req.first_token_time)
            if req.num_output_tokens > 1:
                decode = req.finish_time - req.first_token_time
                hists.tpot.observe(decode / (req.num_output_tokens - 1))
            hists.num_preemptions.observe(req.num_preemptions)
            hists.prompt_tokens.observe(req.num_prompt_tokens)
            hists.generation_tokens.observe(req.num_output_tokens)
            hists.max_tokens.observe(req.max_tokens)
            self.counters.finished["length"] += 1
        self.counters.swap_store_bytes += result.num_swapped_out_blocks * self._block_bytes
        self.counters.swap_load_bytes += result.num_swapped_in_blocks * self._block_bytes

    def _deliver(self, result: engine.StepResult, now: float) -> None:
        for rid in result.num_output_tokens:
            stream = self._streams.get(rid)
            if stream is not None:
                self._pending.add(stream)
        for stream in list(self._pending):
            times = stream.request.token_times or []
            due = bisect.bisect_right(times, now)
            if due > stream.available:
                stream.available = due
                stream.changed.set()
            if due == len(times):
                self._pending.discard(stream)
            if stream.done:
                self._forget(stream)

    def _next_delay(self, now: float) -> float | None:
        """Wall seconds until the next thing to do; None when only an arrival can wake us."""
        due: list[float] = []
        next_step = self.engine.next_event_time()
        if next_step is not None:
            due.append(next_step)
        for stream in self._pending:
            times = stream.request.token_times or []
            if stream.available < len(times):
                due.append(times[stream.available])
        if not due:
            return None
        wait = max(0.0, min(due) - now) / self.settings.time_scale
        return max(self.settings.tick_s, wait)
