"""Calibrate the engine twin's step-time model against a real GPU (needs CUDA and PyTorch).

Times a Llama-3-8B-shaped decoder (32 layers, hidden 4096, 32 query and 8 KV heads of 128,
gated MLP of 14336, lm_head of 128256; random BF16 weights) on one GPU:

- prefill of 512 and 2048 tokens (batch 1, eager, causal attention), and
- decode of one token at batch 1, 32 and 128 over a KV length of 1024 (CUDA graphs, as vLLM
  uses for decode),

and prints, beside each, what `kvscale.twin.profile` models for the same batch shape on an
H100 SXM (its GPU time, without the per-step engine overhead, since this runs no scheduler or
sampler), and the efficiencies the measurement implies (MFU for prefill, HBM bandwidth
utilization for decode). Not a vLLM measurement: no paged attention, no RoPE, no sampling.

    PYTHONPATH=src python3 benchmarks/gpu_calibrate.py [--out calibration.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from kvscale.twin import profile

MODEL = profile.LLAMA_3_8B
LAYERS = MODEL.num_layers
HIDDEN = MODEL.hidden_size
HEADS = MODEL.num_attention_heads
KV_HEADS = MODEL.num_kv_heads
HEAD_DIM = MODEL.head_dim
FFN = MODEL.intermediate_size
VOCAB = MODEL.vocab_size
Q_DIM = HEADS * HEAD_DIM
KV_DIM = KV_HEADS * HEAD_DIM
GROUP = HEADS // KV_HEADS
DTYPE = torch.bfloat16


class Weights:
    """Random weights of the decoder, laid out as F.linear expects ([out, in])."""

    def __init__(self, device: torch.device) -> None:
        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, device=device, dtype=DTYPE) * 0.02

        self.embedding = rand(VOCAB, HIDDEN)
        self.layers = [
            {
                "norm1": torch.ones(HIDDEN, device=device, dtype=DTYPE),
                "wqkv": rand(Q_DIM + 2 * KV_DIM, HIDDEN),
                "wo": rand(HIDDEN, Q_DIM),
                "norm2": torch.ones(HIDDEN, device=device, dtype=DTYPE),
                "w13": rand(2 * FFN, HIDDEN),
                "w2": rand(HIDDEN, FFN),
            }
            for _ in range(LAYERS)
        ]
        self.norm = torch.ones(HIDDEN, device=device, dtype=DTYPE)
        self.lm_head = rand(VOCAB, HIDDEN)


def mlp(x: torch.Tensor, layer: dict[str, torch.Tensor]) -> torch.Tensor:
    h = F.rms_norm(x, (HIDDEN,), layer["norm2"])
    gate, up = F.linear(h, layer["w13"]).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, layer["w2"])


def prefill(w: Weights, tokens: torch.Tensor, caches: list[torch.Tensor]) -> torch.Tensor:
    """One prompt of T tokens: writes its KV into `caches` ([2, KV_HEADS, T, HEAD_DIM])."""
    count = tokens.shape[0]
    x = w.embedding[tokens]
    for layer, cache in zip(w.layers, caches, strict=True):
        h = F.rms_norm(x, (HIDDEN,), layer["norm1"])
        q, k, v = F.linear(h, layer["wqkv"]).split([Q_DIM, KV_DIM, KV_DIM], dim=-1)
        q = q.view(count, HEADS, HEAD_DIM).transpose(0, 1)
        k = k.view(count, KV_HEADS, HEAD_DIM).transpose(0, 1)
        v = v.view(count, KV_HEADS, HEAD_DIM).transpose(0, 1)
        cache[0, :, :count].copy_(k)
        cache[1, :, :count].copy_(v)
        # Expanded to all query heads so the fused (flash) kernel runs: a small copy.
        k_all = k.repeat_interleave(GROUP, dim=0)
        v_all = v.repeat_interleave(GROUP, dim=0)
        o = F.scaled_dot_product_attention(
            q.unsqueeze(0), k_all.unsqueeze(0), v_all.unsqueeze(0), is_causal=True
        )
        x = x + F.linear(o.squeeze(0).transpose(0, 1).reshape(count, Q_DIM), layer["wo"])
        x = mlp(x, layer)
    last = F.rms_norm(x[-1:], (HIDDEN,), w.norm)
    return F.linear(last, w.lm_head)


def decode(
    w: Weights, tokens: torch.Tensor, caches: list[torch.Tensor], position: int, attention: str
) -> torch.Tensor:
    """One new token for each of B sequences whose KV fills `position` slots of `caches`.

    Caches are [2, B, KV_HEADS, position + 1, HEAD_DIM]. `attention`: "sdpa" (PyTorch's fused
    kernel with grouped-query heads), "matmul" (each query head group against its KV head by
    batched matmuls; K and V are read once) or "none" (skipped: the weights' share alone).
    """
    batch = tokens.shape[0]
    x = w.embedding[tokens]
    for layer, cache in zip(w.layers, caches, strict=True):
        h = F.rms_norm(x, (HIDDEN,), layer["norm1"])
        q, k, v = F.linear(h, layer["wqkv"]).split([Q_DIM, KV_DIM, KV_DIM], dim=-1)
        cache[0, :, :, position].copy_(k.view(batch, KV_HEADS, HEAD_DIM))
        cache[1, :, :, position].copy_(v.view(batch, KV_HEADS, HEAD_DIM))
        if attention == "sdpa":
            o = F.scaled_dot_product_attention(
                q.view(batch, HEADS, 1, HEAD_DIM), cache[0], cache[1], enable_gqa=True
            )
        elif attention == "matmul":
            grouped = q.view(batch, KV_HEADS, GROUP, HEAD_DIM)
            scores = torch.matmul(grouped, cache[0].transpose(-1, -2)) * HEAD_DIM**-0.5
            o = torch.matmul(torch.softmax(scores.float(), dim=-1).to(DTYPE), cache[1])
        else:
            o = q
        x = x + F.linear(o.reshape(batch, Q_DIM), layer["wo"])
        x = mlp(x, layer)
    return F.linear(F.rms_norm(x, (HIDDEN,), w.norm), w.lm_head)


def time_ms(run: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def measure_prefill(w: Weights, count: int, device: torch.device) -> float:
    tokens = torch.randint(0, VOCAB, (count,), device=device)
    caches = [
        torch.empty(2, KV_HEADS, count, HEAD_DIM, device=device, dtype=DTYPE) for _ in range(LAYERS)
    ]
    for _ in range(3):
        prefill(w, tokens, caches)
    torch.cuda.synchronize()
    return statistics.median(time_ms(lambda: prefill(w, tokens, caches), 10))


def measure_decode(
    w: Weights, batch: int, context: int, device: torch.device, attention: str
) -> float:
    tokens = torch.randint(0, VOCAB, (batch,), device=device)
    caches = [
        torch.randn(2, batch, KV_HEADS, context + 1, HEAD_DIM, device=device, dtype=DTYPE)
        for _ in range(LAYERS)
    ]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            decode(w, tokens, caches, context, attention)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        decode(w, tokens, caches, context, attention)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    result = statistics.median(time_ms(graph.replay, 20))
    del graph, caches
    torch.cuda.empty_cache()
    return result


def hardware_probe(device: torch.device) -> dict[str, float]:
    """What this GPU reaches on plain work: a large copy and a large BF16 matmul."""
    src = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = statistics.median(time_ms(lambda: dst.copy_(src), 10))
    a = torch.randn(8192, 8192, device=device, dtype=DTYPE)
    b = torch.randn(8192, 8192, device=device, dtype=DTYPE)
    for _ in range(3):
        a @ b
    mm_ms = statistics.median(time_ms(lambda: a @ b, 10))
    return {
        "copy_read_plus_write_bytes_per_s": 2 * 2 * 1024**3 / (copy_ms / 1e3),
        "matmul_8192_bf16_flops_per_s": 2 * 8192**3 / (mm_ms / 1e3),
    }


def nvidia_smi_total_mib() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        return f"nvidia-smi unavailable: {exc}"
    return out.stdout.strip()


def modelled(p: profile.Profile, tokens: int, seqs: int, pairs: int, kv: int) -> dict[str, float]:
    """The twin's prediction for one batch shape: its step, its GPU-only part, the floor."""
    flops, memory_bytes = p.work(tokens, seqs, pairs, kv)
    step = p.step_time(tokens, seqs, pairs, kv)
    floor = max(flops / p.gpu.peak_flops, memory_bytes / p.gpu.memory_bandwidth)
    return {
        "flops": flops,
        "bytes": memory_bytes,
        "model_step_ms": step * 1e3,
        "model_gpu_ms": (step - p.efficiency.step_overhead_s) * 1e3,
        "roofline_floor_ms": floor * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--context", type=int, default=1024, help="KV length for decode")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_calibrate: no CUDA device; run it on a machine with an NVIDIA GPU", file=sys.stderr
        )
        return 2
    device = torch.device("cuda")
    twin = profile.get("h100-sxm", "llama-3-8b")
    props = torch.cuda.get_device_properties(device)
    report: dict[str, Any] = {
        "device": props.name,
        "torch_total_memory_bytes": props.total_memory,
        "nvidia_smi": nvidia_smi_total_mib(),
        "torch": torch.__version__,
        "hardware": hardware_probe(device),  # its buffers are freed on return
        "rows": [],
    }
    torch.cuda.empty_cache()
    with torch.inference_mode():
        weights = Weights(device)
        context = args.context
        # (kind, size): a prefill of `size` tokens, or a decode step at batch `size`.
        cases = [("prefill", 512), ("prefill", 2048)] + [
            (attention, batch) for attention in ("sdpa", "matmul", "none") for batch in (1, 32, 128)
        ]
        for kind, size in cases:
            if kind == "prefill":
                name = f"prefill {size}"
                shape = (size, 1, size * (size + 1) // 2, size)
                measured_ms = measure_prefill(weights, size, device)
            else:
                name = f"decode b={size} kv={context} {kind}"
                kv = 0 if kind == "none" else size * (context + 1)
                shape = (size, size, kv, kv)
                measured_ms = measure_decode(weights, size, context, device, kind)
            row: dict[str, Any] = {
                "case": name,
                "measured_ms": measured_ms,
                **modelled(twin, *shape),
            }
            seconds = measured_ms / 1e3
            row["implied_mfu"] = row["flops"] / seconds / twin.gpu.peak_flops
            row["implied_bandwidth_utilization"] = (
                row["bytes"] / seconds / twin.gpu.memory_bandwidth
            )
            report["rows"].append(row)
            print(
                f"{name:32s} measured {measured_ms:8.2f} ms  model(gpu) {row['model_gpu_ms']:8.2f}"
                f" ms  model(step) {row['model_step_ms']:8.2f} ms"
                f"  floor {row['roofline_floor_ms']:7.2f} ms"
                f"  mfu {row['implied_mfu']:.2f}  bw {row['implied_bandwidth_utilization']:.2f}",
                flush=True,
            )
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
