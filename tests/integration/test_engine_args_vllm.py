"""The rendered engine args as vLLM's own parser reads them: each field lands where it should.

Runs vLLM 0.32's argument parser (no engine, no model) in the cached vLLM environment, so a
renamed or removed flag fails here rather than in a crash-looping pod.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from kvscale.api import models
from kvscale.localstack import engine_env
from kvscale_operator.reconciler import engine_args

pytestmark = pytest.mark.vllm

# Parses each argv of a JSON list with the OpenAI server's parser and prints what vLLM
# resolved, or the parser's exit code for argv it refuses.
PARSE = """
import contextlib, io, json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.engine.arg_utils import AsyncEngineArgs
out = []
for argv in json.loads(sys.stdin.read()):
    parser = make_arg_parser(FlexibleArgumentParser())
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ns = parser.parse_args(argv)
    except SystemExit as exit:
        out.append({"refused": exit.code})
        continue
    ea = AsyncEngineArgs.from_cli_args(ns)
    out.append({
        "model": ea.model, "served_model_name": ea.served_model_name, "host": ns.host,
        "port": ns.port, "block_size": ea.block_size,
        "gpu_memory_utilization": ea.gpu_memory_utilization, "max_num_seqs": ea.max_num_seqs,
        "max_model_len": ea.max_model_len, "kv_cache_dtype": ea.kv_cache_dtype,
        "enable_prefix_caching": ea.enable_prefix_caching,
        "tensor_parallel_size": ea.tensor_parallel_size,
        "shutdown_timeout": ea.shutdown_timeout,
        "kv_offloading_size": ea.kv_offloading_size,
        "kv_offloading_backend": ea.kv_offloading_backend,
    })
print("RESULT " + json.dumps(out))
"""


def parse_with_vllm(argvs: list[list[str]]) -> list[dict[str, Any]]:
    try:
        python = engine_env.vllm_python()
    except engine_env.EngineEnvError as error:
        pytest.fail(f"{error}\nbuild it with `make engine-env`", pytrace=False)
    result = subprocess.run(
        [str(python), "-c", PARSE],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0, result.stderr[-3000:]
    assert lines, result.stdout[-3000:]
    parsed: list[dict[str, Any]] = json.loads(lines[-1].removeprefix("RESULT "))
    return parsed


def spec(engine: dict[str, Any]) -> models.InferenceDeploymentSpec:
    return models.InferenceDeploymentSpec.model_validate(
        {"model": {"name": "org/model", "servedName": "chat"}, "engine": engine}
    )


def rendered(engine: dict[str, Any]) -> list[str]:
    # The kubelet expands $(POD_IP); vLLM never sees the reference.
    return [arg.replace(engine_args.POD_IP, "10.1.2.3") for arg in engine_args.render(spec(engine))]


def test_vllm_reads_every_rendered_field_and_refuses_the_v0_swap_flags() -> None:
    defaults, tuned, removed_swap, removed_mode = parse_with_vllm(
        [
            rendered({}),
            rendered(
                {
                    "port": 8123,
                    "blockSize": 32,
                    "gpuMemoryUtilization": 0.85,
                    "maxNumSeqs": 8,
                    "maxModelLen": 2048,
                    "kvCacheDtype": "fp8",
                    "enablePrefixCaching": False,
                    "tensorParallelSize": 2,
                    "shutdownGraceSeconds": 30,
                    "preemption": {"policy": "swap", "swapSpaceGiB": 1.5},
                }
            ),
            ["--model", "m", "--swap-space", "4"],
            ["--model", "m", "--preemption-mode", "swap"],
        ]
    )
    assert defaults == {
        "model": "org/model",
        "served_model_name": ["chat"],
        "host": "10.1.2.3",
        "port": 8000,
        "block_size": 16,
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 256,
        "max_model_len": None,
        "kv_cache_dtype": "auto",
        "enable_prefix_caching": True,
        "tensor_parallel_size": 1,
        "shutdown_timeout": 60,
        "kv_offloading_size": None,
        "kv_offloading_backend": "native",
    }
    assert tuned == {
        **defaults,
        "port": 8123,
        "block_size": 32,
        "gpu_memory_utilization": 0.85,
        "max_num_seqs": 8,
        "max_model_len": 2048,
        "kv_cache_dtype": "fp8",
        "enable_prefix_caching": False,
        "tensor_parallel_size": 2,
        "shutdown_timeout": 30,
        "kv_offloading_size": 1.5,
    }
    # The flags engine_args.problems rejects in extraArgs are unknown to vLLM V1.
    assert removed_swap == {"refused": 2}
    assert removed_mode == {"refused": 2}
