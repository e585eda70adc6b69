"""The `kvscale simulate` flags. Pure, and cheap to import (the CLI builds its parser with it)."""

from __future__ import annotations

import argparse

POLICIES = (
    "kvscale",
    "kvscale-slo",
    "hpa-cpu",
    "keda-waiting",
    "knative-concurrency",
    "llmd-saturation",
    "dynamo-reactive",
    "hpa-cpu-busy",
    "static-peak",
    "oracle",
)
GPUS = {"h100": "h100-sxm", "h200": "h200", "a100": "a100-80gb", "l40s": "l40s", "l4": "l4"}
MODELS = ("llama-3-8b", "llama-3-70b", "llama-3.1-8b", "llama-3.1-70b")
KV_CACHE_DTYPES = ("auto", "fp8")
DEFAULT_MAX_CUT = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace",
        required=True,
        help="'conv' or 'code' (the Azure traces shipped with kvscale), 'mooncake' (the "
        "Mooncake FAST'25 synthetic trace, long contexts) or a .csv/.jsonl path",
    )
    parser.add_argument(
        "--policy",
        action="append",
        choices=[*POLICIES, "static", "all"],
        help="policy to run; repeat for several; 'all' runs every one (default: all); "
        "oracle and static-peak are planned at one pod's measured SLO capacity (the load "
        "test of --calibrate, run for them when not asked for)",
    )
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    parser.add_argument("--model", choices=MODELS, default="llama-3-8b")
    parser.add_argument(
        "--tensor-parallel", type=int, default=1, help="GPUs per pod (default: %(default)s)"
    )
    parser.add_argument(
        "--kv-cache-dtype",
        choices=KV_CACHE_DTYPES,
        default="auto",
        help="vLLM's --kv-cache-dtype: auto (the model's BF16) or fp8 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="the engines' context in tokens (default: the model's max_position_embeddings: "
        "8192 for llama-3-*, 131072 for llama-3.1-*)",
    )
    parser.add_argument(
        "--max-cut",
        type=float,
        default=DEFAULT_MAX_CUT,
        help="refuse to run when more than this share of the requests is longer than the "
        "context and would be cut to fit it (default: %(default)s; 1 accepts any)",
    )
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=16)
    parser.add_argument(
        "--initial-replicas", type=int, default=None, help="pods ready at t=0 (default: min)"
    )
    parser.add_argument(
        "--startup-delay",
        type=float,
        default=60.0,
        help="seconds from asking for a pod to it serving (default: %(default)s)",
    )
    parser.add_argument(
        "--slo-ttft", type=float, default=2.0, help="TTFT target, seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--slo-itl",
        type=float,
        default=0.1,
        help="mean inter-token latency target, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="replay only the first SECONDS of the trace"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="compress time by this factor: 2 replays an hour in 30 minutes (default: 1)",
    )
    parser.add_argument(
        "--load-scale",
        type=int,
        default=1,
        help="N copies of every request, spread over 60 s: N times the load, same shape "
        "(default: 1)",
    )
    parser.add_argument(
        "--token-scale",
        type=float,
        default=1.0,
        help="prompt and output tokens times this factor, clamped to 131072 (a long-context "
        "version of a short trace; prefix hashes are dropped) (default: 1)",
    )
    parser.add_argument(
        "--amplify-prefixes",
        choices=("separate", "shared"),
        default="separate",
        help="with --load-scale: each copy gets its own prefix-hash namespace (separate: N "
        "populations of users) or keeps the original's (shared: N users sending the same "
        "prefixes) (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a policy setting: kvscale's spec.scaling keys (targetOccupancy=0.5), or "
        "hpa.KEY, keda.KEY, knative.KEY for the baselines (hpa.targetUtilization=70, "
        "hpa.maxTokensPerSecond=24000, keda.threshold=5, knative.target=80)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="load-test one pod on the trace's mix first and set every policy's per-pod "
        "target to its signal at 70%% of the pod's SLO capacity (kvscale: "
        "targetTokensPerSecond beside the default targetOccupancy; --set still wins)",
    )
    parser.add_argument(
        "--calibrate-requests",
        type=int,
        default=2000,
        help="requests of the trace's mix in the load test (default: %(default)s)",
    )
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run a changed configuration and print the difference in GPU-hours at the "
        "SLO: gpu=h200, kv-cache-dtype=fp8, max-model-len=32768, model=..., "
        "tensor-parallel=... (repeat to change several at once)",
    )
    parser.add_argument(
        "--fault-missing",
        type=float,
        default=0.0,
        help="kvscale: probability that a pod's report is missing at a tick",
    )
    parser.add_argument(
        "--fault-stale",
        type=float,
        default=0.0,
        help="kvscale: probability that a pod's report is stale at a tick",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection")
    parser.add_argument("--plot", default=None, metavar="PNG", help="write the timeline plot")
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="write the results as JSON ('-': stdout)"
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="draw the progress bar even when stderr is not a terminal",
    )
