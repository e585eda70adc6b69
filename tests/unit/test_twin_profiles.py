"""The twin's GPU and model catalogue: KV bytes per token by hand, KV dtype, long context."""

from __future__ import annotations

import pytest

from kvscale.twin import engine, profile

GB = 1e9
GIB = 1024**3


@pytest.mark.parametrize(
    ("model", "kv_dtype", "layers", "kv_heads", "head_dim", "dtype_bytes"),
    [
        ("llama-3-8b", "auto", 32, 8, 128, 2),
        ("llama-3-8b", "fp8", 32, 8, 128, 1),
        ("llama-3.1-8b", "auto", 32, 8, 128, 2),
        ("llama-3.1-8b", "fp8", 32, 8, 128, 1),
        ("llama-3-70b", "auto", 80, 8, 128, 2),
        ("llama-3.1-70b", "auto", 80, 8, 128, 2),
        ("llama-3.1-70b", "fp8", 80, 8, 128, 1),
    ],
)
def test_kv_bytes_per_token_is_two_x_layers_x_kv_heads_x_head_dim_x_dtype(
    model: str, kv_dtype: str, layers: int, kv_heads: int, head_dim: int, dtype_bytes: int
) -> None:
    tp = 8 if "70b" in model else 1
    made = profile.get("h200", model, tp, kv_dtype)
    assert made.kv_bytes_per_token == 2 * layers * kv_heads * head_dim * dtype_bytes


def test_one_128k_context_of_llama_70b_needs_about_40_gb() -> None:
    per_token = profile.get("h100-sxm", "llama-3.1-70b", 4).kv_bytes_per_token
    assert per_token == 327_680  # 2 x 80 x 8 x 128 x 2 bytes
    total = per_token * 131_072
    assert total == 42_949_672_960  # 42.9 GB
    assert total / GIB == 40.0
    fp8 = profile.get("h100-sxm", "llama-3.1-70b", 4, "fp8").kv_bytes_per_token * 131_072
    assert fp8 == total // 2


def test_llama_3_1_models_allow_a_128k_context() -> None:
    for name in ("llama-3.1-8b", "llama-3.1-70b"):
        model = profile.MODELS[name]
        assert model.max_position_embeddings == 131_072
    config = engine.EngineConfig().resolve(profile.get("h100-sxm", "llama-3.1-8b"))
    assert config.max_model_len == 131_072
    # Same weights as Llama 3: the long context changes nothing else.
    assert profile.LLAMA_3_1_70B.num_params == profile.LLAMA_3_70B.num_params


def test_fp8_kv_doubles_the_blocks_left_after_the_weights() -> None:
    auto = profile.get("h100-sxm", "llama-3-8b")
    fp8 = profile.get("h100-sxm", "llama-3-8b", kv_cache_dtype="fp8")
    assert fp8.num_gpu_blocks(16, 0.9) in (
        2 * auto.num_gpu_blocks(16, 0.9),
        2 * auto.num_gpu_blocks(16, 0.9) + 1,
    )


def test_h200_has_the_h100_compute_and_more_memory() -> None:
    h100, h200 = profile.get("h100-sxm", "llama-3-8b"), profile.get("h200", "llama-3-8b")
    assert h200.gpu.peak_flops == h100.gpu.peak_flops
    assert h200.gpu.memory_bandwidth == 4.8e12
    assert h200.gpu.memory_bytes / GB == pytest.approx(150.8, abs=0.1)  # 143,771 MiB
    # Prefill (compute-bound) takes as long; decode (memory-bound) is faster.
    prefill = (2048, 1, 2048 * 2049 // 2, 2048)
    assert h200.step_time(*prefill) == h100.step_time(*prefill)
    decode = (64, 64, 64 * 1024, 64 * 1024)
    assert h200.step_time(*decode) < h100.step_time(*decode)
    # 143,771 MiB x 0.9 - 15,316.7 MiB of weights - 2,048 MiB reserve, in 2 MiB blocks.
    assert h200.num_gpu_blocks(16, 0.9) == 56_014
    assert h100.num_gpu_blocks(16, 0.9) == 28_019


def test_every_gpu_has_its_efficiency_entry() -> None:
    assert set(profile.EFFICIENCY) == set(profile.GPUS)
    for gpu in profile.GPUS:
        assert profile.get(gpu, "llama-3-8b").efficiency is profile.EFFICIENCY[gpu]


def test_70b_fits_l40s_at_tp4_but_not_l4() -> None:
    assert profile.get("l40s", "llama-3.1-70b", 4).num_gpu_blocks(16, 0.9) > 0
    with pytest.raises(ValueError, match="no memory left for the KV cache"):
        profile.get("l4", "llama-3.1-70b", 4).num_gpu_blocks(16, 0.9)


def test_an_unknown_kv_dtype_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="kv_cache_dtype = 'int4'"):
        profile.get("h100-sxm", "llama-3-8b", kv_cache_dtype="int4")
