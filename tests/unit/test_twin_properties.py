"""Properties of the engine twin over random workloads (hypothesis).

After every step: blocks used + free == total (the null block counted as used), every
reference count equals the number of block tables holding the block, free and used blocks
are disjoint, KV usage lies in [0, 1], CPU blocks are accounted for. At the end: every
request (all fit, by construction) finished with all its tokens, and nothing leaked.
Advancing in bulk gives exactly what one step at a time gives, the metrics as vLLM would show
them while a step is in flight included.
"""

from __future__ import annotations

import collections
import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from kvscale.twin import engine, profile, request, scheduler

PROFILE = profile.get("h100-sxm", "llama-3-8b")
MAX_STEPS = 20_000  # far more than any generated workload needs


@dataclasses.dataclass(frozen=True)
class Arrival:
    gap_s: float
    num_prompt_tokens: int
    max_tokens: int
    document: int  # which shared prefix the prompt starts with
    num_shared_blocks: int


@dataclasses.dataclass(frozen=True)
class Workload:
    config: engine.EngineConfig
    arrivals: tuple[Arrival, ...]


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    block_size = draw(st.sampled_from([1, 2, 4, 16]))
    num_gpu_blocks = draw(st.integers(3, 24))
    max_model_len = draw(st.integers(2, min((num_gpu_blocks - 1) * block_size, 96)))
    max_num_seqs = draw(st.integers(1, 6))
    mode = draw(st.sampled_from(list(scheduler.PreemptionMode)))
    config = engine.EngineConfig(
        block_size=block_size,
        num_gpu_blocks_override=num_gpu_blocks,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=draw(st.integers(max_num_seqs, 64)),
        enable_prefix_caching=draw(st.booleans()),
        full_sequence_must_fit=draw(st.booleans()),
        preemption_mode=mode,
        num_cpu_blocks_override=(
            draw(st.integers(1, 8)) if mode is scheduler.PreemptionMode.SWAP else None
        ),
        record_token_times=True,
    )
    arrivals = []
    for _ in range(draw(st.integers(1, 16))):
        # Short prompts with long outputs grow after admission: that is what preempts.
        prompt = draw(st.integers(1, max(1, (max_model_len - 1) // draw(st.sampled_from([1, 4])))))
        longest = max_model_len - prompt
        arrivals.append(
            Arrival(
                # Steps take milliseconds: bursts of arrivals fill the tiny pool.
                gap_s=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.02))),
                num_prompt_tokens=prompt,
                max_tokens=draw(st.one_of(st.just(longest), st.integers(1, longest))),
                document=draw(st.integers(0, 1)),
                num_shared_blocks=draw(st.integers(0, prompt // block_size)),
            )
        )
    return Workload(config, tuple(arrivals))


def make_requests(workload: Workload) -> list[tuple[float, request.Request]]:
    now = 0.0
    timed = []
    for index, arrival in enumerate(workload.arrivals):
        now += arrival.gap_s
        hashes = tuple((arrival.document, i) for i in range(arrival.num_shared_blocks))
        req = request.Request(
            f"r{index}", arrival.num_prompt_tokens, arrival.max_tokens, prompt_block_hashes=hashes
        )
        timed.append((now, req))
    return timed


def check_invariants(twin: engine.EngineTwin) -> None:
    sched = twin.scheduler
    pool, cpu_pool = sched.kv.gpu_pool, sched.kv.cpu_pool
    block_size = twin.scheduler_config.block_size
    holders: collections.Counter[int] = collections.Counter()
    for req in sched.running:
        assert req.status is request.RequestStatus.RUNNING
        assert len(set(req.block_table)) == len(req.block_table)
        assert len(req.block_table) * block_size >= req.num_computed_tokens
        holders.update(req.block_table)
    for req in sched.waiting:
        assert req.block_table == []
        assert req.num_computed_tokens == 0
    assert len(holders) + pool.num_free_blocks + 1 == pool.num_blocks  # used + free == total
    free_ids = pool.free_block_ids()
    assert len(free_ids) == pool.num_free_blocks
    assert set(free_ids).isdisjoint(holders)
    assert 0 not in free_ids
    assert 0 not in holders
    for block_id in range(1, pool.num_blocks):
        assert pool.ref_cnt[block_id] == holders[block_id]
    assert 0.0 <= twin.metrics().kv_cache_usage <= 1.0
    swapped = sum(len(req.cpu_blocks) for req in sched.waiting)
    assert swapped + cpu_pool.num_free_blocks == cpu_pool.num_blocks
    assert len(sched.running) <= twin.scheduler_config.max_num_seqs


def run_one_step_at_a_time(
    workload: Workload, check: bool, shown: list[engine.Metrics] | None = None
) -> tuple[engine.EngineTwin, list[request.Request]]:
    twin = engine.EngineTwin(workload.config, PROFILE)
    steps = 0

    def step_until(t: float) -> None:
        nonlocal steps
        while (start := twin.next_event_time()) is not None and start < t:
            twin.step(start)
            steps += 1
            assert steps < MAX_STEPS, "the engine twin does not make progress"
            if check:
                check_invariants(twin)

    timed = make_requests(workload)
    for arrival, req in timed:
        step_until(arrival)
        if shown is not None:
            shown.append(twin.metrics(now=arrival))
        twin.add_request(req, arrival)
    step_until(float("inf"))
    return twin, [req for _, req in timed]


def run_in_bulk(
    workload: Workload, shown: list[engine.Metrics] | None = None
) -> tuple[engine.EngineTwin, list[request.Request]]:
    twin = engine.EngineTwin(workload.config, PROFILE)
    timed = make_requests(workload)
    for arrival, req in timed:
        twin.advance_until(arrival)
        if shown is not None:
            shown.append(twin.metrics(now=arrival))
        twin.add_request(req, arrival)
    twin.advance_until(float("inf"))
    return twin, [req for _, req in timed]


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_block_accounting_holds_after_every_step_and_nothing_leaks(workload: Workload) -> None:
    twin, reqs = run_one_step_at_a_time(workload, check=True)
    metrics = twin.metrics()
    assert metrics.num_free_blocks == metrics.num_gpu_blocks - 1
    assert metrics.kv_cache_usage == 0.0
    assert metrics.num_cpu_blocks_used == 0
    assert (metrics.num_requests_running, metrics.num_requests_waiting) == (0, 0)
    assert metrics.num_requests_finished_total == len(reqs)
    assert metrics.generation_tokens_total == sum(req.max_tokens for req in reqs)
    for req in reqs:
        assert req.status is request.RequestStatus.FINISHED
        assert req.num_output_tokens == req.max_tokens
        assert req.first_token_time is not None
        assert req.finish_time is not None
        assert req.arrival_time < req.first_token_time <= req.finish_time
        assert req.token_times is not None
        assert len(req.token_times) == req.max_tokens
        assert req.token_times == sorted(req.token_times)


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_bulk_advance_equals_one_step_at_a_time(workload: Workload) -> None:
    stepped_shown: list[engine.Metrics] = []
    bulk_shown: list[engine.Metrics] = []
    stepped, stepped_reqs = run_one_step_at_a_time(workload, check=False, shown=stepped_shown)
    bulk, bulk_reqs = run_in_bulk(workload, shown=bulk_shown)
    assert bulk.metrics() == stepped.metrics()
    # What vLLM's metrics would show at every arrival (a step in flight not yet) too.
    assert bulk_shown == stepped_shown
    assert bulk.num_steps_total == stepped.num_steps_total
    assert bulk.clock == stepped.clock
    bulk_pool, stepped_pool = bulk.scheduler.kv.gpu_pool, stepped.scheduler.kv.gpu_pool
    assert bulk_pool.free_block_ids() == stepped_pool.free_block_ids()
    assert bulk_pool.block_hash == stepped_pool.block_hash
    for a, b in zip(bulk_reqs, stepped_reqs, strict=True):
        assert (a.first_token_time, a.finish_time, a.num_preemptions) == (
            b.first_token_time,
            b.finish_time,
            b.num_preemptions,
        )
        assert a.token_times == b.token_times
