"""Preemption by swap in the engine twin: KV blocks to a bounded CPU pool and back.

Same setting as test_preempt_recompute (`tests.support.preemption`): 7 GPU blocks of 4
tokens, A and B with 8-token prompts; in step 6 A needs a block and B, the last running
request, is preempted.
"""

from __future__ import annotations

from tests.support import preemption

from kvscale.twin import request, scheduler

SWAP = scheduler.PreemptionMode.SWAP


def test_swap_out_moves_the_computed_blocks_to_cpu_and_frees_the_gpu_blocks() -> None:
    twin = preemption.tiny_engine(SWAP, num_cpu_blocks=8)
    a, b = preemption.two_requests(twin)
    preemption.run_steps(twin, 5)
    assert b.num_computed_tokens == 12

    (result,) = preemption.run_steps(twin, 1)

    assert result.preempted == [b]
    assert b.status is request.RequestStatus.SWAPPED
    assert b.cpu_blocks == [0, 1, 2]  # 12 computed tokens = 3 blocks
    assert b.num_swapped_tokens == 12
    assert b.block_table == []
    assert a.block_table == [1, 2, 5, 6]
    assert twin.scheduler.kv.gpu_pool.free_block_ids() == [4, 3]
    assert list(twin.scheduler.waiting) == [b]
    assert result.num_swapped_out_blocks == 3
    metrics = twin.metrics()
    assert metrics.num_preemptions_total == 1
    assert metrics.num_requests_swapped == 1
    assert metrics.num_cpu_blocks_used == 3
    assert metrics.num_swap_fallbacks_total == 0


def test_the_step_that_swaps_out_pays_for_the_transfer() -> None:
    twin = preemption.tiny_engine(SWAP, num_cpu_blocks=8)
    preemption.two_requests(twin)
    preemption.run_steps(twin, 5)
    (result,) = preemption.run_steps(twin, 1)
    # The batch is A's decode of its 13th token: 13 attended tokens, KV of 13 tokens.
    expected = preemption.PROFILE.step_time(1, 1, 13, 13) + preemption.PROFILE.swap_time(
        3, preemption.BLOCK_SIZE
    )
    assert result.busy_s == expected
    assert preemption.PROFILE.swap_time(3, preemption.BLOCK_SIZE) > 0


def test_a_swapped_request_resumes_from_its_cpu_copy_without_recomputing() -> None:
    twin = preemption.tiny_engine(SWAP, num_cpu_blocks=8)
    a, b = preemption.two_requests(twin)
    preemption.run_steps(twin, 9)
    assert a.status is request.RequestStatus.FINISHED
    assert b.status is request.RequestStatus.SWAPPED

    (resume,) = preemption.run_steps(twin, 1)

    # Blocks 3 and 4 still hold B's first 8 tokens on the GPU (prefix hit); its third block
    # was evicted, so it is loaded from the CPU copy into a new block, plus one for token 13.
    assert b.block_table == [3, 4, 6, 5]
    assert resume.num_swapped_in_blocks == 1
    assert resume.num_computed_tokens == 1  # just the decode: nothing recomputed
    assert b.num_computed_tokens == 13
    assert b.num_output_tokens == 6
    assert b.cpu_blocks == []
    assert twin.metrics().num_cpu_blocks_used == 0
    expected = preemption.PROFILE.step_time(1, 1, 13, 13) + preemption.PROFILE.swap_time(
        1, preemption.BLOCK_SIZE
    )
    assert resume.busy_s == expected


def test_without_prefix_caching_every_swapped_block_is_loaded_back() -> None:
    twin = preemption.tiny_engine(SWAP, num_cpu_blocks=8, enable_prefix_caching=False)
    _, b = preemption.two_requests(twin)
    preemption.run_steps(twin, 9)
    (resume,) = preemption.run_steps(twin, 1)
    assert resume.num_swapped_in_blocks == 3
    assert resume.num_computed_tokens == 1
    assert len(b.block_table) == 4


def test_a_full_cpu_pool_falls_back_to_recompute() -> None:
    twin = preemption.tiny_engine(SWAP, num_cpu_blocks=2)  # B needs 3
    _, b = preemption.two_requests(twin)
    preemption.run_steps(twin, 5)

    (result,) = preemption.run_steps(twin, 1)

    assert result.preempted == [b]
    assert result.num_swap_fallbacks == 1
    assert result.num_swapped_out_blocks == 0
    assert b.status is request.RequestStatus.PREEMPTED
    assert b.cpu_blocks == []
    assert b.num_computed_tokens == 0
    metrics = twin.metrics()
    assert metrics.num_swap_fallbacks_total == 1
    assert metrics.num_cpu_blocks_used == 0
    assert metrics.num_requests_swapped == 0


def test_swap_and_recompute_both_finish_everything_without_leaks() -> None:
    for num_cpu_blocks in (2, 8):
        twin = preemption.tiny_engine(SWAP, num_cpu_blocks=num_cpu_blocks)
        a, b = preemption.two_requests(twin)
        twin.advance_until(float("inf"))
        assert (a.num_output_tokens, b.num_output_tokens) == (9, 10)
        metrics = twin.metrics()
        assert metrics.num_free_blocks == 6
        assert metrics.num_cpu_blocks_used == 0


def test_aborting_a_swapped_request_frees_its_cpu_blocks() -> None:
    twin = preemption.tiny_engine(SWAP, num_cpu_blocks=8)
    _, b = preemption.two_requests(twin)
    preemption.run_steps(twin, 6)
    assert twin.metrics().num_cpu_blocks_used == 3
    twin.abort("b")
    assert b.status is request.RequestStatus.ABORTED
    assert twin.metrics().num_cpu_blocks_used == 0
    assert twin.metrics().num_requests_waiting == 0
