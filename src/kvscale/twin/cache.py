"""Per-request block tables on top of the block pools: prefix lookup, slot allocation, swap.

Follows vLLM V1's `KVCacheManager` for one full-attention KV-cache group
(vllm/v1/core/kv_cache_manager.py and single_type_kv_cache_manager.py, v0.32):

- A prefix lookup walks the request's block hashes and stops at the first miss. It never
  covers the last token (at most `num_tokens - 1` tokens), so at least one token is computed
  and produces logits.
- `allocate_slots` gives a request slots for its computed tokens plus the new ones, counting
  free cached blocks that a hit takes out of the free queue as allocations, and returns None,
  changing nothing, when the pool is short. Full blocks are cached (hashed) as soon as their
  tokens are scheduled.
- Freeing hands a request's blocks to the pool in reverse, so its tail is evicted first.
- Swap (not in vLLM V1, whose nearest form is KV offloading to CPU) copies a request's
  computed blocks into a bounded CPU pool and frees its GPU blocks; resuming reuses whatever
  prefix is still cached on the GPU and loads the rest from the CPU copy.

Mechanism only: whom to preempt and when to swap is the scheduler's call.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvscale.twin import block, request


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    """Block tables of running requests, over one GPU block pool and one CPU block pool."""

    def __init__(
        self,
        gpu_pool: block.BlockPool,
        cpu_pool: block.CpuBlockPool,
        block_size: int,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size = {block_size}, must be >= 1")
        self.gpu_pool = gpu_pool
        self.cpu_pool = cpu_pool
        self.block_size = block_size

    @property
    def enable_caching(self) -> bool:
        return self.gpu_pool.enable_caching

    def lookup(self, req: request.Request) -> list[int]:
        """The cached GPU blocks holding the longest prefix of `req` (never its last token)."""
        if not self.enable_caching:
            return []
        pool = self.gpu_pool
        hits: list[int] = []
        for index in range((req.num_tokens - 1) // self.block_size):
            cached = pool.get_cached_block(req.block_hash(index))
            if cached is None:
                break
            hits.append(cached)
        return hits

    def num_blocks_to_allocate(
        self, req: request.Request, num_slots: int, hits: Sequence[int] = ()
    ) -> int:
        """Free blocks that giving `req` `num_slots` token slots would consume.

        New blocks beyond its table and the hits, plus hits sitting in the free queue (taking
        them out of the queue uses up free blocks too).
        """
        ref_cnt = self.gpu_pool.ref_cnt
        num_new = max(cdiv(num_slots, self.block_size) - len(req.block_table) - len(hits), 0)
        return num_new + sum(1 for hit in hits if ref_cnt[hit] == 0)

    def allocate_slots(
        self,
        req: request.Request,
        num_new_tokens: int,
        hits: Sequence[int] = (),
        num_external_tokens: int = 0,
        full_sequence_must_fit: bool = False,
    ) -> list[int] | None:
        """Give `req` slots for its computed tokens, the hits, external tokens and new tokens.

        `hits` are prefix-cache blocks from `lookup` (only for a request that holds no blocks),
        `num_external_tokens` tokens loaded from elsewhere (the CPU copy of a swapped request)
        right after the hits. With `full_sequence_must_fit` (vLLM's admission gate,
        `scheduler_reserve_full_isl`, on by default) the request's whole current sequence must
        fit, not only this step's chunk. Returns the newly allocated blocks, or None.
        """
        if hits and req.block_table:
            raise ValueError(f"request {req.request_id}: prefix hits for a request with blocks")
        pool = self.gpu_pool
        num_computed = req.num_computed_tokens + len(hits) * self.block_size + num_external_tokens
        num_slots = num_computed + num_new_tokens
        free = pool.num_free_blocks
        if full_sequence_must_fit and self.num_blocks_to_allocate(req, req.num_tokens, hits) > free:
            return None
        if self.num_blocks_to_allocate(req, num_slots, hits) > free:
            return None
        if hits:
            pool.touch(hits)
            req.block_table.extend(hits)
            req.num_cached_blocks = len(hits)
        num_new_blocks = max(cdiv(num_slots, self.block_size) - len(req.block_table), 0)
        new_blocks = pool.allocate(num_new_blocks)
        assert new_blocks is not None  # checked above
        req.block_table.extend(new_blocks)
        self.cache_full_blocks(req, min(num_slots, req.num_tokens))
        return new_blocks

    def cache_full_blocks(self, req: request.Request, num_tokens: int) -> None:
        """Hash the blocks of `req` that the first `num_tokens` tokens fill completely."""
        if not self.enable_caching:
            return
        num_full = num_tokens // self.block_size
        if num_full <= req.num_cached_blocks:
            return
        pool, table = self.gpu_pool, req.block_table
        for index in range(req.num_cached_blocks, num_full):
            pool.cache(table[index], req.block_hash(index))
        req.num_cached_blocks = num_full

    def free(self, req: request.Request) -> None:
        """Release the GPU blocks of `req`, tail first (their hashes stay cached)."""
        self.gpu_pool.free(reversed(req.block_table))
        req.block_table.clear()
        req.num_cached_blocks = 0

    def swap_out(self, req: request.Request) -> list[int] | None:
        """Copy the computed blocks of `req` to the CPU pool and free its GPU blocks.

        Returns the CPU blocks, or None, changing nothing, when the CPU pool is short.
        """
        num_blocks = cdiv(req.num_computed_tokens, self.block_size)
        cpu_blocks = self.cpu_pool.allocate(num_blocks)
        if cpu_blocks is None:
            return None
        req.cpu_blocks = cpu_blocks
        req.num_swapped_tokens = req.num_computed_tokens
        self.free(req)
        return cpu_blocks

    def release_cpu_blocks(self, req: request.Request) -> None:
        """Drop the CPU copy of `req` (after it was loaded back, or when it is aborted)."""
        self.cpu_pool.free(req.cpu_blocks)
        req.cpu_blocks = []
        req.num_swapped_tokens = 0
