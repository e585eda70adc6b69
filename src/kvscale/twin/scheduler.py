"""The scheduler: which requests run in the next step, and with how many tokens.

Follows vLLM V1's `Scheduler.schedule()` and `update_from_output()` (vllm/v1/core/sched/
scheduler.py, v0.32) for the FCFS policy with chunked prefill:

1. Running requests first, in order: each gets the tokens it still lacks (1 for a decode, a
   chunk of its prompt otherwise), within the step's token budget. When the pool cannot give
   one of them its slots, the LAST running request is preempted, repeatedly, until the
   allocation succeeds or the request preempted itself.
2. Then, only in a step that preempted nobody, waiting requests are admitted first come first
   served while the token budget and `max_num_seqs` allow and the pool can hold the request's
   whole current sequence. Admission reuses the longest cached prefix (and counts prefix-cache
   queries and hits, in tokens, for requests never preempted, as vLLM's metrics do).
3. After the step, every request whose computed tokens reach its length emits a token; a
   request with all its tokens finishes and frees its blocks.

Preemption by recompute (vLLM V1's only mode): free the blocks (their hashes stay cached), set
the computed tokens to 0, put the request at the FRONT of the waiting queue. Preemption by
swap (the twin's model of KV offloading to CPU): copy the computed blocks to the bounded CPU
pool and free the GPU blocks; if the CPU pool is full, fall back to recompute. A swapped
request resumes from the front of the queue by loading its blocks back (the step that does so
pays for the transfer), reusing whatever prefix is still cached on the GPU.

Beyond vLLM, `steady_decode_steps` and `advance_decodes` advance many pure decode steps at
once, with exactly the block ids, hashes and timestamps that one step at a time would give.
"""

from __future__ import annotations

import collections
import dataclasses
import enum

from kvscale.twin import block, cache, request

_Status = request.RequestStatus


class PreemptionMode(enum.StrEnum):
    RECOMPUTE = "recompute"
    SWAP = "swap"


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Scheduler and cache sizes, each named like the vLLM argument it models."""

    num_gpu_blocks: int  # including the reserved null block, like vLLM's num_gpu_blocks
    block_size: int = 16
    num_cpu_blocks: int = 0  # CPU pool for preemption by swap
    max_num_batched_tokens: int = 8192  # the token budget of one step
    max_num_seqs: int = 256
    max_model_len: int = 8192
    enable_prefix_caching: bool = True
    preemption_mode: PreemptionMode = PreemptionMode.RECOMPUTE
    # vLLM's `scheduler_reserve_full_isl` (default on): admit a request only when its whole
    # current sequence fits, not just its first prefill chunk.
    full_sequence_must_fit: bool = True

    def __post_init__(self) -> None:
        for name in ("num_gpu_blocks", "block_size", "max_num_batched_tokens", "max_num_seqs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} = {value!r}, must be an integer >= 1")
        if self.num_gpu_blocks < 2:
            raise ValueError(
                f"num_gpu_blocks = {self.num_gpu_blocks}, must be >= 2 "
                "(block 0 is the reserved null block)"
            )
        if not isinstance(self.num_cpu_blocks, int) or self.num_cpu_blocks < 0:
            raise ValueError(f"num_cpu_blocks = {self.num_cpu_blocks!r}, must be >= 0")
        if not isinstance(self.max_model_len, int) or self.max_model_len < 2:
            raise ValueError(f"max_model_len = {self.max_model_len!r}, must be >= 2")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens = {self.max_num_batched_tokens}, must be >= "
                f"max_num_seqs = {self.max_num_seqs} (every running request needs a token)"
            )
        # vLLM refuses to start when one request of max_model_len cannot fit in the cache;
        # that is also what guarantees every admitted request can eventually finish.
        capacity = (self.num_gpu_blocks - 1) * self.block_size
        if self.max_model_len > capacity:
            raise ValueError(
                f"max_model_len = {self.max_model_len}, must be <= the KV cache's capacity of "
                f"{capacity} tokens ((num_gpu_blocks - 1) x block_size)"
            )
        if not isinstance(self.preemption_mode, PreemptionMode):
            raise ValueError(
                f"preemption_mode = {self.preemption_mode!r}, must be one of "
                f"{[mode.value for mode in PreemptionMode]}"
            )


@dataclasses.dataclass
class SchedulerOutput:
    """What one step runs: the batch in order, and the sums the step-time model needs."""

    requests: list[request.Request] = dataclasses.field(default_factory=list)
    num_new_tokens: list[int] = dataclasses.field(default_factory=list)
    admitted: list[request.Request] = dataclasses.field(default_factory=list)
    preempted: list[request.Request] = dataclasses.field(default_factory=list)
    num_swapped_out_blocks: int = 0
    num_swapped_in_blocks: int = 0
    num_swap_fallbacks: int = 0
    num_tokens: int = 0  # tokens computed in the step
    num_decode_tokens: int = 0  # of which single-token steps of requests past their prefill
    # Sum over scheduled tokens of the tokens each attends to (itself included): the
    # attention FLOPs are proportional to it.
    attention_pairs: int = 0
    # Sum over requests of their KV length after the step: the KV bytes read and written.
    kv_tokens: int = 0

    def add(self, req: request.Request, num_computed: int, num_new: int) -> None:
        self.requests.append(req)
        self.num_new_tokens.append(num_new)
        self.num_tokens += num_new
        if num_new == 1 and num_computed >= req.num_prompt_tokens:
            self.num_decode_tokens += 1
        self.attention_pairs += num_new * num_computed + num_new * (num_new + 1) // 2
        self.kv_tokens += num_computed + num_new


@dataclasses.dataclass
class UpdateResult:
    """What a step (or a run of decode steps) produced, at its end."""

    num_output_tokens: dict[str, int] = dataclasses.field(default_factory=dict)
    first_tokens: list[request.Request] = dataclasses.field(default_factory=list)
    finished: list[request.Request] = dataclasses.field(default_factory=list)
    # Inter-token latencies as (seconds, how many tokens saw it): a decode step gives every
    # request in the batch the same latency, so this stays short.
    itl: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    num_prompt_tokens: int = 0  # prompt tokens of requests that emitted their first token


@dataclasses.dataclass
class _Admission:
    hits: list[int]
    num_external_tokens: int
    num_computed_tokens: int
    num_new_tokens: int
    num_loaded_blocks: int


class Scheduler:
    """The running list, the waiting queue and the KV cache of one engine."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.kv = cache.KVCacheManager(
            block.BlockPool(config.num_gpu_blocks, config.enable_prefix_caching),
            block.CpuBlockPool(config.num_cpu_blocks),
            config.block_size,
        )
        self.running: list[request.Request] = []
        self.waiting: collections.deque[request.Request] = collections.deque()
        self.num_preemptions_total = 0
        self.num_swap_fallbacks_total = 0
        self.prefix_cache_queries_total = 0  # tokens, requests never preempted (vLLM's metric)
        self.prefix_cache_hits_total = 0
        self.preempted_prefix_cache_queries_total = 0  # tokens, resumed requests
        self.preempted_prefix_cache_hits_total = 0

    @property
    def num_swapped(self) -> int:
        if self.config.preemption_mode is not PreemptionMode.SWAP:
            return 0  # none can be; saves a pass over a long queue at every metrics snapshot
        return sum(1 for req in self.waiting if req.status is _Status.SWAPPED)

    def add_request(self, req: request.Request) -> None:
        self.waiting.append(req)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # --- one step -------------------------------------------------------------------------

    def schedule(self, now: float) -> SchedulerOutput:
        """Choose the batch of a step starting at `now`; allocate, preempt and admit."""
        config, kv = self.config, self.kv
        out = SchedulerOutput()
        budget = config.max_num_batched_tokens
        running = self.running
        index = 0
        while index < len(running) and budget > 0:
            req = running[index]
            num_new = min(req.num_tokens - req.num_computed_tokens, budget)
            while True:
                new_blocks = kv.allocate_slots(req, num_new)
                if new_blocks is not None:
                    break
                victim = running.pop()
                self._preempt(victim, out)
                if victim is req:
                    break
            if new_blocks is None:
                break
            out.add(req, req.num_computed_tokens, num_new)
            budget -= num_new
            index += 1

        if out.preempted:
            return out  # like vLLM: no admissions in a step that preempted
        waiting = self.waiting
        while budget > 0 and waiting and len(running) < config.max_num_seqs:
            req = waiting[0]
            if req.arrival_time > now:
                break
            plan = self._plan_admission(req, budget)
            new_blocks = kv.allocate_slots(
                req,
                plan.num_new_tokens,
                plan.hits,
                plan.num_external_tokens,
                config.full_sequence_must_fit,
            )
            if new_blocks is None:
                break
            waiting.popleft()
            self._record_prefix_lookup(req, len(plan.hits) * config.block_size)
            if req.status is _Status.SWAPPED:
                out.num_swapped_in_blocks += plan.num_loaded_blocks
                kv.release_cpu_blocks(req)
            req.num_computed_tokens = plan.num_computed_tokens
            req.status = _Status.RUNNING
            if req.scheduled_time is None:
                req.scheduled_time = now
            running.append(req)
            out.admitted.append(req)
            out.add(req, plan.num_computed_tokens, plan.num_new_tokens)
            budget -= plan.num_new_tokens
        return out

    def update(self, out: SchedulerOutput, end: float, record_token_times: bool) -> UpdateResult:
        """Apply a step that ran `out` and ended at `end`: tokens, finishes, freed blocks."""
        result = UpdateResult()
        previous_token_times: dict[float, int] = {}
        for req, num_new in zip(out.requests, out.num_new_tokens, strict=True):
            req.num_computed_tokens += num_new
            if req.num_computed_tokens < req.num_tokens:
                continue  # a prefill chunk that does not reach the end samples nothing
            req.num_output_tokens += 1
            result.num_output_tokens[req.request_id] = 1
            if req.last_token_time is None:
                req.first_token_time = end
                result.first_tokens.append(req)
                result.num_prompt_tokens += req.num_prompt_tokens
            else:
                previous = req.last_token_time
                previous_token_times[previous] = previous_token_times.get(previous, 0) + 1
            req.last_token_time = end
            if record_token_times:
                assert req.token_times is not None
                req.token_times.append(end)
            if req.num_output_tokens >= req.max_tokens:
                result.finished.append(req)
        result.itl = [(end - previous, n) for previous, n in previous_token_times.items()]
        self._finish(result.finished, end)
        return result

    def abort(self, req: request.Request) -> None:
        """Drop a request wherever it is, freeing its GPU and CPU blocks."""
        if req.status is _Status.RUNNING:
            self.running.remove(req)
            self.kv.free(req)
        elif req in self.waiting:
            self.waiting.remove(req)
            if req.status is _Status.SWAPPED:
                self.kv.release_cpu_blocks(req)
        req.status = _Status.ABORTED

    # --- many decode steps at once --------------------------------------------------------

    def steady_decode_steps(self, now: float) -> int:
        """How many pure decode steps from `now` on would change nothing but lengths.

        That is: every running request is decoding, none finishes before the last of these
        steps, the pool can give every block they need without preempting, and the head of
        the waiting queue (if it has arrived) cannot be admitted during them (see
        `_could_admit`). Returns 0 when the next step is not such a step. A waiting head
        that arrives later is the caller's bound.
        """
        running = self.running
        if not running or len(running) > self.config.max_num_batched_tokens:
            return 0
        max_steps = self.config.max_model_len
        for req in running:
            # A request one token short of its first output is finishing its prefill: that
            # step emits its first token, which is an event, not a steady decode.
            if req.num_tokens - req.num_computed_tokens != 1 or req.last_token_time is None:
                return 0
            max_steps = min(max_steps, req.max_tokens - req.num_output_tokens)
        free = self.kv.gpu_pool.num_free_blocks
        first_step_blocks = self._decode_blocks_needed(1)
        if first_step_blocks > free:
            return 0
        if (
            self.waiting
            and self.waiting[0].arrival_time <= now
            and self._could_admit(self.waiting[0], free - first_step_blocks)
        ):
            return 0
        if self._decode_blocks_needed(max_steps) <= free:
            return max_steps
        fits, too_many = 1, max_steps  # blocks needed only grow with the number of steps
        while too_many - fits > 1:
            middle = (fits + too_many) // 2
            if self._decode_blocks_needed(middle) <= free:
                fits = middle
            else:
                too_many = middle
        return fits

    def decode_kv_tokens(self) -> int:
        """KV length over the running requests in the first of the steady decode steps."""
        return sum(req.num_tokens for req in self.running)

    def advance_decodes(self, step_ends: list[float], record_token_times: bool) -> UpdateResult:
        """Run `len(step_ends)` steady decode steps (see `steady_decode_steps`) at once.

        Blocks are handed out in the order single steps would take them: by step, then by
        position in the running list.
        """
        num_steps = len(step_ends)
        running = self.running
        block_size = self.config.block_size
        needs: list[tuple[int, int]] = []
        for index, req in enumerate(running):
            # In step j the request needs slots for num_tokens + j - 1 tokens.
            first = len(req.block_table) * block_size - req.num_tokens + 2
            needs.extend((step, index) for step in range(first, num_steps + 1, block_size))
        needs.sort()
        new_blocks = self.kv.gpu_pool.allocate(len(needs))
        if new_blocks is None:
            raise RuntimeError("advance_decodes: more steps than steady_decode_steps allowed")
        for (_, index), new_block in zip(needs, new_blocks, strict=True):
            running[index].block_table.append(new_block)

        result = UpdateResult()
        end = step_ends[-1]
        previous_token_times: dict[float, int] = {}
        for req in running:
            previous = req.last_token_time
            assert previous is not None  # a decoding request has emitted its first token
            previous_token_times[previous] = previous_token_times.get(previous, 0) + 1
            req.num_computed_tokens += num_steps
            req.num_output_tokens += num_steps
            self.kv.cache_full_blocks(req, req.num_tokens - 1)
            req.last_token_time = end
            if record_token_times:
                assert req.token_times is not None
                req.token_times.extend(step_ends)
            result.num_output_tokens[req.request_id] = num_steps
            if req.num_output_tokens >= req.max_tokens:
                result.finished.append(req)
        first_end = step_ends[0]
        result.itl = [(first_end - previous, n) for previous, n in previous_token_times.items()]
        batch = len(running)
        result.itl.extend(
            (step_ends[step] - step_ends[step - 1], batch) for step in range(1, num_steps)
        )
        self._finish(result.finished, end)
        return result

    # --- helpers --------------------------------------------------------------------------

    def _decode_blocks_needed(self, num_steps: int) -> int:
        block_size = self.config.block_size
        total = 0
        for req in self.running:
            blocks = -(-(req.num_tokens + num_steps - 1) // block_size)
            if blocks > len(req.block_table):
                total += blocks - len(req.block_table)
        return total

    def _could_admit(self, req: request.Request, free: int) -> bool:
        """Whether a decode-only step from now on might admit `req` (no side effects).

        Conservative: True unless `req` is sure to stay out while the running batch only
        decodes and `free` only shrinks. Its exact block need can shrink meanwhile — an
        evicted free copy of a prefix block can expose a copy in use, which costs nothing,
        and a chunk cut by the budget needs no more blocks when a hit is lost — so it is
        compared through a lower bound that holds for any shorter hit chain and any hit
        costs: with T tokens, h hit blocks now and a chunk budget b, at least
        min(ceil(T / block) - h, ceil(b / block)) blocks, and with the full-sequence gate at
        least ceil(T / block) - h. Hits never grow during decode steps: decodes cache only
        blocks holding their own output tokens.
        """
        config = self.config
        num_running = len(self.running)
        budget = config.max_num_batched_tokens - num_running
        if num_running >= config.max_num_seqs or budget <= 0:
            return False
        block_size = config.block_size
        full_need = cache.cdiv(req.num_tokens, block_size) - len(self.kv.lookup(req))
        if config.full_sequence_must_fit:
            least_need = full_need
        else:
            least_need = min(full_need, cache.cdiv(budget, block_size))
        return least_need <= free

    def _plan_admission(self, req: request.Request, budget: int) -> _Admission:
        block_size = self.config.block_size
        hits = self.kv.lookup(req)
        num_hit_tokens = len(hits) * block_size
        num_external = 0
        num_loaded_blocks = 0
        if req.status is _Status.SWAPPED and req.num_swapped_tokens > num_hit_tokens:
            num_external = req.num_swapped_tokens - num_hit_tokens
            num_loaded_blocks = cache.cdiv(req.num_swapped_tokens, block_size) - len(hits)
        num_computed = num_hit_tokens + num_external
        return _Admission(
            hits=hits,
            num_external_tokens=num_external,
            num_computed_tokens=num_computed,
            num_new_tokens=min(req.num_tokens - num_computed, budget),
            num_loaded_blocks=num_loaded_blocks,
        )

    def _record_prefix_lookup(self, req: request.Request, num_hit_tokens: int) -> None:
        if not self.config.enable_prefix_caching:
            return
        if req.num_preemptions > 0:
            self.preempted_prefix_cache_queries_total += req.num_tokens
            self.preempted_prefix_cache_hits_total += num_hit_tokens
        else:
            self.prefix_cache_queries_total += req.num_tokens
            self.prefix_cache_hits_total += num_hit_tokens

    def _preempt(self, victim: request.Request, out: SchedulerOutput) -> None:
        kv = self.kv
        victim.num_preemptions += 1
        self.num_preemptions_total += 1
        out.preempted.append(victim)
        swapped = False
        if self.config.preemption_mode is PreemptionMode.SWAP and victim.num_computed_tokens > 0:
            cpu_blocks = kv.swap_out(victim)
            if cpu_blocks is None:
                out.num_swap_fallbacks += 1
                self.num_swap_fallbacks_total += 1
            else:
                out.num_swapped_out_blocks += len(cpu_blocks)
                swapped = True
        if swapped:
            victim.status = _Status.SWAPPED
        else:
            kv.free(victim)
            victim.status = _Status.PREEMPTED
        victim.num_computed_tokens = 0
        self.waiting.appendleft(victim)

    def _finish(self, finished: list[request.Request], end: float) -> None:
        if not finished:
            return
        for req in finished:
            req.status = _Status.FINISHED
            req.finish_time = end
            self.kv.free(req)
        self.running = [req for req in self.running if req.status is _Status.RUNNING]
