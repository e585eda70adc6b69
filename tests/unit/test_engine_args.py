"""The vLLM command line rendered from the CR's engine section, and the specs vLLM cannot run."""

from __future__ import annotations

from typing import Any

import pytest

from kvscale.api import models
from kvscale_operator.reconciler import engine_args


def spec(**sections: Any) -> models.InferenceDeploymentSpec:
    body: dict[str, Any] = {"model": {"name": "org/model"}}
    body.update(sections)
    return models.InferenceDeploymentSpec.model_validate(body)


def pairs(args: list[str]) -> dict[str, str | None]:
    """Flag -> value (None for a bare flag), for looking flags up in rendered args."""
    found: dict[str, str | None] = {}
    for index, arg in enumerate(args):
        if arg.startswith("--"):
            following = args[index + 1] if index + 1 < len(args) else None
            value = None if following is None or following.startswith("--") else following
            found[arg] = value
    return found


def test_defaults_render_every_flag_in_a_fixed_order() -> None:
    assert engine_args.render(spec()) == [
        "--model",
        "org/model",
        "--served-model-name",
        "org/model",
        "--host",
        "$(POD_IP)",
        "--port",
        "8000",
        "--block-size",
        "16",
        "--gpu-memory-utilization",
        "0.9",
        "--max-num-seqs",
        "256",
        "--kv-cache-dtype",
        "auto",
        "--enable-prefix-caching",
        "--tensor-parallel-size",
        "1",
        "--shutdown-timeout",
        "60",
    ]


@pytest.mark.parametrize(
    ("sections", "flag", "value"),
    [
        ({"model": {"name": "a/b", "servedName": "chat"}}, "--served-model-name", "chat"),
        ({"model": {"name": "a/b"}}, "--model", "a/b"),
        ({"engine": {"port": 8123}}, "--port", "8123"),
        ({"engine": {"blockSize": 32}}, "--block-size", "32"),
        ({"engine": {"gpuMemoryUtilization": 0.85}}, "--gpu-memory-utilization", "0.85"),
        ({"engine": {"gpuMemoryUtilization": 1}}, "--gpu-memory-utilization", "1"),
        ({"engine": {"maxNumSeqs": 8}}, "--max-num-seqs", "8"),
        ({"engine": {"maxModelLen": 4096}}, "--max-model-len", "4096"),
        ({"engine": {"kvCacheDtype": "fp8"}}, "--kv-cache-dtype", "fp8"),
        ({"engine": {"tensorParallelSize": 4}}, "--tensor-parallel-size", "4"),
        ({"engine": {"shutdownGraceSeconds": 30}}, "--shutdown-timeout", "30"),
        ({"engine": {"enablePrefixCaching": False}}, "--no-enable-prefix-caching", None),
        ({"engine": {"enablePrefixCaching": True}}, "--enable-prefix-caching", None),
    ],
)
def test_each_field_maps_to_its_flag(
    sections: dict[str, Any], flag: str, value: str | None
) -> None:
    rendered = pairs(engine_args.render(spec(**sections)))
    assert flag in rendered
    assert rendered[flag] == value


def test_max_model_len_is_left_to_the_model_when_unset() -> None:
    assert "--max-model-len" not in engine_args.render(spec())


def test_prefix_caching_renders_exactly_one_of_its_two_spellings() -> None:
    off = engine_args.render(spec(engine={"enablePrefixCaching": False}))
    assert "--enable-prefix-caching" not in off
    assert off.count("--no-enable-prefix-caching") == 1


@pytest.mark.parametrize(
    ("preemption", "expected_tail"),
    [
        # vLLM V1 preempts by recompute only: nothing to add.
        ({"policy": "recompute"}, []),
        (
            {"policy": "swap", "swapSpaceGiB": 4},
            ["--kv-offloading-size", "4", "--kv-offloading-backend", "native"],
        ),
        (
            {"policy": "swap", "swapSpaceGiB": 1.5},
            ["--kv-offloading-size", "1.5", "--kv-offloading-backend", "native"],
        ),
    ],
)
def test_preemption_policy_renders_its_args(
    preemption: dict[str, Any], expected_tail: list[str]
) -> None:
    args = engine_args.render(spec(engine={"preemption": preemption}))
    after_shutdown = args[args.index("--shutdown-timeout") + 2 :]
    assert after_shutdown == expected_tail
    assert "--swap-space" not in args
    assert "--preemption-mode" not in args


def test_extra_args_come_last_as_given() -> None:
    extra = ["--num-gpu-blocks-override", "256", "--enforce-eager"]
    args = engine_args.render(
        spec(engine={"extraArgs": extra, "preemption": {"policy": "swap", "swapSpaceGiB": 2}})
    )
    assert args[-3:] == extra


@pytest.mark.parametrize(
    ("arg", "name"),
    [
        ("--block-size", "--block-size"),
        ("--block-size=32", "--block-size"),
        ("--block_size", "--block-size"),
        ("-tp", "--tensor-parallel-size"),
        ("--no-enable-prefix-caching", "--enable-prefix-caching"),
        ("256", None),
        ("-", None),
        ("--", None),
    ],
)
def test_flag_name_reads_every_spelling_argparse_accepts(arg: str, name: str | None) -> None:
    assert engine_args.flag_name(arg) == name


def test_a_spec_vllm_can_run_has_no_problems() -> None:
    assert engine_args.problems(spec(engine={"extraArgs": ["--enforce-eager"]})) == []


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"engine": {"extraArgs": ["--block-size=64"]}},
            "spec.engine.extraArgs[0] '--block-size=64' duplicates --block-size, which the "
            "operator renders from spec.engine.blockSize",
        ),
        (
            {"engine": {"extraArgs": ["--enforce-eager", "-tp", "2"]}},
            "spec.engine.extraArgs[1] '-tp' duplicates --tensor-parallel-size",
        ),
        (
            {"engine": {"extraArgs": ["--no-enable-prefix-caching"]}},
            "renders from spec.engine.enablePrefixCaching",
        ),
        ({"engine": {"extraArgs": ["--host", "0.0.0.0"]}}, "duplicates --host"),
        ({"engine": {"extraArgs": ["--max_model_len", "99"]}}, "spec.engine.maxModelLen"),
        (
            {"engine": {"extraArgs": ["--kv-offloading-size", "4"]}},
            "spec.engine.preemption (policy swap, swapSpaceGiB)",
        ),
        (
            {"engine": {"extraArgs": ["--swap-space", "4"]}},
            "spec.engine.extraArgs[0] '--swap-space': vLLM V1 removed it; "
            "set spec.engine.preemption.policy: swap",
        ),
        ({"engine": {"extraArgs": ["--preemption-mode=swap"]}}, "vLLM V1 removed it"),
        (
            {
                "engine": {
                    "extraArgs": ["--kv-transfer-config", "{}"],
                    "preemption": {"policy": "swap", "swapSpaceGiB": 1},
                }
            },
            "spec.engine.extraArgs[0] '--kv-transfer-config' conflicts with "
            "spec.engine.preemption.policy swap",
        ),
        (
            {"engine": {"tensorParallelSize": 4}, "resources": {"gpusPerReplica": 2}},
            "spec.engine.tensorParallelSize 4 needs that many GPUs in each pod, but "
            "spec.resources.gpusPerReplica is 2",
        ),
        (
            {"engine": {"blockSize": 16}, "resources": {"gpusPerReplica": 0}},
            "spec.engine.blockSize 16 must be a multiple of 32 on CPU",
        ),
        (
            {
                "engine": {"blockSize": 32, "preemption": {"policy": "swap", "swapSpaceGiB": 1}},
                "resources": {"gpusPerReplica": 0},
            },
            "spec.engine.preemption.policy swap needs GPUs",
        ),
        (
            {
                "engine": {"preemption": {"policy": "swap", "swapSpaceGiB": 8}},
                "resources": {"memory": "8Gi"},
            },
            "spec.engine.preemption.swapSpaceGiB 8 does not fit in spec.resources.memory 8Gi",
        ),
    ],
)
def test_problems_name_the_field_to_change(sections: dict[str, Any], expected: str) -> None:
    found = engine_args.problems(spec(**sections))
    assert len(found) == 1, found
    assert expected in found[0]


@pytest.mark.parametrize(
    "sections",
    [
        # Native offloading splits the size over the ranks: swap with TP > 1 is fine.
        {
            "engine": {
                "tensorParallelSize": 2,
                "preemption": {"policy": "swap", "swapSpaceGiB": 4},
            },
            "resources": {"gpusPerReplica": 2, "memory": "32Gi"},
        },
        # The 32-token rule is the CPU backend's; GPUs take 16.
        {"engine": {"blockSize": 16}, "resources": {"gpusPerReplica": 1}},
        {"engine": {"blockSize": 32, "kvCacheDtype": "fp8"}, "resources": {"gpusPerReplica": 0}},
        # A user's connector is fine when the operator does not set one.
        {"engine": {"extraArgs": ["--kv-transfer-config", "{}"]}},
        {
            "engine": {"preemption": {"policy": "swap", "swapSpaceGiB": 7.5}},
            "resources": {"memory": "8Gi"},
        },
    ],
)
def test_combinations_vllm_runs_are_not_flagged(sections: dict[str, Any]) -> None:
    assert engine_args.problems(spec(**sections)) == []


def test_every_problem_is_reported_at_once() -> None:
    found = engine_args.problems(
        spec(
            engine={"extraArgs": ["--port", "1", "--swap-space", "2"], "blockSize": 48},
            resources={"gpusPerReplica": 0},
        )
    )
    assert [problem.split(" ")[0] for problem in found] == [
        "spec.engine.extraArgs[0]",
        "spec.engine.extraArgs[2]",
        "spec.engine.blockSize",
    ]
