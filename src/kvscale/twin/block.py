"""KV-cache block pools: the GPU pool with its free-block queue and prefix cache, and a CPU pool.

The GPU pool follows vLLM V1's `BlockPool` (vllm/v1/core/block_pool.py, v0.32):

- Block ids run 0..N-1. Block 0 is the reserved *null block*: taken out of the free queue at
  start and never handed out, so usage is `1 - free / (N - 1)` like vLLM's `get_usage()`.
- Every block has a `ref_cnt` (how many requests' block tables hold it) and, once it is full
  and prefix caching is on, a block hash. A freed block keeps its hash: it stays findable in
  the prefix cache until it is reused for something else (evicted).
- The free-block queue is a doubly linked list, because a prefix-cache hit takes a free cached
  block out of the *middle* of the queue, which must be O(1). The head is evicted first.
- Freeing puts blocks with no hash at the head (nothing to keep them for) and cached blocks
  at the tail, each group in the order given. The caller passes a request's blocks in reverse
  (`cache.KVCacheManager.free`), so among one request's cached blocks the last one, whose hash
  depends on the longest prefix and is the least likely to be shared, is evicted first; across
  requests the order is least recently freed first (LRU).

Mechanism apart from policy: `allocate` returns None when it runs short; the scheduler decides
whom to preempt. Links are parallel lists of ints instead of objects, so a step costs no
allocations per block.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Iterable, Sequence

NULL_BLOCK_ID = 0
_NONE = -1  # link value of a block that is not in the free queue


class BlockPool:
    """The GPU KV-cache block pool: ids, reference counts, hashes, the free queue, the cache."""

    def __init__(self, num_blocks: int, enable_caching: bool) -> None:
        if num_blocks < 2:
            raise ValueError(
                f"num_gpu_blocks = {num_blocks}, must be at least 2 "
                "(block 0 is the reserved null block)"
            )
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        # Two sentinels after the real blocks: the head and the tail of the free queue.
        self._head = num_blocks
        self._tail = num_blocks + 1
        # At start the queue holds every block in id order.
        self._next = [*range(1, num_blocks), self._tail, 0, _NONE]
        self._prev = [self._head, *range(0, num_blocks - 1), _NONE, num_blocks - 1]
        self._num_free = num_blocks
        self.ref_cnt = [0] * num_blocks
        self.block_hash: list[Hashable | None] = [None] * num_blocks
        # Like vLLM, identical content may be cached in more than one block (block tables are
        # append-only, so a block is never swapped for an equal one); a lookup takes the first.
        self._hash_to_blocks: dict[Hashable, list[int]] = {}
        self._pop_front(1)  # the null block; its ref_cnt is never maintained

    @property
    def num_free_blocks(self) -> int:
        """Blocks in the free queue, cached or not (the null block is never free)."""
        return self._num_free

    @property
    def usage(self) -> float:
        """KV-cache usage as a 0-1 ratio, as vLLM computes `vllm:kv_cache_usage_perc`."""
        return 1.0 - self._num_free / (self.num_blocks - 1)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks that hold a hash (in use or free), i.e. findable by a prefix lookup."""
        return sum(len(blocks) for blocks in self._hash_to_blocks.values())

    def allocate(self, num_blocks: int) -> list[int] | None:
        """Take `num_blocks` from the head of the free queue, evicting their hashes.

        Returns None, changing nothing, when fewer blocks are free.
        """
        if num_blocks < 0:
            raise ValueError(f"num_blocks = {num_blocks}, must be >= 0")
        if num_blocks > self._num_free:
            return None
        blocks = self._pop_front(num_blocks)
        for block in blocks:
            if self.block_hash[block] is not None:
                self._evict(block)
            self.ref_cnt[block] = 1
        return blocks

    def touch(self, blocks: Iterable[int]) -> None:
        """Add a reference to cached blocks found by a prefix lookup.

        A block nobody holds is taken out of the free queue (from the middle, O(1)).
        """
        for block in blocks:
            if self.ref_cnt[block] == 0:
                self._unlink(block)
            self.ref_cnt[block] += 1

    def free(self, ordered_blocks: Iterable[int]) -> None:
        """Drop one reference from each block, in eviction order (first evicted first).

        Blocks nobody holds any more go back to the free queue: without a hash to the head,
        with a hash to the tail (they stay in the prefix cache until evicted).
        """
        evict_first: list[int] = []
        evict_last: list[int] = []
        for block in ordered_blocks:
            if not 0 < block < self.num_blocks or self.ref_cnt[block] <= 0:
                raise ValueError(f"block {block} is not allocated; cannot free it")
            self.ref_cnt[block] -= 1
            if self.ref_cnt[block] == 0:
                if self.block_hash[block] is None or not self.enable_caching:
                    evict_first.append(block)
                else:
                    evict_last.append(block)
        self._push_front(evict_first)
        self._push_back(evict_last)

    def cache(self, block: int, block_hash: Hashable) -> None:
        """Record that an allocated, now full, block holds the content named by `block_hash`."""
        if not 0 < block < self.num_blocks or self.ref_cnt[block] <= 0:
            raise ValueError(f"block {block} is not allocated; cannot cache it")
        if self.block_hash[block] is not None:
            raise ValueError(f"block {block} is already cached")
        self.block_hash[block] = block_hash
        self._hash_to_blocks.setdefault(block_hash, []).append(block)

    def get_cached_block(self, block_hash: Hashable) -> int | None:
        """The first block cached under `block_hash`, in use or free; None on a miss."""
        blocks = self._hash_to_blocks.get(block_hash)
        return blocks[0] if blocks else None

    def free_block_ids(self) -> list[int]:
        """The free queue from head (evicted first) to tail. O(free blocks): for tests."""
        ids: list[int] = []
        block = self._next[self._head]
        while block != self._tail:
            ids.append(block)
            block = self._next[block]
        return ids

    def _evict(self, block: int) -> None:
        block_hash = self.block_hash[block]
        assert block_hash is not None
        blocks = self._hash_to_blocks[block_hash]
        blocks.remove(block)
        if not blocks:
            del self._hash_to_blocks[block_hash]
        self.block_hash[block] = None

    def _pop_front(self, count: int) -> list[int]:
        nxt, prv = self._next, self._prev
        blocks: list[int] = []
        block = nxt[self._head]
        for _ in range(count):
            blocks.append(block)
            following = nxt[block]
            nxt[block] = prv[block] = _NONE
            block = following
        nxt[self._head] = block
        prv[block] = self._head
        self._num_free -= count
        return blocks

    def _unlink(self, block: int) -> None:
        nxt, prv = self._next, self._prev
        before, after = prv[block], nxt[block]
        if before == _NONE:
            raise ValueError(f"block {block} is not in the free queue")
        nxt[before] = after
        prv[after] = before
        nxt[block] = prv[block] = _NONE
        self._num_free -= 1

    def _push_front(self, blocks: Sequence[int]) -> None:
        if not blocks:
            return
        nxt, prv = self._next, self._prev
        first = nxt[self._head]
        before = self._head
        for block in blocks:
            nxt[before] = block
            prv[block] = before
            before = block
        nxt[before] = first
        prv[first] = before
        self._num_free += len(blocks)

    def _push_back(self, blocks: Sequence[int]) -> None:
        if not blocks:
            return
        nxt, prv = self._next, self._prev
        before = prv[self._tail]
        for block in blocks:
            nxt[before] = block
            prv[block] = before
            before = block
        nxt[before] = self._tail
        prv[self._tail] = before
        self._num_free += len(blocks)


class CpuBlockPool:
    """A bounded pool of CPU block slots that swapped-out KV blocks are copied into.

    No prefix cache and no ordering subtleties: vLLM V1's CPU offloading keeps its own store,
    and here only how many blocks it holds matters. Ids are handed out first-in first-out.
    """

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 0:
            raise ValueError(f"num_cpu_blocks = {num_blocks}, must be >= 0")
        self.num_blocks = num_blocks
        self._free: collections.deque[int] = collections.deque(range(num_blocks))
        self._used = [False] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def allocate(self, num_blocks: int) -> list[int] | None:
        """Take `num_blocks` slots; None, changing nothing, when fewer are free."""
        if num_blocks < 0:
            raise ValueError(f"num_blocks = {num_blocks}, must be >= 0")
        if num_blocks > len(self._free):
            return None
        blocks = [self._free.popleft() for _ in range(num_blocks)]
        for block in blocks:
            self._used[block] = True
        return blocks

    def free(self, blocks: Iterable[int]) -> None:
        for block in blocks:
            if not 0 <= block < self.num_blocks or not self._used[block]:
                raise ValueError(f"CPU block {block} is not allocated; cannot free it")
            self._used[block] = False
            self._free.append(block)
