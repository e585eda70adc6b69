"""The vLLM command line of an engine pod, and the combinations vLLM cannot run. Pure.

`render` maps the CR's engine section onto vLLM 0.32's OpenAI server flags, in a fixed order,
then appends `extraArgs` as given. `problems` lists, in plain words and naming the field to
change, what would make the engine fail at start or silently ignore a field; the reconciler
refuses to roll such a spec out and reports the list in the Ready condition.

Facts behind the checks (read from vLLM 0.32's source: `engine/arg_utils.py`,
`config/cache.py`, `config/vllm.py`, `v1/kv_offload/cpu/spec.py`,
`v1/attention/backends/cpu_attn.py`):
- V1 preempts by recompute only; `--swap-space` and `--preemption-mode` are gone (unknown
  flags stop the server). Swap is KV offloading to CPU: `--kv-offloading-size <GiB>`
  `--kv-offloading-backend native`, which fills in `--kv-transfer-config` itself (a connector
  given there is overwritten). With tensor parallelism the size is the total over all ranks,
  so swap works with `tensorParallelSize` > 1.
- The offload buffer is host memory inside the engine container.
- Native offloading refuses to start on CPUs ("only supported on CUDA-alike and XPU GPUs");
  the CPU attention backend works in blocks that are multiples of 32 tokens. A replica with
  no GPUs runs vLLM's CPU build, so both are checked when `gpusPerReplica` is 0.
- `--shutdown-timeout` (default 0: abort in-flight requests on SIGTERM) is how long the engine
  drains running requests before it exits; it is set from `shutdownGraceSeconds`.
- fp8 KV cache is accepted by the CPU backend and by CUDA backends alike; nothing here depends
  on it, so it is rendered and not checked.
"""

from __future__ import annotations

from kvscale.api import models
from kvscale_operator.reconciler import quantity

POD_IP = "$(POD_IP)"

# Every flag the operator renders, with the field that sets it: an extraArgs entry naming one
# of these would either be overridden by argparse (the last one wins) or override the field,
# and either way the CR would say one thing and the engine do another.
FLAG_TO_FIELD: dict[str, str] = {
    "--model": "spec.model.name",
    "--served-model-name": "spec.model.servedName",
    "--host": "nothing (the engine listens on the pod IP)",
    "--port": "spec.engine.port",
    "--block-size": "spec.engine.blockSize",
    "--gpu-memory-utilization": "spec.engine.gpuMemoryUtilization",
    "--max-num-seqs": "spec.engine.maxNumSeqs",
    "--max-model-len": "spec.engine.maxModelLen",
    "--kv-cache-dtype": "spec.engine.kvCacheDtype",
    "--enable-prefix-caching": "spec.engine.enablePrefixCaching",
    "--tensor-parallel-size": "spec.engine.tensorParallelSize",
    "--shutdown-timeout": "spec.engine.shutdownGraceSeconds",
    "--kv-offloading-size": "spec.engine.preemption (policy swap, swapSpaceGiB)",
    "--kv-offloading-backend": "spec.engine.preemption (policy swap)",
}

# Short and negated spellings argparse accepts for the flags above.
_ALIASES = {
    "-tp": "--tensor-parallel-size",
    "--no-enable-prefix-caching": "--enable-prefix-caching",
}

REMOVED_FLAGS: dict[str, str] = {
    "--swap-space": "vLLM V1 removed it; set spec.engine.preemption.policy: swap",
    "--preemption-mode": "vLLM V1 removed it; set spec.engine.preemption.policy",
}

CPU_BLOCK_MULTIPLE = 32


def flag_number(value: float) -> str:
    """A float as vLLM's argparse reads it back exactly: "0.9", "4", "1.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(spec: models.InferenceDeploymentSpec) -> list[str]:
    """The engine container's args: rendered flags in a fixed order, then `extraArgs`."""
    engine = spec.engine
    args = [
        "--model",
        spec.model.name,
        "--served-model-name",
        spec.model.served_name or spec.model.name,
        "--host",
        POD_IP,
        "--port",
        str(engine.port),
        "--block-size",
        str(engine.block_size),
        "--gpu-memory-utilization",
        flag_number(engine.gpu_memory_utilization),
        "--max-num-seqs",
        str(engine.max_num_seqs),
    ]
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    args += ["--kv-cache-dtype", engine.kv_cache_dtype.value]
    args.append(
        "--enable-prefix-caching" if engine.enable_prefix_caching else "--no-enable-prefix-caching"
    )
    args += ["--tensor-parallel-size", str(engine.tensor_parallel_size)]
    # vLLM's default (0) aborts every running request on SIGTERM; this lets them finish.
    args += ["--shutdown-timeout", str(engine.shutdown_grace_seconds)]
    args += preemption_args(engine.preemption)
    args += engine.extra_args
    return args


def preemption_args(preemption: models.Preemption) -> list[str]:
    """recompute: nothing (vLLM V1's only mode); swap: KV offloading to CPU memory."""
    if preemption.policy is models.PreemptionPolicy.RECOMPUTE:
        return []
    # The model validator guarantees a size for swap; the fallback only keeps this total.
    size = preemption.swap_space_gib or 0.0
    return ["--kv-offloading-size", flag_number(size), "--kv-offloading-backend", "native"]


def flag_name(arg: str) -> str | None:
    """The canonical long flag an argument names ("--max_num_seqs=8" -> "--max-num-seqs")."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        # vLLM's parser accepts underscores in long flags and reads them as dashes.
        name = "--" + name[2:].replace("_", "-")
    return _ALIASES.get(name, name)


def problems(spec: models.InferenceDeploymentSpec) -> list[str]:
    """Why vLLM could not run this spec as written; empty when it can."""
    found: list[str] = []
    engine = spec.engine
    swap = engine.preemption.policy is models.PreemptionPolicy.SWAP
    for index, arg in enumerate(engine.extra_args):
        name = flag_name(arg)
        if name is None:
            continue
        where = f"spec.engine.extraArgs[{index}] {arg!r}"
        if name in FLAG_TO_FIELD:
            found.append(
                f"{where} duplicates {name}, which the operator renders from "
                f"{FLAG_TO_FIELD[name]}; remove it and set the field instead"
            )
        elif name in REMOVED_FLAGS:
            found.append(f"{where}: {REMOVED_FLAGS[name]}")
        elif name == "--kv-transfer-config" and swap:
            found.append(
                f"{where} conflicts with spec.engine.preemption.policy swap: swap configures "
                "vLLM's KV connector itself (native CPU offloading) and would overwrite it"
            )
    gpus = spec.resources.gpus_per_replica
    if gpus > 0 and engine.tensor_parallel_size > gpus:
        found.append(
            f"spec.engine.tensorParallelSize {engine.tensor_parallel_size} needs that many GPUs "
            f"in each pod, but spec.resources.gpusPerReplica is {gpus}"
        )
    if gpus == 0 and engine.block_size % CPU_BLOCK_MULTIPLE:
        found.append(
            f"spec.engine.blockSize {engine.block_size} must be a multiple of "
            f"{CPU_BLOCK_MULTIPLE} on CPU: spec.resources.gpusPerReplica is 0, so the engine "
            "runs vLLM's CPU build, whose attention backend works in blocks of 32 tokens"
        )
    if swap:
        found += _swap_problems(spec)
    return found


def _swap_problems(spec: models.InferenceDeploymentSpec) -> list[str]:
    found: list[str] = []
    size_gib = spec.engine.preemption.swap_space_gib or 0.0
    if spec.resources.gpus_per_replica == 0:
        found.append(
            "spec.engine.preemption.policy swap needs GPUs: vLLM offloads KV blocks to CPU "
            "memory only from CUDA, ROCm or XPU devices, and spec.resources.gpusPerReplica is 0 "
            "(use policy recompute on CPU)"
        )
    memory = quantity.parse(spec.resources.memory)
    if memory is None:
        found.append(f"spec.resources.memory {spec.resources.memory!r} is not a quantity")
    elif size_gib * quantity.GIB >= memory:
        found.append(
            f"spec.engine.preemption.swapSpaceGiB {flag_number(size_gib)} does not fit in "
            f"spec.resources.memory {spec.resources.memory}: the swap buffer is host memory "
            "inside the engine container, next to the engine itself"
        )
    return found
