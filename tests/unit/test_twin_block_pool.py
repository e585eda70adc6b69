"""The twin's GPU block pool: exact block ids and free-queue order, like vLLM V1's BlockPool."""

from __future__ import annotations

import pytest

from kvscale.twin import block


def test_null_block_is_reserved_and_the_queue_starts_in_id_order() -> None:
    pool = block.BlockPool(5, enable_caching=True)
    assert pool.free_block_ids() == [1, 2, 3, 4]
    assert pool.num_free_blocks == 4
    assert pool.usage == 0.0


def test_allocate_takes_from_the_head_and_counts_references() -> None:
    pool = block.BlockPool(5, enable_caching=True)
    assert pool.allocate(2) == [1, 2]
    assert pool.free_block_ids() == [3, 4]
    assert [pool.ref_cnt[b] for b in (1, 2, 3)] == [1, 1, 0]
    assert pool.usage == 0.5  # 2 of the 4 usable blocks


def test_allocate_returns_none_and_changes_nothing_when_short() -> None:
    pool = block.BlockPool(4, enable_caching=True)
    assert pool.allocate(2) == [1, 2]
    assert pool.allocate(2) is None
    assert pool.free_block_ids() == [3]
    assert pool.allocate(0) == []


def test_the_null_block_is_never_handed_out() -> None:
    pool = block.BlockPool(6, enable_caching=False)
    first = pool.allocate(5)
    assert first == [1, 2, 3, 4, 5]
    pool.free(reversed(first))
    second = pool.allocate(5)
    assert second is not None
    assert block.NULL_BLOCK_ID not in second
    assert pool.allocate(1) is None


def test_free_puts_uncached_blocks_at_the_head_in_the_given_order() -> None:
    pool = block.BlockPool(6, enable_caching=True)
    pool.allocate(3)  # [1, 2, 3]
    pool.free([3, 2, 1])  # a request's blocks, tail first
    assert pool.free_block_ids() == [3, 2, 1, 4, 5]


def test_free_puts_cached_blocks_at_the_tail_so_the_last_block_is_evicted_first() -> None:
    pool = block.BlockPool(6, enable_caching=True)
    pool.allocate(3)  # [1, 2, 3]: 1 and 2 full, 3 partial
    pool.cache(1, "h0")
    pool.cache(2, "h1")
    pool.free([3, 2, 1])
    # The partial block goes to the head; the cached ones to the tail, tail block first.
    assert pool.free_block_ids() == [3, 4, 5, 2, 1]


def test_without_prefix_caching_every_freed_block_goes_to_the_head() -> None:
    pool = block.BlockPool(6, enable_caching=False)
    pool.allocate(3)
    pool.cache(1, "h0")  # hashes are ignored for ordering when caching is off
    pool.free([3, 2, 1])
    assert pool.free_block_ids() == [3, 2, 1, 4, 5]


def test_touching_a_free_cached_block_takes_it_out_of_the_middle() -> None:
    pool = block.BlockPool(6, enable_caching=True)
    pool.allocate(2)
    pool.cache(1, "h0")
    pool.cache(2, "h1")
    pool.free([2, 1])
    assert pool.free_block_ids() == [3, 4, 5, 2, 1]
    assert pool.get_cached_block("h1") == 2
    pool.touch([2])
    assert pool.free_block_ids() == [3, 4, 5, 1]
    assert pool.ref_cnt[2] == 1
    pool.touch([2])  # a second request sharing it: no queue change
    assert pool.ref_cnt[2] == 2
    assert pool.num_free_blocks == 4


def test_reusing_a_free_cached_block_evicts_its_hash() -> None:
    pool = block.BlockPool(4, enable_caching=True)
    pool.allocate(1)
    pool.cache(1, "h0")
    pool.free([1])
    assert pool.free_block_ids() == [2, 3, 1]
    assert pool.allocate(3) == [2, 3, 1]
    assert pool.get_cached_block("h0") is None
    assert pool.block_hash[1] is None
    assert pool.num_cached_blocks == 0


def test_lru_order_across_requests() -> None:
    pool = block.BlockPool(6, enable_caching=True)
    first = pool.allocate(2)
    second = pool.allocate(2)
    assert first == [1, 2]
    assert second == [3, 4]
    for b, h in zip([1, 2, 3, 4], ["a0", "a1", "b0", "b1"], strict=True):
        pool.cache(b, h)
    pool.free(reversed(second))  # freed first: evicted first
    pool.free(reversed(first))
    assert pool.free_block_ids() == [5, 4, 3, 2, 1]
    assert pool.allocate(2) == [5, 4]
    assert pool.get_cached_block("b1") is None
    assert pool.get_cached_block("b0") == 3


def test_a_shared_block_returns_to_the_queue_only_with_its_last_reference() -> None:
    pool = block.BlockPool(4, enable_caching=True)
    pool.allocate(1)
    pool.cache(1, "h0")
    pool.touch([1])
    pool.free([1])
    assert pool.free_block_ids() == [2, 3]
    pool.free([1])
    assert pool.free_block_ids() == [2, 3, 1]


def test_duplicate_content_is_found_until_the_last_copy_is_evicted() -> None:
    pool = block.BlockPool(5, enable_caching=True)
    pool.allocate(2)
    pool.cache(1, "same")
    pool.cache(2, "same")
    assert pool.get_cached_block("same") == 1
    pool.free([1])
    assert pool.allocate(3) == [3, 4, 1]  # evicts block 1's copy
    assert pool.get_cached_block("same") == 2


@pytest.mark.parametrize("bad", [0, 5, -1])
def test_freeing_a_block_that_is_not_allocated_is_refused(bad: int) -> None:
    pool = block.BlockPool(5, enable_caching=True)
    pool.allocate(1)
    with pytest.raises(ValueError, match=f"block {bad} is not allocated"):
        pool.free([bad])


def test_caching_an_unallocated_or_cached_block_is_refused() -> None:
    pool = block.BlockPool(4, enable_caching=True)
    with pytest.raises(ValueError, match="block 2 is not allocated"):
        pool.cache(2, "h")
    pool.allocate(1)
    pool.cache(1, "h")
    with pytest.raises(ValueError, match="block 1 is already cached"):
        pool.cache(1, "other")


def test_a_pool_needs_a_usable_block() -> None:
    with pytest.raises(ValueError, match="num_gpu_blocks = 1, must be at least 2"):
        block.BlockPool(1, enable_caching=True)
    with pytest.raises(ValueError, match="num_blocks = -1"):
        block.BlockPool(3, enable_caching=True).allocate(-1)


def test_cpu_pool_hands_out_slots_first_in_first_out() -> None:
    pool = block.CpuBlockPool(4)
    assert pool.allocate(3) == [0, 1, 2]
    assert pool.allocate(2) is None
    assert pool.num_free_blocks == 1
    pool.free([1, 0])
    assert pool.allocate(3) == [3, 1, 0]
    with pytest.raises(ValueError, match="CPU block 3 is not allocated"):
        pool.free([3, 3])
    with pytest.raises(ValueError, match="num_cpu_blocks = -1"):
        block.CpuBlockPool(-1)
