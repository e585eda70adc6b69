"""When the engine twin's metrics change: at the end of a step, as vLLM publishes them.

vLLM makes its scheduler stats at the end of `Scheduler.update_from_output()` and the API
server sets the `vllm:*` gauges from them, so while a step runs `/metrics` shows the end of
the previous step: a request admitted by the running step is not running yet, blocks freed by
requests that finished in the previous step are free, and a request that arrived during the
previous step is not waiting yet. `metrics(now)` shows that; `metrics()` shows the twin's state
after every step run so far. Every step here lasts exactly one second.
"""

from __future__ import annotations

import dataclasses

from kvscale.twin import engine, profile, request

ONE_SECOND_STEPS = dataclasses.replace(
    profile.cpu_tiny_llama(), step_model=profile.LinearStepTime(1.0, 0.0, 0.0, 0.0)
)


def tiny_engine() -> engine.EngineTwin:
    config = engine.EngineConfig(
        block_size=4,
        num_gpu_blocks_override=11,  # 10 usable blocks
        max_model_len=40,
        max_num_batched_tokens=64,
        max_num_seqs=4,
        enable_prefix_caching=False,
    )
    return engine.EngineTwin(config, ONE_SECOND_STEPS)


def test_a_step_in_flight_is_shown_only_when_it_ends() -> None:
    twin = tiny_engine()
    twin.add_request(request.Request("a", num_prompt_tokens=8, max_tokens=5), now=0.0)

    twin.advance_until(0.5)  # the first step runs from 0 to 1

    during = twin.metrics(now=0.5)
    assert (during.num_requests_running, during.num_requests_waiting) == (0, 0)
    assert during.kv_cache_usage == 0.0
    assert during.num_steps_total == 0
    # The twin's own state already holds the step's outcome.
    assert twin.metrics().num_requests_running == 1
    assert twin.metrics().num_steps_total == 1

    after = twin.metrics(now=1.0)
    assert (after.num_requests_running, after.num_requests_waiting) == (1, 0)
    assert after.num_free_blocks == 8  # 8 prompt tokens in 2 blocks
    assert after.kv_cache_usage == 1 - 8 / 10
    assert after.num_steps_total == 1


def test_blocks_freed_by_a_finish_show_while_the_next_step_admits() -> None:
    twin = tiny_engine()
    # A holds 7 blocks (28 prompt tokens) and finishes in its first step.
    twin.add_request(request.Request("a", num_prompt_tokens=28, max_tokens=1), now=0.0)
    twin.advance_until(0.5)
    # B arrives while A's step runs: the engine takes it in after that step.
    twin.add_request(request.Request("b", num_prompt_tokens=16, max_tokens=3), now=0.5)

    twin.advance_until(1.5)  # A finished at 1; the step admitting B runs from 1 to 2

    during = twin.metrics(now=1.5)
    assert (during.num_requests_running, during.num_requests_waiting) == (0, 0)
    assert during.num_free_blocks == 10  # A's 7 blocks are free; B's 4 not yet taken
    assert during.num_requests_finished_total == 1
    now_state = twin.metrics()
    assert now_state.num_requests_running == 1
    assert now_state.num_free_blocks == 6

    twin.advance_until(2.0)
    assert twin.metrics(now=2.0).num_free_blocks == 6


def test_a_request_added_between_steps_waits_unseen_until_a_step_ends() -> None:
    twin = tiny_engine()
    twin.add_request(request.Request("a", num_prompt_tokens=8, max_tokens=3), now=0.0)
    twin.advance_until(0.5)
    # B needs 9 of the 10 blocks, A holds 2: B waits until A finishes.
    twin.add_request(request.Request("b", num_prompt_tokens=36, max_tokens=2), now=0.5)
    twin.advance_until(1.5)

    assert twin.metrics(now=1.5).num_requests_waiting == 0  # the end of step 1 did not see B
    twin.advance_until(2.0)
    assert twin.metrics(now=2.0).num_requests_waiting == 1


def test_a_run_of_decode_steps_shows_the_last_step_ended_by_now() -> None:
    twin = tiny_engine()
    twin.add_request(request.Request("a", num_prompt_tokens=4, max_tokens=30), now=0.0)
    twin.add_request(request.Request("b", num_prompt_tokens=4, max_tokens=30), now=0.0)

    twin.advance_until(12.5)  # steps end at 1, 2, ..., 12 and 13 (in flight at 12.5)

    shown = twin.metrics(now=12.5)
    assert shown.num_steps_total == 12
    assert shown.generation_tokens_total == 2 * 12
    # After 12 steps each holds 4 + 11 = 15 slots (4 blocks); the step in flight gives them 16.
    assert shown.num_free_blocks == 2
    assert twin.metrics().num_steps_total == 13
    assert twin.metrics(now=13.0) == twin.metrics()


def test_an_idle_engine_shows_the_end_of_its_last_step() -> None:
    twin = tiny_engine()
    twin.add_request(request.Request("a", num_prompt_tokens=8, max_tokens=2), now=0.0)
    twin.advance_until(10.0)

    shown = twin.metrics(now=10.0)
    assert shown == twin.metrics()
    assert shown.num_requests_finished_total == 1
    assert shown.kv_cache_usage == 0.0
    assert shown.num_steps_total == 2
