"""Admission in the engine twin: FCFS, token budget, max sequences, the full-sequence gate,
arrival times, and no admissions in a step that preempted (vLLM V1's rules)."""

from __future__ import annotations

from collections.abc import Iterable

from kvscale.twin import engine, profile, request

PROFILE = profile.get("h100-sxm", "llama-3-8b")


def tiny_engine(
    num_gpu_blocks: int,
    max_num_batched_tokens: int = 64,
    max_num_seqs: int = 4,
    enable_prefix_caching: bool = True,
    full_sequence_must_fit: bool = True,
) -> engine.EngineTwin:
    config = engine.EngineConfig(
        block_size=4,
        num_gpu_blocks_override=num_gpu_blocks,
        max_model_len=24,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        enable_prefix_caching=enable_prefix_caching,
        full_sequence_must_fit=full_sequence_must_fit,
    )
    return engine.EngineTwin(config, PROFILE)


def next_step(twin: engine.EngineTwin) -> engine.StepResult:
    start = twin.next_event_time()
    assert start is not None
    return twin.step(start)


def ids(requests: Iterable[request.Request]) -> list[str]:
    return [req.request_id for req in requests]


def test_a_head_that_does_not_fit_blocks_later_requests_that_would() -> None:
    twin = tiny_engine(num_gpu_blocks=7)  # 6 usable blocks
    big = request.Request("big", num_prompt_tokens=19, max_tokens=2)  # 5 blocks
    head = request.Request("head", num_prompt_tokens=8, max_tokens=1)  # 2 blocks
    small = request.Request("small", num_prompt_tokens=2, max_tokens=1)  # 1 block
    for req in (big, head, small):
        twin.add_request(req, 0.0)

    first = next_step(twin)

    assert ids(first.first_tokens) == ["big"]
    assert ids(twin.scheduler.waiting) == ["head", "small"]  # small fits, but FCFS
    assert twin.metrics().num_free_blocks == 1
    next_step(twin)  # big finishes
    third = next_step(twin)
    assert ids(third.first_tokens) == ["head", "small"]


def test_the_token_budget_chunks_prefills_and_stops_admission() -> None:
    twin = tiny_engine(num_gpu_blocks=20, max_num_batched_tokens=10)
    reqs = [request.Request(f"r{i}", num_prompt_tokens=8, max_tokens=4) for i in range(3)]
    for req in reqs:
        twin.add_request(req, 0.0)

    first = next_step(twin)

    assert first.num_computed_tokens == 10
    assert [req.num_computed_tokens for req in reqs] == [8, 2, 0]
    assert ids(first.first_tokens) == ["r0"]  # a partial prefill samples nothing
    assert ids(twin.scheduler.waiting) == ["r2"]

    second = next_step(twin)

    # r0 decodes 1, r1 finishes its prompt with 6, r2 gets the 3 tokens left.
    assert second.num_computed_tokens == 10
    assert [req.num_computed_tokens for req in reqs] == [9, 8, 3]
    assert ids(second.first_tokens) == ["r1"]


def test_max_num_seqs_caps_the_running_requests() -> None:
    twin = tiny_engine(num_gpu_blocks=20, max_num_seqs=2)
    for i in range(3):
        twin.add_request(request.Request(f"r{i}", num_prompt_tokens=4, max_tokens=3), 0.0)
    next_step(twin)
    metrics = twin.metrics()
    assert (metrics.num_requests_running, metrics.num_requests_waiting) == (2, 1)
    assert metrics.num_free_blocks > 1  # blocks were not the limit


def prefilled_holder(twin: engine.EngineTwin) -> request.Request:
    """A request holding 4 of the 6 usable blocks after a chunked prefill of 13 tokens."""
    holder = request.Request("holder", num_prompt_tokens=13, max_tokens=3)
    twin.add_request(holder, 0.0)
    while holder.first_token_time is None:
        next_step(twin)
    assert len(holder.block_table) == 4
    return holder


def test_admission_needs_room_for_the_whole_sequence_not_just_a_chunk() -> None:
    twin = tiny_engine(num_gpu_blocks=7, max_num_batched_tokens=5)
    prefilled_holder(twin)
    late = request.Request("late", num_prompt_tokens=12, max_tokens=1)  # 3 blocks
    twin.add_request(late, twin.clock)

    next_step(twin)

    # A 4-token chunk would fit in the 2 free blocks, the 12-token prompt would not.
    assert late.status is request.RequestStatus.WAITING
    assert twin.metrics().num_free_blocks == 2


def test_without_the_full_sequence_gate_a_first_chunk_is_admitted() -> None:
    twin = tiny_engine(num_gpu_blocks=7, max_num_batched_tokens=5, full_sequence_must_fit=False)
    prefilled_holder(twin)
    late = request.Request("late", num_prompt_tokens=12, max_tokens=1)
    twin.add_request(late, twin.clock)

    next_step(twin)

    assert late.status is request.RequestStatus.RUNNING
    assert late.num_computed_tokens == 4
    assert late.block_table == [5]


def test_no_request_is_admitted_in_a_step_that_preempted() -> None:
    # No prefix cache and no full-sequence gate, so a preempted request's first chunk could
    # be admitted again at once; vLLM still admits nobody in a step that preempted.
    twin = tiny_engine(
        num_gpu_blocks=7,
        max_num_batched_tokens=6,
        enable_prefix_caching=False,
        full_sequence_must_fit=False,
    )
    a = request.Request("a", num_prompt_tokens=4, max_tokens=20)
    b = request.Request("b", num_prompt_tokens=16, max_tokens=5)
    twin.add_request(a, 0.0)
    twin.add_request(b, 0.0)
    for _ in range(4):
        next_step(twin)
    assert b.block_table == [2, 4, 5, 6]

    preempting = next_step(twin)

    assert preempting.preempted == [b]
    assert ids(twin.scheduler.running) == ["a"]
    assert twin.scheduler.waiting[0] is b
    # b's first chunk (5 tokens, 2 blocks) would have fitted in the 4 freed blocks.
    assert twin.scheduler.kv.num_blocks_to_allocate(b, 5) <= twin.metrics().num_free_blocks

    following = next_step(twin)

    assert following.preempted == []
    assert ids(twin.scheduler.running) == ["a", "b"]
    assert a.block_table == [1, 3, 6]
    assert b.block_table == [5, 4]


def test_a_request_is_never_scheduled_before_it_arrives() -> None:
    config = engine.EngineConfig(num_gpu_blocks_override=100, max_model_len=1024)
    twin = engine.EngineTwin(config, PROFILE)
    twin.add_request(request.Request("busy", num_prompt_tokens=100, max_tokens=200), 0.0)
    next_step(twin)
    late = request.Request("late", num_prompt_tokens=10, max_tokens=5)
    arrival = twin.clock + 0.05  # several decode steps after the engine's clock
    twin.add_request(late, arrival)

    starts_without_late = []
    while late.first_token_time is None:
        result = next_step(twin)
        if late.first_token_time is None:
            starts_without_late.append(result.start)
        else:
            assert result.start >= arrival
    assert starts_without_late
    assert max(starts_without_late) < arrival
    assert late.first_token_time > arrival


def test_an_idle_engine_starts_at_the_arrival() -> None:
    twin = tiny_engine(num_gpu_blocks=20)
    assert twin.next_event_time() is None
    twin.add_request(request.Request("r", num_prompt_tokens=4, max_tokens=2), 5.0)
    assert twin.next_event_time() == 5.0
    result = twin.advance_until(10.0)
    assert result.start == 5.0
    assert result.num_steps == 2
    assert twin.next_event_time() is None
