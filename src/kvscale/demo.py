"""`kvscale demo` (what `make demo` runs): the whole product on one machine, with real parts.

Steps, each printed as it happens:
  1. the real local control plane (etcd, kube-apiserver, kube-controller-manager,
     kube-scheduler) and the local node agent, built and cached on first use;
  2. the InferenceDeployment CRD, installed with kubectl;
  3. the operator (`kvscale operator`), as its own process;
  4. `kubectl apply -f examples/tiny-llama.yaml`: the operator renders a Deployment whose pod
     runs real vLLM (CPU build) serving the tiny model, with the occupancy sidecar beside it;
  5. a completion request to the engine pod, and the objects as kubectl shows them.
At the end everything is stopped (with `--keep`: after Ctrl-C). Does I/O.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from kvscale.localstack import binaries, engine_env, paths
from kvscale.localstack import cluster as local

CLUSTER_NAME = "demo"
EXAMPLE = "examples/tiny-llama.yaml"
CRD = "crds/inferencedeployments.kvscale.dev.yaml"
READY_TIMEOUT_S = 600.0


def _say(line: str = "") -> None:
    print(line, flush=True)


def _step(title: str) -> None:
    _say()
    _say(f"== {title}")


def _repo() -> pathlib.Path:
    root = paths.repo_root()
    if root is None:
        raise SystemExit("kvscale demo needs a source checkout (crds/ and examples/)")
    return root


@contextlib.contextmanager
def _operator(handle: local.Cluster) -> Iterator[pathlib.Path]:
    """Run `kvscale operator` against the cluster for the duration of the block."""
    log_path = handle.files.logs_dir / "operator.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kvscale.cli",
                "operator",
                "--kubeconfig",
                str(handle.kubeconfig),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=handle.env(),
            start_new_session=True,
        )
    try:
        yield log_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _get_json(handle: local.Cluster, *args: str) -> Any:
    return json.loads(handle.kubectl("get", *args, "-o", "json").stdout)


def _ready_condition(infd: dict[str, Any]) -> dict[str, Any] | None:
    for condition in infd.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return dict(condition)
    return None


def _pod_line(pod: dict[str, Any]) -> str:
    status = pod.get("status", {})
    ready = [c for c in status.get("containerStatuses", []) if c.get("ready")]
    total = len(pod.get("spec", {}).get("containers", []))
    return (
        f"{pod['metadata']['name']}: {status.get('phase', '?')}, "
        f"{len(ready)}/{total} ready, ip {status.get('podIP', '-')}, "
        f"node {pod.get('spec', {}).get('nodeName', '-')}"
    )


def _wait_ready(handle: local.Cluster, name: str, operator_log: pathlib.Path) -> dict[str, Any]:
    """Print progress until the InferenceDeployment reports Ready; return its engine pod."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        infd = _get_json(handle, "infd", name)
        pods = _get_json(handle, "pods", "-l", f"kvscale.dev/inference-deployment={name}")
        ready = _ready_condition(infd)
        line = "; ".join(_pod_line(p) for p in pods["items"]) or "no pods yet"
        if ready is not None:
            line += f" | Ready={ready['status']} ({ready.get('reason', '')})"
        if line != last:
            _say(f"  [{time.strftime('%H:%M:%S')}] {line}")
            last = line
        if ready is not None and ready["status"] == "True" and pods["items"]:
            return dict(pods["items"][0])
        time.sleep(2)
    tail = operator_log.read_text(errors="replace").splitlines()[-30:]
    raise SystemExit(
        f"{name} did not become Ready in {READY_TIMEOUT_S:.0f}s; operator log tail:\n"
        + "\n".join(tail)
    )


def _complete(pod: dict[str, Any], infd: dict[str, Any]) -> str:
    ip = pod["status"]["podIP"]
    port = infd["spec"]["engine"]["port"]
    model = infd["spec"]["model"].get("servedName") or infd["spec"]["model"]["name"]
    body = json.dumps({"model": model, "prompt": "The KV cache is", "max_tokens": 16}).encode()
    request = urllib.request.Request(
        f"http://{ip}:{port}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    return str(answer["choices"][0]["text"])


def run(args: argparse.Namespace) -> int:
    repo = _repo()
    _step("1/5  build or reuse the cached control plane and vLLM environment")
    bins = binaries.ensure()
    engine_env.ensure()
    _say(f"  control plane binaries: {bins.bin_dir}")
    _say(f"  vLLM environment:       {engine_env.vllm_python()}")

    _step("2/5  start the local control plane and node agent")
    state_dir = paths.cluster_state_dir(CLUSTER_NAME)
    existing = local.load(state_dir)
    if existing is not None and local.is_running(existing):
        _say("  a demo cluster is still running from before; stopping it first")
        local.stop(state_dir)
    handle = local.start(
        local.Settings(name=CLUSTER_NAME, state_dir=state_dir),
        bins=bins,
        progress=lambda line: _say(f"  {line}"),
    )
    try:
        _say(f"  ready in {handle.timings['total']:.1f}s; export KUBECONFIG={handle.kubeconfig}")
        handle.kubectl("apply", "--server-side", "-f", str(repo / CRD))
        handle.kubectl(
            "wait", "--for=condition=Established", "crd/inferencedeployments.kvscale.dev"
        )
        _say(f"  CRD installed: {CRD}")

        _step("3/5  start the operator")
        with _operator(handle) as operator_log:
            _say(f"  kvscale operator running; log: {operator_log}")

            _step(f"4/5  kubectl apply -f {EXAMPLE}")
            _say(handle.kubectl("apply", "-f", str(repo / EXAMPLE)).stdout.rstrip())
            name = "tiny-llama"
            pod = _wait_ready(handle, name, operator_log)

            _step("5/5  the model answers, and kubectl shows what the operator made")
            infd = _get_json(handle, "infd", name)
            _say(f"  completion from {pod['status']['podIP']}: {_complete(pod, infd)!r}")
            _say(handle.kubectl("get", "infd").stdout.rstrip())
            _say(handle.kubectl("get", "deploy,svc,pdb,pods", "-o", "wide").stdout.rstrip())
            if args.keep:
                _say()
                _say(f"  export KUBECONFIG={handle.kubeconfig}   # in another shell")
                _say("  running; press Ctrl-C to stop everything")
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
    finally:
        _step("stopping the operator and the cluster")
        local.stop(state_dir)
    _say("demo finished")
    return 0
