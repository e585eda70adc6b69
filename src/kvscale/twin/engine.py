"""The engine twin: one vLLM V1 engine's scheduler, KV cache and step time, on explicit time.

Time: the engine is busy until `clock`, the end of its last step. A step starts when the
engine is free and has something to run, never before a request's arrival: `step(now)` runs
one step starting at `max(now, clock)`; `advance_until(t)` runs every step that starts before
`t`, jumping over runs of pure decode steps in bulk (their outcome is computed, not iterated
per request and token), so a simulation costs about O(events), not O(tokens).

The metrics snapshot holds exactly what vLLM's `vllm:*` metrics are made of; latency
histograms are fed from step results (TTFT from `first_tokens`, ITL from `itl`, e2e from
`finished`). vLLM publishes them once per step, at its end: the engine core makes its scheduler
stats at the end of `Scheduler.update_from_output()` (vllm/v1/core/sched/scheduler.py,
`make_stats`) and the API server sets the gauges from them (vllm/v1/metrics/loggers.py,
`PrometheusStatLogger.record`), so while a step runs `/metrics` still shows the state after
the previous one. `metrics(now)` reads them that way; `metrics()` reads the twin's state after
every step run so far, the one in flight included.
"""

from __future__ import annotations

import dataclasses
import math

from kvscale.twin import profile as profile_
from kvscale.twin import request, scheduler

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Engine arguments, named like vLLM's; None means "as vLLM would pick"."""

    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    num_gpu_blocks_override: int | None = None  # vLLM --num-gpu-blocks-override
    # Defaults of `vllm serve` by GPU: 8192 and 1024 on GPUs with >= 70 GiB other than
    # A100, 2048 and 256 otherwise; 2048 and 128 on vLLM's CPU build
    # (vllm/engine/arg_utils.py, v0.32).
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    preemption_mode: scheduler.PreemptionMode = scheduler.PreemptionMode.RECOMPUTE
    swap_space_bytes: int = 0  # CPU memory for swapped-out KV blocks
    num_cpu_blocks_override: int | None = None
    full_sequence_must_fit: bool = True
    record_token_times: bool = False  # keep every token's time on its request

    def __post_init__(self) -> None:
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size = {self.block_size!r}, must be an integer >= 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization = {self.gpu_memory_utilization!r}, must be in (0, 1]"
            )
        if self.preemption_mode in {mode.value for mode in scheduler.PreemptionMode}:
            # Accept the plain string, as it comes from a CLI flag or the CRD.
            object.__setattr__(
                self, "preemption_mode", scheduler.PreemptionMode(self.preemption_mode)
            )
        if not isinstance(self.preemption_mode, scheduler.PreemptionMode):
            raise ValueError(
                f"preemption_mode = {self.preemption_mode!r}, must be one of "
                f"{[mode.value for mode in scheduler.PreemptionMode]}"
            )
        if not isinstance(self.swap_space_bytes, int) or self.swap_space_bytes < 0:
            raise ValueError(f"swap_space_bytes = {self.swap_space_bytes!r}, must be >= 0")
        if (
            self.preemption_mode is scheduler.PreemptionMode.SWAP
            and self.swap_space_bytes == 0
            and not self.num_cpu_blocks_override
        ):
            raise ValueError(
                "swap_space_bytes = 0, must be > 0 when preemption_mode is swap "
                "(or set num_cpu_blocks_override)"
            )

    def resolve(self, profile: profile_.Profile) -> scheduler.SchedulerConfig:
        """The scheduler's sizes for this config on `profile`, with vLLM's defaults filled in."""
        if self.num_gpu_blocks_override is not None:
            num_gpu_blocks = self.num_gpu_blocks_override
        else:
            num_gpu_blocks = profile.num_gpu_blocks(self.block_size, self.gpu_memory_utilization)
        if self.num_cpu_blocks_override is not None:
            num_cpu_blocks = self.num_cpu_blocks_override
        else:
            num_cpu_blocks = self.swap_space_bytes // profile.block_bytes(self.block_size)
        default_tokens, default_seqs = _serve_defaults(profile.gpu)
        return scheduler.SchedulerConfig(
            num_gpu_blocks=num_gpu_blocks,
            block_size=self.block_size,
            num_cpu_blocks=num_cpu_blocks,
            max_num_batched_tokens=(
                default_tokens
                if self.max_num_batched_tokens is None
                else self.max_num_batched_tokens
            ),
            max_num_seqs=default_seqs if self.max_num_seqs is None else self.max_num_seqs,
            max_model_len=(
                profile.model.max_position_embeddings
                if self.max_model_len is None
                else self.max_model_len
            ),
            enable_prefix_caching=self.enable_prefix_caching,
            preemption_mode=self.preemption_mode,
            full_sequence_must_fit=self.full_sequence_must_fit,
        )


def _serve_defaults(gpu: profile_.Gpu) -> tuple[int, int]:
    if gpu.serve_defaults is not None:
        return gpu.serve_defaults
    if gpu.memory_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu.memory_bytes >= 70 * GIB and "A100" not in gpu.name:
        return 8192, 1024
    return 2048, 256


@dataclasses.dataclass
class StepResult:
    """What happened in one step, or in all the steps of one `advance_until`."""

    start: float
    end: float
    num_steps: int = 0
    busy_s: float = 0.0  # sum of step durations
    step_ends: list[float] = dataclasses.field(default_factory=list)
    num_output_tokens: dict[str, int] = dataclasses.field(default_factory=dict)
    first_tokens: list[request.Request] = dataclasses.field(default_factory=list)
    finished: list[request.Request] = dataclasses.field(default_factory=list)
    preempted: list[request.Request] = dataclasses.field(default_factory=list)
    itl: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (seconds, count)
    num_computed_tokens: int = 0  # prefill and decode tokens run through the model
    num_prompt_tokens: int = 0  # prompts of requests that emitted their first token
    num_generation_tokens: int = 0
    num_swapped_out_blocks: int = 0
    num_swapped_in_blocks: int = 0
    num_swap_fallbacks: int = 0

    def _add(self, update: scheduler.UpdateResult) -> None:
        counts = self.num_output_tokens
        for request_id, count in update.num_output_tokens.items():
            counts[request_id] = counts.get(request_id, 0) + count
            self.num_generation_tokens += count
        self.first_tokens.extend(update.first_tokens)
        self.finished.extend(update.finished)
        self.itl.extend(update.itl)
        self.num_prompt_tokens += update.num_prompt_tokens


@dataclasses.dataclass(frozen=True)
class Metrics:
    """A snapshot of what vLLM's Prometheus metrics report, plus the twin's swap state.

    vLLM names: `kv_cache_usage` is `vllm:kv_cache_usage_perc`; `num_gpu_blocks` and
    `block_size` are labels of `vllm:cache_config_info`; `num_requests_running`/`_waiting`,
    `num_preemptions_total`, `prefix_cache_queries_total`/`_hits_total` (tokens, requests never
    preempted), `prompt_tokens_total`, `generation_tokens_total`,
    `num_requests_finished_total` (`vllm:request_success_total`) match one to one.
    """

    num_gpu_blocks: int
    block_size: int
    num_free_blocks: int
    kv_cache_usage: float
    num_requests_running: int
    num_requests_waiting: int  # includes preempted and swapped requests, as in vLLM
    num_requests_swapped: int
    num_preemptions_total: int
    num_swap_fallbacks_total: int
    prefix_cache_queries_total: int
    prefix_cache_hits_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    num_requests_finished_total: int
    num_cpu_blocks: int
    num_cpu_blocks_used: int
    # Engine steps so far (vLLM counts them in `vllm:iteration_tokens_total`).
    num_steps_total: int = 0


class EngineTwin:
    """A model of one vLLM V1 engine, driven by explicit time."""

    def __init__(self, config: EngineConfig, profile: profile_.Profile) -> None:
        self.config = config
        self.profile = profile
        self.scheduler_config = config.resolve(profile)
        self.scheduler = scheduler.Scheduler(self.scheduler_config)
        self.clock = 0.0  # the end of the last step: the engine is busy until then
        self._requests: dict[str, request.Request] = {}  # live (not finished) requests
        self._used_ids: set[str] = set()
        self._last_add_time = -math.inf
        self.num_steps_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.num_requests_finished_total = 0
        # What vLLM's metrics show: the state at the end of the last step, and at the end of
        # the step before it (shown while the last one is still in flight, until `clock`).
        self._published = self._snapshot()
        self._published_before = self._published

    # --- requests -------------------------------------------------------------------------

    def add_request(self, req: request.Request, now: float) -> None:
        """Queue a new request that arrives at `now` (times must not go backwards)."""
        config = self.scheduler_config
        if not math.isfinite(now):
            raise ValueError(f"now = {now!r}, must be a finite time")
        if now < self._last_add_time:
            raise ValueError(
                f"now = {now}, must be >= the previous arrival time {self._last_add_time}"
            )
        rid = req.request_id
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"request_id = {rid!r}, must be a non-empty string")
        if rid in self._used_ids:
            raise ValueError(f"request_id = {rid!r} was already used in this engine")
        if req.status is not request.RequestStatus.WAITING or req.num_output_tokens:
            raise ValueError(f"request {rid}: status = {req.status.value}, must be a new request")
        for name in ("num_prompt_tokens", "max_tokens"):
            value = getattr(req, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"request {rid}: {name} = {value!r}, must be an integer >= 1")
        total = req.num_prompt_tokens + req.max_tokens
        if total > config.max_model_len:
            raise ValueError(
                f"request {rid}: num_prompt_tokens + max_tokens = {total}, must be <= "
                f"max_model_len = {config.max_model_len}"
            )
        num_full_prompt_blocks = req.num_prompt_tokens // config.block_size
        if len(req.prompt_block_hashes) > num_full_prompt_blocks:
            raise ValueError(
                f"request {rid}: {len(req.prompt_block_hashes)} prompt_block_hashes, must be "
                f"<= the {num_full_prompt_blocks} full blocks of its prompt"
            )
        req.arrival_time = now
        if self.config.record_token_times:
            req.token_times = []
        self._used_ids.add(rid)
        self._requests[rid] = req
        self._last_add_time = now
        self.scheduler.add_request(req)

    def abort(self, request_id: str) -> request.Request:
        """Drop a live request (a client went away); its blocks are freed at once."""
        req = self._requests.pop(request_id, None)
        if req is None:
            raise ValueError(f"request_id = {request_id!r} is not a live request")
        self.scheduler.abort(req)
        return req

    def get(self, request_id: str) -> request.Request | None:
        """A live request by id (None once it finished or was aborted)."""
        return self._requests.get(request_id)

    # --- time -----------------------------------------------------------------------------

    def next_event_time(self) -> float | None:
        """When the next step would start; None when the engine has nothing to do."""
        sched = self.scheduler
        if sched.running:
            return self.clock
        if sched.waiting:
            return max(self.clock, sched.waiting[0].arrival_time)
        return None

    def step(self, now: float) -> StepResult:
        """Run one step starting at `max(now, clock)`; an empty result if nothing can run."""
        start = max(now, self.clock)
        result = StepResult(start=start, end=start)
        if self.scheduler.has_work():
            self._run_step(start, result)
        return result

    def advance_until(self, t: float) -> StepResult:
        """Run every step that starts before `t`; the engine may end busy past `t`."""
        first = self.next_event_time()
        start = self.clock if first is None else min(first, t)
        result = StepResult(start=start, end=start)
        sched = self.scheduler
        step_time = self.profile.step_time
        while True:
            start_or_none = self.next_event_time()
            if start_or_none is None or start_or_none >= t:
                break
            start = start_or_none
            num_steps = sched.steady_decode_steps(start)
            batch = len(sched.running)
            step_ends: list[float] = []
            if num_steps:
                bound = t
                if sched.waiting and sched.waiting[0].arrival_time > start:
                    bound = min(bound, sched.waiting[0].arrival_time)
                kv_tokens = sched.decode_kv_tokens()
                end = start
                for _ in range(num_steps):
                    if end >= bound:
                        break
                    end = end + step_time(batch, batch, kv_tokens, kv_tokens)
                    step_ends.append(end)
                    kv_tokens += batch
                if step_ends[-1] > t:
                    # The step still in flight at `t` runs on its own (it gives exactly what
                    # it would in bulk), so that `metrics(t)` can show the state before it.
                    step_ends.pop()
            if not step_ends:
                if not self._run_step(start, result):
                    raise RuntimeError(f"engine twin made no progress at t = {start}")
                continue
            update = sched.advance_decodes(step_ends, self.config.record_token_times)
            result.busy_s += step_ends[-1] - start
            result.num_computed_tokens += batch * len(step_ends)
            self._account(result, update, step_ends)
            # Every step of the run ended by `t` (the one in flight at `t` runs alone, above),
            # so only the run's end can be shown from now on.
            self._published_before = self._published = self._snapshot()
        result.end = max(result.start, self.clock)
        return result

    # --- state ----------------------------------------------------------------------------

    def metrics(self, now: float | None = None) -> Metrics:
        """What vLLM's metrics show at `now`; without `now`, the twin's state as it is.

        vLLM publishes the stats of a step when the step ends (see the module docstring), so
        at `now` they show the end of the last step that ended by `now`: a step still in
        flight is not shown, nor are requests added or aborted since the last step ended
        (the engine core takes them in between steps). Without `now`: the state after every
        step run so far, the one in flight included, and every request added since.
        """
        if now is None:
            return self._snapshot()
        return self._published_before if now < self.clock else self._published

    def _snapshot(self) -> Metrics:
        sched = self.scheduler
        pool = sched.kv.gpu_pool
        cpu_pool = sched.kv.cpu_pool
        return Metrics(
            num_gpu_blocks=pool.num_blocks,
            block_size=self.scheduler_config.block_size,
            num_free_blocks=pool.num_free_blocks,
            kv_cache_usage=pool.usage,
            num_requests_running=len(sched.running),
            num_requests_waiting=len(sched.waiting),
            num_requests_swapped=sched.num_swapped,
            num_preemptions_total=sched.num_preemptions_total,
            num_swap_fallbacks_total=sched.num_swap_fallbacks_total,
            prefix_cache_queries_total=sched.prefix_cache_queries_total,
            prefix_cache_hits_total=sched.prefix_cache_hits_total,
            prompt_tokens_total=self.prompt_tokens_total,
            generation_tokens_total=self.generation_tokens_total,
            num_requests_finished_total=self.num_requests_finished_total,
            num_cpu_blocks=cpu_pool.num_blocks,
            num_cpu_blocks_used=cpu_pool.num_blocks - cpu_pool.num_free_blocks,
            num_steps_total=self.num_steps_total,
        )

    # --- helpers --------------------------------------------------------------------------

    def _run_step(self, start: float, result: StepResult) -> bool:
        """One scheduled step from `start`; False if it neither ran nor preempted anything."""
        sched, profile = self.scheduler, self.profile
        out = sched.schedule(start)
        if not out.requests and not out.preempted:
            return False
        block_size = self.scheduler_config.block_size
        duration = profile.step_time(
            out.num_tokens, len(out.requests), out.attention_pairs, out.kv_tokens
        ) + profile.swap_time(out.num_swapped_out_blocks + out.num_swapped_in_blocks, block_size)
        end = start + duration
        update = sched.update(out, end, self.config.record_token_times)
        result.busy_s += duration
        result.num_computed_tokens += out.num_tokens
        result.preempted.extend(out.preempted)
        result.num_swapped_out_blocks += out.num_swapped_out_blocks
        result.num_swapped_in_blocks += out.num_swapped_in_blocks
        result.num_swap_fallbacks += out.num_swap_fallbacks
        self._account(result, update, [end])
        # vllm/v1/core/sched/scheduler.py, `update_from_output`: the stats are made after the
        # step's finished requests are freed, before the requests that arrived during the
        # step are taken in.
        self._published_before, self._published = self._published, self._snapshot()
        return True

    def _account(
        self, result: StepResult, update: scheduler.UpdateResult, step_ends: list[float]
    ) -> None:
        self.clock = step_ends[-1]
        self.num_steps_total += len(step_ends)
        result.num_steps += len(step_ends)
        result.step_ends.extend(step_ends)
        generated_before = result.num_generation_tokens
        result._add(update)
        self.generation_tokens_total += result.num_generation_tokens - generated_before
        self.prompt_tokens_total += update.num_prompt_tokens
        self.num_requests_finished_total += len(update.finished)
        for req in update.finished:
            self._requests.pop(req.request_id, None)
        result.end = self.clock
