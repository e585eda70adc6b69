"""The twin's step-time model: prefill compute-bound, decode memory-bound, sane magnitudes.

Sources of the reference figures are in docs/engine-twin.md ("Step time" and "Sources").
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from kvscale.twin import profile

H100_8B = profile.get("h100-sxm", "llama-3-8b")
A100_8B = profile.get("a100-80gb", "llama-3-8b")
MS = 1e-3


def prefill(p: profile.Profile, tokens: int) -> float:
    return p.step_time(tokens, 1, tokens * (tokens + 1) // 2, tokens)


def decode(p: profile.Profile, batch: int, context: int) -> float:
    return p.step_time(batch, batch, batch * context, batch * context)


def with_gpu(
    p: profile.Profile, peak_flops: float | None = None, memory_bandwidth: float | None = None
) -> profile.Profile:
    gpu = dataclasses.replace(
        p.gpu,
        peak_flops=peak_flops or p.gpu.peak_flops,
        memory_bandwidth=memory_bandwidth or p.gpu.memory_bandwidth,
    )
    return dataclasses.replace(p, gpu=gpu)


def test_parameter_counts_match_the_published_checkpoints() -> None:
    # Hugging Face safetensors totals of meta-llama/Meta-Llama-3-8B and -70B.
    assert profile.LLAMA_3_8B.num_params == 8_030_261_248
    assert profile.LLAMA_3_70B.num_params == 70_553_706_496


def test_kv_bytes_per_token() -> None:
    # Llama-3-8B in BF16: 128 KiB per token (K and V, 8 KV heads of 128, 32 layers).
    assert H100_8B.kv_bytes_per_token == 128 * 1024
    assert dataclasses.replace(H100_8B, kv_cache_dtype_bytes=1).kv_bytes_per_token == 64 * 1024
    assert profile.get("h100-sxm", "llama-3-70b", 4).kv_bytes_per_token == 320 * 1024


def test_prefill_is_compute_bound() -> None:
    base = prefill(H100_8B, 2048)
    assert prefill(with_gpu(H100_8B, memory_bandwidth=2 * 3.35e12), 2048) == base
    faster = prefill(with_gpu(H100_8B, peak_flops=2 * 989.4e12), 2048)
    overhead = H100_8B.efficiency.step_overhead_s
    assert faster - overhead == pytest.approx((base - overhead) / 2)


def test_decode_is_memory_bound() -> None:
    for batch in (1, 32, 128):
        base = decode(H100_8B, batch, 1024)
        assert decode(with_gpu(H100_8B, peak_flops=2 * 989.4e12), batch, 1024) == base
        faster = decode(with_gpu(H100_8B, memory_bandwidth=2 * 3.35e12), batch, 1024)
        overhead = H100_8B.efficiency.step_overhead_s
        assert faster - overhead == pytest.approx((base - overhead) / 2)


def test_decode_grows_with_batch_and_context_prefill_with_tokens() -> None:
    assert decode(H100_8B, 1, 1024) < decode(H100_8B, 32, 1024) < decode(H100_8B, 128, 1024)
    assert decode(H100_8B, 32, 1024) < decode(H100_8B, 32, 4096)
    assert prefill(H100_8B, 512) < prefill(H100_8B, 2048)
    # Attention makes prefill slightly superlinear in the prompt length.
    overhead = H100_8B.efficiency.step_overhead_s
    ratio = (prefill(H100_8B, 2048) - overhead) / (prefill(H100_8B, 512) - overhead)
    assert 4.0 < ratio < 4.5


def test_llama_3_8b_magnitudes() -> None:
    # Batch-1 decode: the roofline floor is the weights over peak bandwidth (16 GB / 3.35
    # TB/s = 4.8 ms); a CUDA-graphed Llama-3-8B-shaped decode measured 6.7 ms of GPU time on
    # an H100 (benchmarks/gpu_calibrate.py), vLLM about 13 ms per token on an A100 40GB.
    assert 6 * MS < decode(H100_8B, 1, 1024) < 10 * MS
    assert 9 * MS < decode(A100_8B, 1, 1024) < 16 * MS
    # Prefill of 2048 tokens: 33 TFLOP, 33 ms at full peak on H100; at 30-60% MFU.
    assert 50 * MS < prefill(H100_8B, 2048) < 120 * MS
    # The H100 is about 3x faster at prefill and 1.6x at decode than the A100.
    assert 2.5 < prefill(A100_8B, 2048) / prefill(H100_8B, 2048) < 3.5
    assert 1.3 < decode(A100_8B, 1, 1024) / decode(H100_8B, 1, 1024) < 1.8


def test_llama_3_70b_needs_tensor_parallelism_on_80gb_gpus() -> None:
    with pytest.raises(ValueError, match="no memory left for the KV cache"):
        profile.get("h100-sxm", "llama-3-70b").num_gpu_blocks(16, 0.9)
    tp4 = profile.get("h100-sxm", "llama-3-70b", 4)
    assert tp4.num_gpu_blocks(16, 0.9) > 10_000
    # Batch-1 decode on 4 x H100: 141 GB of weights over 4 x 3.35 TB/s is 10.5 ms at best.
    assert 12 * MS < decode(tp4, 1, 1024) < 25 * MS


def test_kv_cache_size_follows_memory_utilization_and_dtype() -> None:
    blocks = H100_8B.num_gpu_blocks(16, 0.9)
    assert H100_8B.num_gpu_blocks(16, 0.8) < blocks
    fp8 = dataclasses.replace(H100_8B, kv_cache_dtype_bytes=1)
    assert fp8.num_gpu_blocks(16, 0.9) in (2 * blocks, 2 * blocks + 1)
    assert H100_8B.num_gpu_blocks(32, 0.9) in (blocks // 2, blocks // 2 + 1)
    # 0.9 x 80 GB minus 16 GB of weights leaves room for roughly 400-470k tokens of KV.
    assert 400_000 < blocks * 16 < 470_000


def test_swap_time_is_linear_and_bounded_by_pcie() -> None:
    one = H100_8B.swap_time(1, 16)
    assert H100_8B.swap_time(10, 16) == pytest.approx(10 * one)
    assert H100_8B.swap_time(0, 16) == 0.0
    # 2 MiB per block over PCIe Gen5 x16 (64 GB/s per direction) is at least 33 us.
    assert one > 2 * 1024**2 / 64e9
    assert A100_8B.swap_time(1, 16) == pytest.approx(2 * one)


def test_an_empty_batch_takes_no_time() -> None:
    assert H100_8B.step_time(0, 0, 0, 0) == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mfu": 0.0}, "mfu = 0.0, must be in"),
        ({"bandwidth_utilization": 1.5}, "bandwidth_utilization = 1.5"),
        ({"step_overhead_s": -1.0}, "step_overhead_s = -1.0"),
    ],
)
def test_bad_efficiencies_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile.Efficiency(**changes)


def test_bad_profiles_are_refused() -> None:
    with pytest.raises(ValueError, match="gpu = 'b200'"):
        profile.get("b200", "llama-3-8b")
    with pytest.raises(ValueError, match="model = 'gpt-2'"):
        profile.get("h100-sxm", "gpt-2")
    with pytest.raises(ValueError, match="tensor_parallel_size = 3"):
        profile.get("h100-sxm", "llama-3-8b", 3)
    with pytest.raises(ValueError, match=re.escape("gpu_memory_utilization = 1.2")):
        H100_8B.num_gpu_blocks(16, 1.2)
