"""The `cpu-calibrated` profile: the tiny model on vLLM's CPU build, with a measured step time."""

from __future__ import annotations

import dataclasses

import pytest

from kvscale.twin import calibration, engine, profile


def test_the_cpu_profile_uses_the_measured_line_for_every_batch_shape() -> None:
    cpu = profile.get(profile.CPU_CALIBRATED, "tiny-llama")
    assert cpu == profile.cpu_tiny_llama()
    decode_32 = cpu.step_time(num_tokens=32, num_seqs=32, attention_pairs=32 * 500, kv_tokens=0)
    assert decode_32 == pytest.approx(
        calibration.PER_STEP_S
        + 32 * (calibration.PER_TOKEN_S + calibration.PER_SEQ_S)
        + 32 * 500 * calibration.PER_ATTENTION_PAIR_S
    )
    assert cpu.step_time(0, 0, 0, 0) == 0.0


def test_the_cpu_profile_has_the_tiny_models_kv_geometry_and_vllms_cpu_defaults() -> None:
    cpu = profile.cpu_tiny_llama()
    # K and V, 2 KV heads of 64, float32, 2 layers.
    assert cpu.kv_bytes_per_token == 2 * 2 * 64 * 4 * 2
    config = engine.EngineConfig(block_size=32, num_gpu_blocks_override=64, max_model_len=1024)
    sched = config.resolve(cpu)
    assert (sched.max_num_batched_tokens, sched.max_num_seqs) == (2048, 128)


def test_the_cpu_profile_exists_only_for_the_tiny_model_on_one_device() -> None:
    with pytest.raises(ValueError, match="measured for 'tiny-llama' only"):
        profile.get(profile.CPU_CALIBRATED, "llama-3-8b")
    with pytest.raises(ValueError, match="tensor_parallel_size = 2"):
        profile.get(profile.CPU_CALIBRATED, "tiny-llama", 2)


@pytest.mark.parametrize("field", ["per_step_s", "per_token_s", "per_seq_s"])
@pytest.mark.parametrize("bad", [-1e-6, float("nan"), float("inf")])
def test_a_measured_line_refuses_negative_or_non_finite_coefficients(
    field: str, bad: float
) -> None:
    good = profile.LinearStepTime(0.001, 1e-5, 1e-4, 1e-8)
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(good, **{field: bad})
