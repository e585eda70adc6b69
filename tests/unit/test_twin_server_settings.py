"""`kvscale twin` runs from the args the operator renders for vLLM, honouring each one."""

from __future__ import annotations

from typing import Any

import pytest

from kvscale.api import models
from kvscale.twin import profile, scheduler
from kvscale.twinserver import settings
from kvscale_operator.reconciler import engine_args

GIB = 1024**3


def rendered(**engine: Any) -> list[str]:
    """The engine container's args for a CR, with the pod IP the kubelet substitutes."""
    spec = models.InferenceDeploymentSpec.model_validate(
        {
            "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "servedName": "llama"},
            "engine": {"image": "ghcr.io/kvscale/engine-twin:0.1.0", **engine},
            "resources": {"gpusPerReplica": 1, "memory": "64Gi"},
        }
    )
    assert engine_args.problems(spec) == []
    return [arg.replace("$(POD_IP)", "127.1.0.7") for arg in engine_args.render(spec)]


def test_the_operators_default_args_run_and_map_onto_the_engine() -> None:
    config = settings.parse(rendered())
    sched = config.engine.resolve(config.profile)
    assert config.listen == ((("127.1.0.7", 8000)),)
    assert (config.model, config.served_model_name) == (
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "llama",
    )
    assert (config.model_profile, config.gpu) == ("llama-3-8b", "h100-sxm")
    assert sched.block_size == 16
    assert sched.max_num_seqs == 256  # the CRD's default, rendered as --max-num-seqs
    assert sched.enable_prefix_caching is True
    assert sched.preemption_mode is scheduler.PreemptionMode.RECOMPUTE
    # The KV cache is sized from the profile, the GPU and --gpu-memory-utilization.
    assert sched.num_gpu_blocks == profile.get("h100-sxm", "llama-3-8b").num_gpu_blocks(16, 0.9)
    assert config.shutdown_timeout_s == 60  # the CRD's shutdownGraceSeconds


@pytest.mark.parametrize(
    ("engine", "check"),
    [
        ({"blockSize": 32}, lambda c, s: s.block_size == 32),
        ({"maxNumSeqs": 7}, lambda c, s: s.max_num_seqs == 7),
        ({"maxModelLen": 4096}, lambda c, s: s.max_model_len == 4096),
        ({"enablePrefixCaching": False}, lambda c, s: not s.enable_prefix_caching),
        ({"shutdownGraceSeconds": 5}, lambda c, s: c.shutdown_timeout_s == 5),
        (
            {"gpuMemoryUtilization": 0.5},
            lambda c, s: s.num_gpu_blocks == c.profile.num_gpu_blocks(16, 0.5),
        ),
        ({"kvCacheDtype": "fp8"}, lambda c, s: c.profile.kv_cache_dtype_bytes == 1),
        (
            {"preemption": {"policy": "swap", "swapSpaceGiB": 4}},
            lambda c, s: (
                s.preemption_mode is scheduler.PreemptionMode.SWAP
                and s.num_cpu_blocks == 4 * GIB // c.profile.block_bytes(16)
                and c.kv_offloading_backend == "native"
            ),
        ),
        (
            {
                "maxModelLen": 4096,
                "extraArgs": ["--num-gpu-blocks-override", "512", "--max-num-batched-tokens", "1k"],
            },
            lambda c, s: s.num_gpu_blocks == 512 and s.max_num_batched_tokens == 1000,
        ),
    ],
)
def test_each_rendered_field_is_honoured(engine: dict[str, Any], check: Any) -> None:
    config = settings.parse(rendered(**engine))
    assert check(config, config.engine.resolve(config.profile))


def test_tensor_parallelism_picks_the_multi_gpu_profile() -> None:
    spec = models.InferenceDeploymentSpec.model_validate(
        {
            "model": {"name": "meta-llama/Meta-Llama-3-70B-Instruct"},
            "engine": {"tensorParallelSize": 4},
            "resources": {"gpusPerReplica": 4},
        }
    )
    args = [a.replace("$(POD_IP)", "127.1.0.8") for a in engine_args.render(spec)]
    config = settings.parse(args)
    assert config.model_profile == "llama-3-70b"
    assert config.profile.tensor_parallel_size == 4


def test_vllm_flags_that_change_nothing_modelled_are_accepted_and_listed() -> None:
    config = settings.parse(
        ["--model", "kvscale/tiny-llama", "--dtype", "float32", "--enforce-eager"]
    )
    assert [item.split(" ")[0] for item in config.ignored] == ["--dtype", "--enforce-eager"]
    assert config.gpu == profile.CPU_CALIBRATED
    assert config.engine.resolve(config.profile).block_size == 128  # vLLM's CPU default


def test_many_listen_addresses_make_many_twins() -> None:
    config = settings.parse(
        [
            "--model",
            "kvscale/tiny-llama",
            "--listen",
            "127.2.0.1:8000",
            "--listen",
            "127.2.0.2:8000",
        ]
    )
    assert config.listen == (("127.2.0.1", 8000), ("127.2.0.2", 8000))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "org/unknown"], "--model 'org/unknown': no twin profile"),
        (["--model", "kvscale/tiny-llama", "--gpu", "b200"], "--gpu 'b200'"),
        (["--model", "kvscale/tiny-llama", "--time-scale", "0"], "--time-scale 0"),
        (["--model", "kvscale/tiny-llama", "--listen", "8000"], "--listen '8000': must be"),
        (["--model", "kvscale/tiny-llama", "--listen", "h:70000"], "port 70000"),
        (["--model", "kvscale/tiny-llama", "--max-num-seqs", "0"], "--max-num-seqs 0"),
        (["--model", "kvscale/tiny-llama", "--kv-offloading-size", "-1"], "--kv-offloading-size"),
        (
            ["--model", "kvscale/tiny-llama", "--num-gpu-blocks-override", "8"],
            "--max-model-len: max_model_len = 4096",
        ),
        (
            ["--model", "kvscale/tiny-llama", "--tensor-parallel-size", "2"],
            "--tensor-parallel-size",
        ),
    ],
)
def test_bad_values_are_errors_naming_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(settings.SettingsError, match=message.replace("(", r"\(")):
        settings.parse(argv)


def test_a_flag_vllm_does_not_have_is_refused_like_vllm_refuses_it() -> None:
    with pytest.raises(SystemExit):
        settings.parse(["--model", "kvscale/tiny-llama", "--swap-space", "4"])
