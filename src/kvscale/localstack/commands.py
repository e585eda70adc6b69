"""`kvscale cluster up|down|status|load-image`: the local cluster from the command line.

A thin shell over `cluster`: parses nothing itself (the CLI's argparse does), prints to stdout,
errors to stderr, and returns the exit code. Does I/O.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from kvscale.localstack import binaries, node, paths
from kvscale.localstack import cluster as local


def _say(line: str) -> None:
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # The reader went away (`kvscale cluster up | head`); the cluster must not go with it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _error(message: str) -> int:
    print(f"kvscale cluster: {message}", file=sys.stderr, flush=True)
    return 1


def _describe(handle: local.Cluster) -> None:
    kubectl = paths.tools_bin() / "kubectl"
    kubelet = handle.processes.get(node.KUBELET)
    if kubelet is not None:
        plan = handle.node
        nodes = (
            f"{plan.node_name}: kubelet pid {kubelet.pid}, {plan.gpus} nvidia.com/gpu, "
            f"network namespace {plan.netns} (node {plan.addresses.node_ip}, host end "
            f"{plan.addresses.host_ip} on {plan.veth_host})"
        )
    else:
        nodes = f"none (runtime {handle.runtime!r}): the control plane alone"
    _say(f"  API server   {handle.server} (Kubernetes {binaries.KUBE_VERSION})")
    _say(f"  pod range    {handle.pod_cidr}")
    _say(f"  nodes        {nodes}")
    _say(f"  state        {handle.state_dir} (logs in {handle.files.logs_dir})")
    _say(f"  kubeconfig   {handle.kubeconfig}")
    _say("")
    _say(f"  export KUBECONFIG={handle.kubeconfig}")
    _say(f"  {kubectl} get nodes,pods -A")


def _up(args: argparse.Namespace) -> int:
    try:
        settings = local.Settings(
            name=args.name,
            state_dir=paths.cluster_state_dir(args.name),
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            runtime=getattr(args, "runtime", local.KUBELET_RUNTIME),
        )
    except ValueError as exc:
        return _error(str(exc))
    _say(f"starting cluster {settings.name!r} in {settings.state_dir}")
    try:
        handle = local.start(settings, progress=_say)
    except local.AlreadyRunningError as exc:
        _say(f"cluster {exc.cluster.name!r} is already running (started {exc.cluster.started_at})")
        _describe(exc.cluster)
        return 0
    except (local.ClusterError, binaries.BinariesError, OSError) as exc:
        return _error(str(exc))
    _say(f"cluster {handle.name!r} is up; start took {handle.timings['total']:.1f}s")
    _describe(handle)
    return 0


def _down(args: argparse.Namespace) -> int:
    try:
        state_dir = paths.cluster_state_dir(args.name)
        outcomes = local.stop(state_dir, progress=_say)
    except (ValueError, OSError, local.ClusterError) as exc:
        return _error(str(exc))
    if not outcomes:
        _say(f"cluster {args.name!r} is not running; nothing to stop")
    else:
        _say(f"cluster {args.name!r} is down; nothing of it is left running")
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        state_dir = paths.cluster_state_dir(args.name)
        handle = local.load(state_dir)
    except (ValueError, local.ClusterError) as exc:
        return _error(str(exc))
    if handle is None:
        _say(f"cluster {args.name!r} is not running (no state in {state_dir})")
        return 1
    report = handle.health()
    _say(f"cluster {handle.name!r} (started {handle.started_at}, {handle.server})")
    for line in report:
        state = "healthy" if line.healthy else ("UNHEALTHY" if line.running else "DOWN")
        _say(f"  {line.component:<24} pid {line.pid:<8} {state:<10} {line.detail}")
    if all(line.healthy for line in report):
        _say(f"  export KUBECONFIG={handle.kubeconfig}")
        return 0
    _say(f"  logs: {handle.files.logs_dir}")
    return 1


def _load_image(args: argparse.Namespace) -> int:
    archives = [pathlib.Path(path) for path in getattr(args, "archives", [])]
    if not archives:
        return _error("load-image: name one or more image archives (OCI or docker-archive tar)")
    try:
        handle = local.load(paths.cluster_state_dir(args.name))
        if handle is None:
            return _error(f"cluster {args.name!r} is not running: `kvscale cluster up` first")
        local.load_images(handle, archives)
    except (ValueError, OSError, local.ClusterError) as exc:
        return _error(str(exc))
    for archive in archives:
        _say(f"loaded {archive} into the node of cluster {handle.name!r}")
    return 0


def cluster(args: argparse.Namespace) -> int:
    """Run `kvscale cluster <action>`; returns the exit code."""
    actions = {"up": _up, "down": _down, "status": _status, "load-image": _load_image}
    action = actions.get(args.action)
    if action is None:
        return _error(f"action = {args.action!r}: must be one of {', '.join(actions)}")
    return action(args)
