"""Prefix caching in the engine twin: shared blocks, hits from the free queue, the metrics."""

from __future__ import annotations

from kvscale.twin import engine, profile, request

PROFILE = profile.get("h100-sxm", "llama-3-8b")
SHARED = ("system-0", "system-1")  # hashes of two full blocks of a shared prompt prefix


def tiny_engine(enable_prefix_caching: bool = True) -> engine.EngineTwin:
    config = engine.EngineConfig(
        block_size=4,
        num_gpu_blocks_override=10,  # 9 usable blocks
        max_model_len=32,
        max_num_batched_tokens=64,
        max_num_seqs=4,
        enable_prefix_caching=enable_prefix_caching,
    )
    return engine.EngineTwin(config, PROFILE)


def next_step(twin: engine.EngineTwin) -> engine.StepResult:
    start = twin.next_event_time()
    assert start is not None
    return twin.step(start)


def test_a_second_request_shares_the_cached_prefix_blocks_of_a_running_one() -> None:
    twin = tiny_engine()
    pool = twin.scheduler.kv.gpu_pool
    a = request.Request("a", num_prompt_tokens=10, max_tokens=3, prompt_block_hashes=SHARED)
    twin.add_request(a, 0.0)
    next_step(twin)
    assert a.block_table == [1, 2, 3]
    assert (pool.get_cached_block("system-0"), pool.get_cached_block("system-1")) == (1, 2)

    b = request.Request("b", num_prompt_tokens=10, max_tokens=3, prompt_block_hashes=SHARED)
    twin.add_request(b, twin.clock)
    result = next_step(twin)

    assert b.block_table == [1, 2, 4]
    assert (pool.ref_cnt[1], pool.ref_cnt[2], pool.ref_cnt[3], pool.ref_cnt[4]) == (2, 2, 1, 1)
    assert result.num_computed_tokens == 1 + 2  # a's decode and b's 2 uncached tokens
    metrics = twin.metrics()
    assert metrics.prefix_cache_queries_total == 20
    assert metrics.prefix_cache_hits_total == 8
    # Shared blocks count once: 4 distinct blocks in use.
    assert metrics.num_free_blocks == 5


def test_a_lookup_never_covers_the_last_prompt_token() -> None:
    twin = tiny_engine()
    a = request.Request("a", num_prompt_tokens=8, max_tokens=1, prompt_block_hashes=SHARED)
    twin.add_request(a, 0.0)
    next_step(twin)
    b = request.Request("b", num_prompt_tokens=8, max_tokens=1, prompt_block_hashes=SHARED)
    twin.add_request(b, twin.clock)
    result = next_step(twin)
    # Both blocks are cached, but the 8th token must be computed to produce logits.
    assert twin.metrics().prefix_cache_hits_total == 4
    assert result.num_computed_tokens == 4


def test_a_hit_on_a_freed_block_takes_it_out_of_the_middle_of_the_free_queue() -> None:
    twin = tiny_engine()
    pool = twin.scheduler.kv.gpu_pool
    a = request.Request("a", num_prompt_tokens=10, max_tokens=1, prompt_block_hashes=SHARED)
    twin.add_request(a, 0.0)
    (done,) = next_step(twin).finished
    assert done is a
    # The partial block 3 goes to the head; the cached 2 and 1 to the tail.
    assert pool.free_block_ids() == [3, 4, 5, 6, 7, 8, 9, 2, 1]

    b = request.Request("b", num_prompt_tokens=10, max_tokens=2, prompt_block_hashes=SHARED)
    twin.add_request(b, twin.clock)
    next_step(twin)

    assert b.block_table == [1, 2, 3]
    assert pool.free_block_ids() == [4, 5, 6, 7, 8, 9]


def test_different_prefixes_do_not_share() -> None:
    twin = tiny_engine()
    a = request.Request("a", 10, 2, prompt_block_hashes=SHARED)
    b = request.Request("b", 10, 2, prompt_block_hashes=("other-0", "other-1"))
    twin.add_request(a, 0.0)
    twin.add_request(b, 0.0)
    next_step(twin)
    assert set(a.block_table).isdisjoint(b.block_table)
    assert twin.metrics().prefix_cache_hits_total == 0


def test_a_shared_first_block_with_a_different_second_block_shares_only_the_first() -> None:
    twin = tiny_engine()
    a = request.Request("a", 10, 3, prompt_block_hashes=SHARED)
    twin.add_request(a, 0.0)
    next_step(twin)
    b = request.Request("b", 10, 2, prompt_block_hashes=("system-0", "other-1"))
    twin.add_request(b, twin.clock)
    next_step(twin)
    assert b.block_table[0] == a.block_table[0]
    assert b.block_table[1] != a.block_table[1]
    assert twin.metrics().prefix_cache_hits_total == 4


def test_blocks_filled_by_output_tokens_are_cached_under_private_hashes() -> None:
    twin = tiny_engine()
    pool = twin.scheduler.kv.gpu_pool
    a = request.Request("a", num_prompt_tokens=10, max_tokens=5)
    twin.add_request(a, 0.0)
    for _ in range(2):
        next_step(twin)
    assert pool.get_cached_block(("a", 2)) is None  # 11 tokens scheduled: block 2 not full
    next_step(twin)
    assert pool.get_cached_block(("a", 2)) == a.block_table[2]


def test_cached_blocks_are_evicted_least_recently_freed_first() -> None:
    twin = tiny_engine()
    pool = twin.scheduler.kv.gpu_pool
    first = request.Request("first", 8, 1, prompt_block_hashes=("f0", "f1"))
    twin.add_request(first, 0.0)
    next_step(twin)
    second = request.Request("second", 8, 1, prompt_block_hashes=("s0", "s1"))
    twin.add_request(second, twin.clock)
    next_step(twin)
    assert (first.block_table, second.block_table) == ([], [])  # both finished
    assert pool.free_block_ids() == [5, 6, 7, 8, 9, 2, 1, 4, 3]

    big = request.Request("big", num_prompt_tokens=27, max_tokens=2)  # 7 blocks
    twin.add_request(big, twin.clock)
    next_step(twin)

    assert big.block_table == [5, 6, 7, 8, 9, 2, 1]
    assert pool.get_cached_block("f0") is None
    assert pool.get_cached_block("f1") is None
    assert (pool.get_cached_block("s0"), pool.get_cached_block("s1")) == (3, 4)


def test_without_prefix_caching_nothing_is_shared_or_counted() -> None:
    twin = tiny_engine(enable_prefix_caching=False)
    a = request.Request("a", 10, 3, prompt_block_hashes=SHARED)
    b = request.Request("b", 10, 3, prompt_block_hashes=SHARED)
    twin.add_request(a, 0.0)
    twin.add_request(b, 0.0)
    next_step(twin)
    assert set(a.block_table).isdisjoint(b.block_table)
    metrics = twin.metrics()
    assert (metrics.prefix_cache_queries_total, metrics.prefix_cache_hits_total) == (0, 0)
    assert twin.scheduler.kv.gpu_pool.num_cached_blocks == 0
