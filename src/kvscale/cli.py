"""The `kvscale` command: one entry point, one subcommand per job.

Each subcommand's implementation lives with the component it drives; this module only parses
arguments and imports the implementation lazily, so `kvscale --help` stays fast and a subcommand
never pays for another's imports.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence


def _missing_extra(extra_name: str, error: ModuleNotFoundError) -> int:
    from kvscale import extra

    print(f"kvscale: {extra.missing(extra_name, error)}", file=sys.stderr)
    return 2


def _cluster(args: argparse.Namespace) -> int:
    try:
        from kvscale.localstack import commands
    except ModuleNotFoundError as error:
        return _missing_extra("localstack", error)
    return commands.cluster(args)


def _crd(args: argparse.Namespace) -> int:
    from kvscale.api import crd

    sys.stdout.write(crd.render_reference() if args.reference else crd.render_yaml())
    return 0


def _operator(args: argparse.Namespace) -> int:
    from kvscale_operator import main as operator_main

    return operator_main.run(args)


def _demo(args: argparse.Namespace) -> int:
    try:
        from kvscale import demo
    except ModuleNotFoundError as error:
        return _missing_extra("demo", error)
    return demo.run(args)


def _sidecar(args: argparse.Namespace) -> int:
    from kvscale_sidecar import main as sidecar_main

    return sidecar_main.run(args)


def _status(args: argparse.Namespace) -> int:
    from kvscale import snapshot

    return snapshot.run(args)


def _twin(args: argparse.Namespace) -> int:
    from kvscale.twinserver import main as twin_main

    return twin_main.run(args)


def _simulate(args: argparse.Namespace) -> int:
    from kvscale.simulate import command

    return command.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvscale",
        description="Scale LLM inference on Kubernetes by live KV-cache block occupancy.",
    )
    parser.add_argument(
        "--version", action="version", version=f"kvscale {importlib.metadata.version('kvscale')}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cluster = sub.add_parser("cluster", help="a real local Kubernetes control plane")
    cluster.add_argument("action", choices=["up", "down", "status", "load-image"])
    cluster.add_argument(
        "archives", nargs="*", metavar="ARCHIVE", help="load-image: image archives to import"
    )
    cluster.add_argument("--name", default="kvscale", help="cluster name (default: %(default)s)")
    cluster.add_argument(
        "--nodes", type=int, default=2, help="GPU groups: the node has nodes x gpus-per-node GPUs"
    )
    cluster.add_argument(
        "--gpus-per-node", type=int, default=2, help="fake nvidia.com/gpu per group of --nodes"
    )
    cluster.add_argument(
        "--runtime",
        choices=["kubelet", "none"],
        default="kubelet",
        help="kubelet: one real node (containerd, runc, kubelet, kube-proxy; needs root) in its "
        "own network namespace with nodes x gpus-per-node fake GPUs; none: the control plane "
        "alone",
    )
    cluster.set_defaults(func=_cluster)

    crd = sub.add_parser("crd", help="print the InferenceDeployment CRD generated from the models")
    crd.add_argument(
        "--reference", action="store_true", help="print the Markdown field reference instead"
    )
    crd.set_defaults(func=_crd)

    op = sub.add_parser("operator", help="run the kvscale operator (kopf)")
    op.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, then in-cluster")
    op.add_argument("--namespace", action="append", default=None, help="watch only these")
    op.add_argument("--metrics-port", type=int, default=0, help="0 turns metrics off")
    op.add_argument(
        "--health-port", type=int, default=0, help="liveness endpoint /healthz; 0 turns it off"
    )
    op.add_argument(
        "--listen-host", default="0.0.0.0", help="address of the metrics and liveness endpoints"
    )
    op.add_argument("--verbose", action="store_true")
    election = op.add_argument_group(
        "leader election", "replicas compete for a coordination.k8s.io Lease; only the holder acts"
    )
    election.add_argument("--leader-elect", action="store_true", help="turn leader election on")
    election.add_argument("--leader-elect-resource-namespace", default=None, metavar="NAMESPACE")
    election.add_argument(
        "--leader-elect-resource-name", default="kvscale-operator", metavar="NAME"
    )
    election.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
    election.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    election.add_argument("--leader-elect-retry-period", type=float, default=2.0)
    op.set_defaults(func=_operator)

    demo = sub.add_parser("demo", help="the local demo: stack, operator, a model served on vLLM")
    demo.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    replay = demo.add_argument_group(
        "load", "a slice of a production trace, replayed against the engine pods"
    )
    replay.add_argument(
        "--trace",
        default="conv",
        help="trace: 'conv' or 'code' (Azure traces shipped with kvscale), 'mooncake' (the "
        "Mooncake FAST'25 synthetic trace) or a .csv/.jsonl path (default: %(default)s)",
    )
    replay.add_argument(
        "--duration", type=float, default=240.0, help="seconds of load (default: %(default)s)"
    )
    replay.add_argument(
        "--trace-start",
        type=float,
        default=30.0,
        help="where the slice begins, seconds into the trace (default: %(default)s)",
    )
    replay.add_argument(
        "--time-factor",
        type=float,
        # With --token-factor, sized for four engines under the example's 400m CPU limits on a
        # 2-core node: at 0.45 and 1.0 the 484 requests took 15.6 minutes to serve (1 engine
        # serves about 0.2 of them a second, 4 about 0.75).
        default=0.25,
        help="trace seconds per second of load: the rate multiplier (default: %(default)s)",
    )
    replay.add_argument(
        "--token-factor",
        type=float,
        default=0.5,
        help="prompt and output tokens are scaled by this, then clamped to the engine's "
        "context (default: %(default)s)",
    )
    replay.add_argument(
        "--quiet",
        type=float,
        default=180.0,
        help="after the load, wait at most this long for the scale-down (default: %(default)s)",
    )
    replay.add_argument(
        "--out", default=None, help="folder for the timeline plot (default: <checkout>/out)"
    )
    demo.set_defaults(func=_demo)

    # The sidecar's flags live with its settings (a small pure module, cheap to import).
    from kvscale_sidecar import settings as sidecar_settings

    sidecar = sub.add_parser("sidecar", help="serve an engine's KV-cache occupancy report")
    sidecar_settings.add_arguments(sidecar)
    sidecar.set_defaults(func=_sidecar)

    status = sub.add_parser(
        "status", help="per InferenceDeployment: replicas, occupancy, queue, last scaling, why"
    )
    status.add_argument("name", nargs="?", help="one InferenceDeployment (default: all)")
    status.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")
    status.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, ~/.kube/config")
    status.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for each sidecar's report"
    )
    status.set_defaults(func=_status)

    # The twin's flags are vLLM's; they live with its settings (pure, cheap to import).
    from kvscale.twinserver import settings as twin_settings

    twin = sub.add_parser(
        "twin", help="serve engine twins: vLLM's API and metrics with a modelled engine"
    )
    twin_settings.add_arguments(twin)
    twin.set_defaults(func=_twin)

    # The simulator's flags live in a small pure module, cheap to import.
    from kvscale.simulate import option as simulate_option

    simulate = sub.add_parser(
        "simulate", help="replay a request trace against a simulated fleet under each policy"
    )
    simulate_option.add_arguments(simulate)
    simulate.set_defaults(func=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
