"""Bad engine configs and bad requests get a clear error naming the field."""

from __future__ import annotations

import re

import pytest

from kvscale.twin import engine, profile, request, scheduler

PROFILE = profile.get("h100-sxm", "llama-3-8b")


def tiny_engine() -> engine.EngineTwin:
    config = engine.EngineConfig(
        block_size=4,
        num_gpu_blocks_override=10,
        max_model_len=32,
        max_num_batched_tokens=64,
        max_num_seqs=4,
    )
    return engine.EngineTwin(config, PROFILE)


def test_vllm_serve_defaults_depend_on_the_gpu() -> None:
    h100 = engine.EngineConfig().resolve(PROFILE)
    a100 = engine.EngineConfig().resolve(profile.get("a100-80gb", "llama-3-8b"))
    assert (h100.max_num_batched_tokens, h100.max_num_seqs) == (8192, 1024)
    assert (a100.max_num_batched_tokens, a100.max_num_seqs) == (2048, 256)
    assert h100.max_model_len == 8192
    assert h100.num_gpu_blocks == PROFILE.num_gpu_blocks(16, 0.9)


def test_swap_space_becomes_cpu_blocks() -> None:
    config = engine.EngineConfig(
        preemption_mode=scheduler.PreemptionMode.SWAP, swap_space_bytes=4 * 1024**3
    )
    resolved = config.resolve(PROFILE)
    assert resolved.num_cpu_blocks == 4 * 1024**3 // PROFILE.block_bytes(16)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_model_len": 100}, "max_model_len = 100, must be <= the KV cache's capacity of 36"),
        ({"max_num_seqs": 0}, "max_num_seqs = 0, must be an integer >= 1"),
        ({"max_num_batched_tokens": 2, "max_num_seqs": 4}, "max_num_batched_tokens = 2"),
        ({"num_gpu_blocks_override": 1}, "num_gpu_blocks = 1, must be >= 2"),
        ({"block_size": 0}, "block_size = 0, must be an integer >= 1"),
    ],
)
def test_bad_engine_configs_are_refused(changes: dict[str, int], message: str) -> None:
    settings: dict[str, int] = {
        "block_size": 4,
        "num_gpu_blocks_override": 10,
        "max_model_len": 32,
        "max_num_batched_tokens": 64,
        "max_num_seqs": 4,
    }
    settings.update(changes)
    with pytest.raises(ValueError, match=message):
        engine.EngineTwin(engine.EngineConfig(**settings), PROFILE)  # type: ignore[arg-type]


def test_swap_without_space_is_refused() -> None:
    with pytest.raises(ValueError, match="swap_space_bytes = 0, must be > 0"):
        engine.EngineConfig(preemption_mode=scheduler.PreemptionMode.SWAP)


def test_a_model_len_beyond_the_cache_is_refused_like_vllm_does() -> None:
    with pytest.raises(ValueError, match="max_model_len = 8192"):
        engine.EngineTwin(engine.EngineConfig(num_gpu_blocks_override=100), PROFILE)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (request.Request("r", 30, 10), "num_prompt_tokens \\+ max_tokens = 40, must be <= "),
        (request.Request("r", 0, 1), "num_prompt_tokens = 0, must be an integer >= 1"),
        (request.Request("r", 4, 0), "max_tokens = 0, must be an integer >= 1"),
        (request.Request("", 4, 1), "request_id = '', must be a non-empty string"),
        (request.Request("r", 7, 1, ("a", "b")), "2 prompt_block_hashes, must be <= the 1"),
    ],
)
def test_bad_requests_are_refused(req: request.Request, message: str) -> None:
    twin = tiny_engine()
    with pytest.raises(ValueError, match=message):
        twin.add_request(req, 0.0)
    assert twin.metrics().num_requests_waiting == 0


def test_request_ids_are_never_reused() -> None:
    twin = tiny_engine()
    twin.add_request(request.Request("r", 4, 1), 0.0)
    twin.advance_until(float("inf"))
    with pytest.raises(ValueError, match="request_id = 'r' was already used"):
        twin.add_request(request.Request("r", 4, 1), 1.0)


def test_time_does_not_go_backwards() -> None:
    twin = tiny_engine()
    twin.add_request(request.Request("a", 4, 1), 2.0)
    with pytest.raises(
        ValueError, match=re.escape("now = 1.0, must be >= the previous arrival time 2.0")
    ):
        twin.add_request(request.Request("b", 4, 1), 1.0)
    with pytest.raises(ValueError, match="now = nan, must be a finite time"):
        twin.add_request(request.Request("c", 4, 1), float("nan"))


def test_aborting_an_unknown_request_is_refused() -> None:
    twin = tiny_engine()
    with pytest.raises(ValueError, match="request_id = 'nope' is not a live request"):
        twin.abort("nope")


def test_aborting_a_running_request_frees_its_blocks() -> None:
    twin = tiny_engine()
    req = request.Request("r", 10, 5)
    twin.add_request(req, 0.0)
    twin.step(0.0)
    assert twin.metrics().num_free_blocks == 6
    assert twin.abort("r") is req
    assert twin.metrics().num_free_blocks == 9
    assert twin.metrics().num_requests_running == 0
    assert twin.get("r") is None
