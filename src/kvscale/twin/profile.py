"""GPU and model profiles, the KV-cache size they give, and the step-time model.

A step's time is a roofline with stated efficiencies (docs/engine-twin.md has every constant
and its source):

    time = overhead + max(FLOPs / (tp x peak x mfu), bytes / (tp x HBM bandwidth x bw_util))
           + tensor-parallel all-reduces + swap transfers

FLOPs: 2 per parameter per token for the layer matmuls, 2 per lm_head parameter per
sequence (logits are computed for the last token only), and 4 x layers x (heads x head_dim)
per (query token, attended token) pair for attention. Bytes: the weights once per step plus
the KV of every scheduled request (read, and the new tokens written). Prefill is therefore
compute-bound and decode memory-bound, as measured on real GPUs.

The KV-cache size follows vLLM's startup: usable memory is `gpu_memory_utilization` of the
GPU, minus the weights' shard, minus a reserve for activations, CUDA graphs and library
workspaces (vLLM measures those with a profiling run; here it is a stated constant).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping

from kvscale.twin import calibration

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU's datasheet numbers (dense, no sparsity; bandwidths per direction)."""

    name: str
    peak_flops: float  # dense BF16/FP16 tensor-core FLOP/s
    memory_bandwidth: float  # HBM, bytes/s
    memory_bytes: int  # as the driver reports it (nvidia-smi's total)
    host_bandwidth: float  # host <-> device (PCIe), bytes/s, one direction
    link_bandwidth: float  # GPU <-> GPU (NVLink), bytes/s, one direction
    # `vllm serve`'s (max_num_batched_tokens, max_num_seqs) on this device when they do not
    # follow the GPU-memory rule (vLLM's CPU platform has its own); None: the memory rule.
    serve_defaults: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Model:
    """A dense decoder-only transformer with grouped-query attention (Llama-style)."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # gated MLP: three matrices of hidden x intermediate
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    dtype_bytes: int = 2  # BF16 weights

    @property
    def num_layer_params(self) -> int:
        """Parameters of the transformer layers (attention, MLP, norms)."""
        hidden, q_dim = self.hidden_size, self.num_attention_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden
        mlp = 3 * hidden * self.intermediate_size
        return self.num_layers * (attention + mlp + 2 * hidden)

    @property
    def num_lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        """All parameters: embedding, layers, final norm, lm_head (unless tied)."""
        embedding = self.vocab_size * self.hidden_size
        lm_head = 0 if self.tie_word_embeddings else self.num_lm_head_params
        return embedding + self.num_layer_params + self.hidden_size + lm_head

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    def kv_bytes_per_token(self, kv_dtype_bytes: int) -> int:
        """K and V of one token over all layers."""
        return 2 * self.num_kv_heads * self.head_dim * kv_dtype_bytes * self.num_layers


@dataclasses.dataclass(frozen=True)
class Efficiency:
    """How much of the datasheet a real engine gets: stated assumptions, see the docs."""

    mfu: float = 0.5  # share of peak FLOP/s reached by prefill matmuls
    bandwidth_utilization: float = 0.8  # share of HBM bandwidth reached by decode
    step_overhead_s: float = 0.0015  # per step: scheduling, sampling, launches not hidden
    allreduce_latency_s: float = 8e-6  # per all-reduce with tensor parallelism
    host_bandwidth_utilization: float = 0.8  # share of PCIe bandwidth reached by swaps

    def __post_init__(self) -> None:
        for name in ("mfu", "bandwidth_utilization", "host_bandwidth_utilization"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} = {value!r}, must be in (0, 1]")
        for name in ("step_overhead_s", "allreduce_latency_s"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"{name} = {value!r}, must be >= 0")


@dataclasses.dataclass(frozen=True)
class LinearStepTime:
    """A measured step time, linear in the batch's shape (used instead of the roofline).

    seconds = per_step_s + per_token_s x tokens + per_seq_s x sequences
              + per_attention_pair_s x attention pairs

    Fitted by least squares on a real engine (see `calibration`); every coefficient >= 0.
    """

    per_step_s: float
    per_token_s: float
    per_seq_s: float
    per_attention_pair_s: float

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (isinstance(value, float | int) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{field.name} = {value!r}, must be a finite number >= 0")

    def seconds(self, num_tokens: int, num_seqs: int, attention_pairs: int) -> float:
        return (
            self.per_step_s
            + self.per_token_s * num_tokens
            + self.per_seq_s * num_seqs
            + self.per_attention_pair_s * attention_pairs
        )


@dataclasses.dataclass(frozen=True)
class Profile:
    """A model served on `tensor_parallel_size` GPUs of one kind."""

    gpu: Gpu
    model: Model
    tensor_parallel_size: int = 1
    kv_cache_dtype_bytes: int = 2  # 2 for auto (BF16), 1 for fp8, 4 for float32 (CPU)
    efficiency: Efficiency = Efficiency()
    # Per GPU: activations of the profiling run, CUDA graphs, NCCL and cuBLAS workspaces.
    non_kv_reserve_bytes: int = 2 * GIB
    # A measured step time replaces the roofline when set (the CPU-calibrated profile).
    step_model: LinearStepTime | None = None

    def __post_init__(self) -> None:
        tp = self.tensor_parallel_size
        if not isinstance(tp, int) or tp < 1:
            raise ValueError(f"tensor_parallel_size = {tp!r}, must be an integer >= 1")
        if self.model.num_kv_heads % tp and tp % self.model.num_kv_heads:
            raise ValueError(
                f"tensor_parallel_size = {tp}, must divide or be a multiple of "
                f"{self.model.name}'s {self.model.num_kv_heads} KV heads"
            )
        if self.kv_cache_dtype_bytes not in (1, 2, 4):
            raise ValueError(
                f"kv_cache_dtype_bytes = {self.kv_cache_dtype_bytes!r}, must be 1 (fp8), 2 or 4"
            )
        if self.non_kv_reserve_bytes < 0:
            raise ValueError(f"non_kv_reserve_bytes = {self.non_kv_reserve_bytes}, must be >= 0")

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers and all GPUs."""
        return self.model.kv_bytes_per_token(self.kv_cache_dtype_bytes)

    def block_bytes(self, block_size: int) -> int:
        return self.kv_bytes_per_token * block_size

    def kv_cache_bytes_per_gpu(self, gpu_memory_utilization: float) -> float:
        """Memory left for the KV cache on each GPU, as vLLM would find at startup."""
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization = {gpu_memory_utilization!r}, must be in (0, 1]"
            )
        tp = self.tensor_parallel_size
        usable = self.gpu.memory_bytes * gpu_memory_utilization
        return usable - self.model.weight_bytes / tp - self.non_kv_reserve_bytes

    def num_gpu_blocks(self, block_size: int, gpu_memory_utilization: float) -> int:
        """KV-cache blocks (the null block included), like vLLM's `num_gpu_blocks`."""
        if block_size < 1:
            raise ValueError(f"block_size = {block_size}, must be >= 1")
        tp = self.tensor_parallel_size
        available = self.kv_cache_bytes_per_gpu(gpu_memory_utilization)
        # With KV heads replicated (tp > KV heads) each GPU still holds num_kv_heads / tp
        # worth of heads at minimum one head; count the real per-GPU share.
        heads_per_gpu = max(self.model.num_kv_heads // tp, 1)
        per_gpu_block = self.block_bytes(block_size) * heads_per_gpu // self.model.num_kv_heads
        blocks = math.floor(available / per_gpu_block) if available > 0 else 0
        if blocks < 2:
            raise ValueError(
                f"{self.model.name} on {tp} x {self.gpu.name} at gpu_memory_utilization = "
                f"{gpu_memory_utilization}: no memory left for the KV cache "
                f"({available / GIB:.1f} GiB per GPU after weights and reserve)"
            )
        return blocks

    def work(
        self, num_tokens: int, num_seqs: int, attention_pairs: int, kv_tokens: int
    ) -> tuple[float, float]:
        """FLOPs and HBM bytes of one forward step over a batch of this shape (all GPUs)."""
        model = self.model
        q_dim = model.num_attention_heads * model.head_dim
        flops = (
            2.0 * model.num_layer_params * num_tokens
            + 2.0 * model.num_lm_head_params * num_seqs
            + 4.0 * model.num_layers * q_dim * attention_pairs
        )
        weight_bytes = (model.num_layer_params + model.num_lm_head_params) * model.dtype_bytes
        return flops, float(weight_bytes + self.kv_bytes_per_token * kv_tokens)

    def step_time(
        self, num_tokens: int, num_seqs: int, attention_pairs: int, kv_tokens: int
    ) -> float:
        """Seconds for one forward step over a batch of this shape (0 for an empty batch).

        `num_tokens` tokens computed for `num_seqs` sequences; `attention_pairs` the sum over
        those tokens of the tokens each attends to; `kv_tokens` the sum over sequences of
        their KV length after the step.
        """
        if num_tokens <= 0:
            return 0.0
        if self.step_model is not None:
            return self.step_model.seconds(num_tokens, num_seqs, attention_pairs)
        model, gpu, eff = self.model, self.gpu, self.efficiency
        tp = self.tensor_parallel_size
        flops, memory_bytes = self.work(num_tokens, num_seqs, attention_pairs, kv_tokens)
        compute_s = flops / (tp * gpu.peak_flops * eff.mfu)
        memory_s = memory_bytes / (tp * gpu.memory_bandwidth * eff.bandwidth_utilization)
        seconds = eff.step_overhead_s + max(compute_s, memory_s)
        if tp > 1:
            # Two all-reduces of the hidden states per layer (after attention and MLP).
            message = num_tokens * model.hidden_size * model.dtype_bytes
            ring_s = 2.0 * (tp - 1) / tp * message / gpu.link_bandwidth
            seconds += 2 * model.num_layers * (eff.allreduce_latency_s + ring_s)
        return seconds

    def swap_time(self, num_blocks: int, block_size: int) -> float:
        """Seconds to copy `num_blocks` KV blocks one way between GPU and host memory.

        Each GPU moves its shard over its own PCIe link, so the links work in parallel.
        """
        if num_blocks <= 0:
            return 0.0
        bandwidth = (
            self.tensor_parallel_size
            * self.gpu.host_bandwidth
            * self.efficiency.host_bandwidth_utilization
        )
        return num_blocks * self.block_bytes(block_size) / bandwidth


# --- Public constants: docs/engine-twin.md cites the source of every number. -------------

H100_SXM = Gpu(
    name="NVIDIA H100 SXM5 80GB",
    peak_flops=989.4e12,
    memory_bandwidth=3.35e12,
    memory_bytes=81_559 * 1024**2,
    host_bandwidth=64e9,  # PCIe Gen5 x16
    link_bandwidth=450e9,  # NVLink 4: 900 GB/s total, both directions
)

A100_80GB = Gpu(
    name="NVIDIA A100 SXM4 80GB",
    peak_flops=312e12,
    memory_bandwidth=2.039e12,
    memory_bytes=81_920 * 1024**2,
    host_bandwidth=32e9,  # PCIe Gen4 x16
    link_bandwidth=300e9,  # NVLink 3: 600 GB/s total, both directions
)

LLAMA_3_8B = Model(
    name="Llama-3-8B",
    num_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=14336,
    vocab_size=128256,
    max_position_embeddings=8192,
)

LLAMA_3_70B = Model(
    name="Llama-3-70B",
    num_layers=80,
    hidden_size=8192,
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=28672,
    vocab_size=128256,
    max_position_embeddings=8192,
)

# The project's offline test model (scripts/build_tiny_model.py): float32 weights and KV.
TINY_LLAMA = Model(
    name="kvscale/tiny-llama",
    num_layers=2,
    hidden_size=256,
    num_attention_heads=4,
    num_kv_heads=2,
    head_dim=64,
    intermediate_size=512,
    vocab_size=320,
    max_position_embeddings=4096,
    dtype_bytes=4,
)

# vLLM's CPU build on this project's machines. Its step time is measured (`calibration`), so
# the datasheet numbers below only matter for swap transfers (host memory copies).
CPU_LOCAL = Gpu(
    name="CPU (vLLM CPU build)",
    peak_flops=1e11,  # unused: the CPU profile's step time is measured
    memory_bandwidth=1e10,  # unused, as above
    # The KV cache's host memory, VLLM_CPU_KVCACHE_SPACE (1 GiB in kvscale.localstack).
    memory_bytes=GIB,
    host_bandwidth=5e9,  # a memcpy on a small VM: an assumption
    link_bandwidth=5e9,  # unused: no tensor parallelism on the CPU build here
    serve_defaults=(2048, 128),  # vLLM 0.32's CPU defaults for the OpenAI server
)

# NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200/): 141 GB HBM3e at 4.8 TB/s; the
# same GH100 die and clocks as the H100 SXM, hence the same dense BF16 tensor throughput
# (989 TFLOPS dense, the datasheet's 1,979 is with sparsity); NVLink 4 and PCIe Gen5.
# nvidia-smi reports 143,771 MiB.
H200 = Gpu(
    name="NVIDIA H200 141GB",
    peak_flops=989.4e12,
    memory_bandwidth=4.8e12,
    memory_bytes=143_771 * 1024**2,
    host_bandwidth=64e9,  # PCIe Gen5 x16
    link_bandwidth=450e9,  # NVLink 4: 900 GB/s total, both directions
)

# NVIDIA L40S datasheet (nvidia.com/en-us/data-center/l40s/, "L40S GPU for AI and Graphics
# Performance" PDF): 48 GB GDDR6 at 864 GB/s, 362.05 TFLOPS dense BF16 (733 with sparsity),
# PCIe Gen4 x16 (64 GB/s both directions), no NVLink: tensor parallelism goes over PCIe.
# nvidia-smi reports 46,068 MiB (ECC on).
L40S = Gpu(
    name="NVIDIA L40S 48GB",
    peak_flops=362.05e12,
    memory_bandwidth=864e9,
    memory_bytes=46_068 * 1024**2,
    host_bandwidth=32e9,
    link_bandwidth=32e9,
)

# NVIDIA L4 datasheet (nvidia.com/en-us/data-center/l4/): 24 GB GDDR6 at 300 GB/s, 121 TFLOPS
# dense BF16 (242 with sparsity), PCIe Gen4 x16, no NVLink. nvidia-smi reports 23,034 MiB.
L4 = Gpu(
    name="NVIDIA L4 24GB",
    peak_flops=121e12,
    memory_bandwidth=300e9,
    memory_bytes=23_034 * 1024**2,
    host_bandwidth=32e9,
    link_bandwidth=32e9,
)

# Llama 3.1 (meta-llama/Llama-3.1-8B and -70B config.json): the Llama 3 shapes with RoPE
# scaling to a 131,072-token context.
LLAMA_3_1_8B = dataclasses.replace(LLAMA_3_8B, name="Llama-3.1-8B", max_position_embeddings=131_072)
LLAMA_3_1_70B = dataclasses.replace(
    LLAMA_3_70B, name="Llama-3.1-70B", max_position_embeddings=131_072
)

GPUS: Mapping[str, Gpu] = types.MappingProxyType(
    {"h100-sxm": H100_SXM, "h200": H200, "a100-80gb": A100_80GB, "l40s": L40S, "l4": L4}
)
MODELS: Mapping[str, Model] = types.MappingProxyType(
    {
        "llama-3-8b": LLAMA_3_8B,
        "llama-3-70b": LLAMA_3_70B,
        "llama-3.1-8b": LLAMA_3_1_8B,
        "llama-3.1-70b": LLAMA_3_1_70B,
    }
)
# The step-time efficiencies per GPU, all in this one place. The defaults were calibrated on
# an H100 (docs/engine-twin.md); the H200's bandwidth share was measured on a real H200
# (benchmarks/results/gpu_calibrate_h200.json): short-context decode reaches 0.62-0.68 of its
# 4.8 TB/s where the H100 reaches 0.67-0.72 of its 3.35, so the H100's 0.8 scaled by that ratio;
# prefill's MFU (0.51-0.58) is the H100's. The other GPUs use the defaults until measured.
EFFICIENCY: Mapping[str, Efficiency] = types.MappingProxyType(
    {
        "h100-sxm": Efficiency(),
        "h200": Efficiency(bandwidth_utilization=0.75),
        "a100-80gb": Efficiency(),
        "l40s": Efficiency(),
        "l4": Efficiency(),
    }
)
# vLLM's --kv-cache-dtype: "auto" stores K and V in the model's dtype (BF16), "fp8" in one byte.
KV_CACHE_DTYPES: Mapping[str, int | None] = types.MappingProxyType({"auto": None, "fp8": 1})
CPU_CALIBRATED = "cpu-calibrated"


def cpu_tiny_llama() -> Profile:
    """The tiny model on vLLM's CPU build, with the step time measured on it (`calibration`)."""
    return Profile(
        gpu=CPU_LOCAL,
        model=TINY_LLAMA,
        kv_cache_dtype_bytes=4,
        non_kv_reserve_bytes=0,
        step_model=LinearStepTime(
            per_step_s=calibration.PER_STEP_S,
            per_token_s=calibration.PER_TOKEN_S,
            per_seq_s=calibration.PER_SEQ_S,
            per_attention_pair_s=calibration.PER_ATTENTION_PAIR_S,
        ),
    )


def get(
    gpu: str, model: str, tensor_parallel_size: int = 1, kv_cache_dtype: str = "auto"
) -> Profile:
    """A profile by names (`GPUS`, `MODELS` and `KV_CACHE_DTYPES` keys, or `cpu-calibrated`
    with `tiny-llama`), with a clear error for unknown ones."""
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(
            f"kv_cache_dtype = {kv_cache_dtype!r}, must be one of {[*KV_CACHE_DTYPES]}"
        )
    if gpu == CPU_CALIBRATED:
        if model != "tiny-llama":
            raise ValueError(
                f"model = {model!r}: gpu {CPU_CALIBRATED!r} is measured for 'tiny-llama' only"
            )
        if tensor_parallel_size != 1:
            raise ValueError(
                f"tensor_parallel_size = {tensor_parallel_size}, must be 1 on {CPU_CALIBRATED!r}"
            )
        if kv_cache_dtype != "auto":
            raise ValueError(f"kv_cache_dtype = {kv_cache_dtype!r}, must be auto on {gpu!r}")
        return cpu_tiny_llama()
    if gpu not in GPUS:
        raise ValueError(f"gpu = {gpu!r}, must be one of {[*sorted(GPUS), CPU_CALIBRATED]}")
    if model not in MODELS:
        raise ValueError(f"model = {model!r}, must be one of {sorted(MODELS)}")
    chosen = MODELS[model]
    kv_bytes = KV_CACHE_DTYPES[kv_cache_dtype]
    return Profile(
        gpu=GPUS[gpu],
        model=chosen,
        tensor_parallel_size=tensor_parallel_size,
        kv_cache_dtype_bytes=chosen.dtype_bytes if kv_bytes is None else kv_bytes,
        efficiency=EFFICIENCY[gpu],
    )
