"""The `kvscale simulate` flags. Pure, and cheap to import (the CLI builds its parser with it)."""

from __future__ import annotations

import argparse

POLICIES = ("kvscale", "hpa-cpu", "keda-waiting", "knative-concurrency")
GPUS = {"h100": "h100-sxm", "a100": "a100-80gb"}
MODELS = ("llama-3-8b", "llama-3-70b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace",
        required=True,
        help="'conv' or 'code' (the Azure traces shipped with kvscale) or a .csv/.jsonl path",
    )
    parser.add_argument(
        "--policy",
        action="append",
        choices=[*POLICIES, "static", "all"],
        help="policy to run; repeat for several; 'all' runs the four (default: all)",
    )
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    parser.add_argument("--model", choices=MODELS, default="llama-3-8b")
    parser.add_argument(
        "--tensor-parallel", type=int, default=1, help="GPUs per pod (default: %(default)s)"
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
