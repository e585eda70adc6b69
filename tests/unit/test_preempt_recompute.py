"""Preemption by recompute in the engine twin (vLLM V1's only mode), with exact block ids.

The setting (`tests.support.preemption`): 7 blocks of 4 tokens (block 0 reserved: 6 usable);
A and B each have an 8-token prompt (2 blocks). After 5 steps each holds 3 blocks and the pool
is full; in step 6 A needs its 4th block, so the last running request, B, is preempted.
"""

from __future__ import annotations

from tests.support import preemption

from kvscale.twin import request, scheduler

RECOMPUTE = scheduler.PreemptionMode.RECOMPUTE


def test_the_last_running_request_is_preempted_and_its_blocks_freed() -> None:
    twin = preemption.tiny_engine(RECOMPUTE)
    a, b = preemption.two_requests(twin)
    pool = twin.scheduler.kv.gpu_pool
    preemption.run_steps(twin, 5)
    assert a.block_table == [1, 2, 5]
    assert b.block_table == [3, 4, 6]
    assert pool.free_block_ids() == []

    (result,) = preemption.run_steps(twin, 1)

    assert result.preempted == [b]
    assert b.status is request.RequestStatus.PREEMPTED
    assert b.block_table == []
    assert b.num_computed_tokens == 0
    assert b.num_output_tokens == 5  # outputs are kept; their KV is recomputed
    # B's blocks, all full and cached, went to the tail tail-first; A took the first one.
    assert a.block_table == [1, 2, 5, 6]
    assert pool.free_block_ids() == [4, 3]
    assert list(twin.scheduler.waiting) == [b]
    metrics = twin.metrics()
    assert metrics.num_preemptions_total == 1
    assert (metrics.num_requests_running, metrics.num_requests_waiting) == (1, 1)


def test_a_preempted_request_goes_to_the_front_of_the_waiting_queue() -> None:
    twin = preemption.tiny_engine(RECOMPUTE)
    _, b = preemption.two_requests(twin)
    preemption.run_steps(twin, 5)
    late = request.Request("late", num_prompt_tokens=4, max_tokens=1)
    twin.add_request(late, twin.clock)
    preemption.run_steps(twin, 1)
    assert list(twin.scheduler.waiting) == [b, late]


def test_a_recomputed_request_reuses_its_cached_prefix_when_it_resumes() -> None:
    twin = preemption.tiny_engine(RECOMPUTE)
    a, b = preemption.two_requests(twin)
    pool = twin.scheduler.kv.gpu_pool
    preemption.run_steps(twin, 8)  # B cannot come back while A holds 4 blocks
    assert list(twin.scheduler.waiting) == [b]
    (finish_a,) = preemption.run_steps(twin, 1)
    assert finish_a.finished == [a]
    assert pool.free_block_ids() == [4, 3, 6, 5, 2, 1]

    (resume,) = preemption.run_steps(twin, 1)

    # B's first two blocks were still cached (3, 4); its third was evicted when A took
    # block 6. B recomputes 13 - 8 = 5 tokens into two new blocks from the head.
    assert b.block_table == [3, 4, 6, 5]
    assert b.status is request.RequestStatus.RUNNING
    assert resume.num_computed_tokens == 5
    assert resume.num_output_tokens == {"b": 1}
    assert b.num_output_tokens == 6
    # Lookups of preempted requests are not part of vLLM's prefix-cache metrics.
    metrics = twin.metrics()
    assert (metrics.prefix_cache_queries_total, metrics.prefix_cache_hits_total) == (16, 0)
    assert twin.scheduler.preempted_prefix_cache_queries_total == 13
    assert twin.scheduler.preempted_prefix_cache_hits_total == 8


def test_the_gap_of_a_preemption_shows_in_the_inter_token_latency() -> None:
    twin = preemption.tiny_engine(RECOMPUTE)
    _, b = preemption.two_requests(twin)
    preemption.run_steps(twin, 9)
    last_token_before = b.last_token_time
    (resume,) = preemption.run_steps(twin, 1)
    assert last_token_before is not None
    assert resume.itl == [(resume.end - last_token_before, 1)]
    assert resume.first_tokens == []  # not a first token again


def test_everything_finishes_and_every_block_returns() -> None:
    twin = preemption.tiny_engine(RECOMPUTE)
    a, b = preemption.two_requests(twin)
    result = twin.advance_until(float("inf"))
    assert [req.request_id for req in result.finished] == ["a", "b"]
    assert (a.num_output_tokens, b.num_output_tokens) == (9, 10)
    assert twin.metrics().num_free_blocks == 6
    assert twin.metrics().kv_cache_usage == 0.0
    assert twin.next_event_time() is None


def test_a_request_preempts_itself_when_it_is_the_last_one() -> None:
    twin = preemption.tiny_engine(RECOMPUTE, num_gpu_blocks=6)  # 5 usable blocks
    first = request.Request("first", num_prompt_tokens=6, max_tokens=12)  # 2 blocks
    second = request.Request("second", num_prompt_tokens=12, max_tokens=4)  # 3 blocks
    twin.add_request(first, 0.0)
    twin.add_request(second, 0.0)
    preemption.run_steps(twin, 1)
    assert twin.metrics().num_free_blocks == 0
    # Step 2: first's 7th token still fits in its 2 blocks; second needs a 4th block for
    # its 13th token and is the last running request, so it preempts itself.
    (result,) = preemption.run_steps(twin, 1)
    assert result.preempted == [second]
    assert first.block_table == [1, 2]
    assert second.status is request.RequestStatus.PREEMPTED
    assert result.num_output_tokens == {"first": 1}
