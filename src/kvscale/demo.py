"""`kvscale demo` (what `make demo` runs): the whole product on one machine, with real parts.

Steps, each printed as it happens:
  1. the real local control plane (etcd, kube-apiserver, kube-controller-manager,
     kube-scheduler), the real node's parts (containerd, runc, CNI, kubelet, kube-proxy), the
     kvscale image and the vLLM CPU engine image, all built and cached on first use;
  2. the cluster started, with one real node in a network namespace of its own, and the images
     imported into its containerd; the InferenceDeployment CRD, installed with kubectl;
  3. the operator (`kvscale operator`), as its own process;
  4. `kubectl apply -f` examples/tiny-llama.yaml as this stack runs it (the vLLM CPU image as
     the engine, the tiny model's cache on this host as a read-only hostPath; written next to
     the plot): the operator renders a Deployment whose pod runs real vLLM serving the tiny
     model, with the occupancy sidecar beside it, both as containers under the kubelet;
  5. a completion request to the engine pod, and the objects as kubectl shows them;
  6. a slice of a production trace (`--trace`, `--trace-start`, `--duration`), scaled in time
     and tokens to the tiny engine, replayed against the ready engine pods by the load
     generator (`kvscale.loadgen`: least-loaded pod first, as an inference gateway routes),
     with a live line every 2 s (replicas, per-pod KV usage, queue, preemptions, the
     operator's last decision) while the operator scales the deployment; then a quiet period
     in which it scales back down;
  7. a summary and a timeline plot (PNG) of occupancy, replicas, queue and preemptions.
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

import yaml

from kvscale import trace, tracefile
from kvscale.loadgen import driver, plot, replayer, summary, watcher, workload
from kvscale.localstack import binaries, engine_env, paths
from kvscale.localstack import cluster as local

CLUSTER_NAME = "demo"
EXAMPLE = "examples/tiny-llama.yaml"
CRD = "crds/inferencedeployments.kvscale.dev.yaml"
READY_TIMEOUT_S = 600.0
STEPS = 7
# The tiny model's tokenizer (scripts/build_tiny_model.py): 320 ids, of which 0-2 are special.
TINY_VOCAB_SIZE = 320
# What one vLLM CPU engine of the example needs, measured (docs: LOCAL_STACK.md), and a margin
# for the control plane, the operator and this process.
# The load generator routes like an inference gateway with a saturation limit: a pod holding
# twice its KV capacity in requests (running and queued) gets no more until some finish; the
# rest wait in the generator, where a pod that becomes ready can take them.
GATEWAY_MAX_LOAD = 2.0
ENGINE_MEMORY_GIB = 2.8
BASE_MEMORY_GIB = 1.5


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


def _memory_available_gib() -> float | None:
    try:
        for row in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if row.startswith("MemAvailable:"):
                return int(row.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _capacity_tokens(spec: dict[str, Any]) -> int:
    """KV tokens one engine holds: (--num-gpu-blocks-override - 1 reserved) x block size."""
    engine = spec["engine"]
    extra = [str(arg) for arg in engine.get("extraArgs", [])]
    block_size = int(engine.get("blockSize", 16))
    flag = "--num-gpu-blocks-override"
    for index, arg in enumerate(extra):
        value = None
        if arg == flag and index + 1 < len(extra):
            value = extra[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit():
            return (int(value) - 1) * block_size
    # No fixed pool: vLLM sizes it from memory; 8 K tokens is only the router's first guess.
    return 8192


def _requests(args: argparse.Namespace, spec: dict[str, Any]) -> list[trace.TraceRequest]:
    """The trace slice the demo replays, shaped to the engine of `spec`; says what it is."""
    max_len = int(spec.get("engine", {}).get("maxModelLen") or 2048)
    max_output = max(1, max_len // 4)
    plan = workload.Plan(
        start_s=args.trace_start,
        duration_s=args.duration,
        time_factor=args.time_factor,
        token_factor=args.token_factor,
        max_prompt=max_len - max_output,
        max_output=max_output,
    )
    path = tracefile.resolve(args.trace)
    reqs = workload.requests(tracefile.load(path), plan)
    shape = workload.shape(reqs, plan.duration_s)
    _say(
        f"  trace {path.name}: {plan.trace_span_s:.0f}s of it from {plan.start_s:.0f}s, played "
        f"{plan.time_factor:g}x as fast over {plan.duration_s:.0f}s, tokens x{plan.token_factor:g} "
        f"(prompt <= {plan.max_prompt}, output <= {plan.max_output})"
    )
    _say(
        f"  {shape.count} requests, {shape.rate_per_s:.1f}/s, mean prompt "
        f"{shape.mean_prompt:.0f} and output {shape.mean_output:.0f} tokens"
    )
    return reqs


def _load(
    handle: local.Cluster,
    infd: dict[str, Any],
    reqs: list[trace.TraceRequest],
    args: argparse.Namespace,
    repo: pathlib.Path,
) -> None:
    """Steps 6 and 7: replay the trace against the engine pods, then the summary and the plot."""
    spec = infd["spec"]
    name = infd["metadata"]["name"]
    scaling = spec.get("scaling", {})
    capacity = _capacity_tokens(spec)
    _step(f"6/{STEPS}  replay the trace slice against the engine pods")
    max_replicas = int(scaling.get("maxReplicas", 4))
    _say(
        f"  one engine holds {capacity} KV tokens; the operator aims at "
        f"{float(scaling.get('targetOccupancy', 0.7)):.0%} of that per pod, between "
        f"{scaling.get('minReplicas', 1)} and {max_replicas} pods"
    )
    for row in (
        "a new engine takes about 3.5 minutes to start under the example's 400m CPU limit",
        "(vLLM compiles the model first); until it is ready, the ready pods carry the load,",
        "and the live line shows the new ones as starting",
    ):
        _say(f"  {row}")
    available = _memory_available_gib()
    needed = BASE_MEMORY_GIB + (max_replicas - 1) * ENGINE_MEMORY_GIB
    if available is not None and available < needed:
        _say(
            f"  ! only {available:.1f} GiB of memory available; {max_replicas} engines need "
            f"about {needed:.1f} GiB more than the first: added pods may fail to start"
        )
    model = spec["model"].get("servedName") or spec["model"]["name"]
    settings = driver.Settings(
        watch=watcher.Settings(
            name=name,
            namespace=infd["metadata"].get("namespace", "default"),
            sidecar_port=int(spec.get("sidecar", {}).get("port", 9090)),
        ),
        send=replayer.Settings(
            model=model, engine_port=int(spec["engine"]["port"]), vocab_size=TINY_VOCAB_SIZE
        ),
        default_capacity_tokens=capacity,
        max_load=GATEWAY_MAX_LOAD,
        min_replicas=int(scaling.get("minReplicas", 1)),
        load_s=args.duration,
        quiet_s=args.quiet,
    )
    for row in (
        "each request goes to the least-loaded ready pod; a pod holding "
        f"{GATEWAY_MAX_LOAD:g}x its KV capacity",
        "in requests gets no more until some finish: the rest are held here, as an inference",
        "gateway would hold them, for whichever pod has room first",
        "",
        "every 2 s: seconds since the load started; pods ready/desired (+starting, -leaving);",
        "KV usage per pod; requests waiting in the engines; preemptions/s; requests held here;",
        "finished; failed | the operator's demand per ready pod and its last scaling action.",
        "The operator's Events are printed as they come.",
    ):
        _say(f"  {row}".rstrip())
    result = driver.drive(handle.kubeconfig, settings, reqs, _say)

    _step(f"7/{STEPS}  summary")
    for row in summary.lines(summary.summarize(result.outcomes, result.record)):
        _say(f"  {row}")
    out = _out_dir(args, repo)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    png = plot.write(
        result.record,
        out / f"demo-{stamp}.png",
        title=(
            f"kvscale demo: {name} on real vLLM (CPU), {len(reqs)} requests from "
            f"{tracefile.resolve(args.trace).name} ({args.time_factor:g}x time, "
            f"x{args.token_factor:g} tokens)"
        ),
        load_end_s=result.load_s,
    )
    _say(f"  timeline plot: {png.resolve()}")


def _out_dir(args: argparse.Namespace, repo: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(args.out) if args.out else repo / "out"


def _local_example(repo: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """The example as this stack's node runs it (`engine_env.on_local_node`), written to `out`
    so the user can see and re-apply exactly what the demo applied."""
    local_example = engine_env.on_local_node(yaml.safe_load((repo / EXAMPLE).read_text()))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tiny-llama.local.yaml"
    path.write_text(yaml.safe_dump(local_example, sort_keys=False))
    return path


def _example_spec(repo: pathlib.Path) -> dict[str, Any]:
    document = yaml.safe_load((repo / EXAMPLE).read_text())
    return dict(document["spec"])


def run(args: argparse.Namespace) -> int:
    repo = _repo()
    _step(f"1/{STEPS}  the load, the cached control plane, the node and the images")
    if os.geteuid() != 0:
        raise SystemExit(
            "kvscale demo: the real node needs root (network namespace, cgroups, mounts)"
        )
    try:
        reqs = _requests(args, _example_spec(repo))
    except ValueError as error:  # trace.TraceError included: a missing or bad trace
        raise SystemExit(f"kvscale demo: {error}") from None
    try:
        bins = binaries.ensure()
        node_files = binaries.ensure_node()
        engine_env.ensure()  # the tiny model the engine pods read from this host
        archives = [*binaries.ensure_images().archives, binaries.ensure_engine_image()]
    except (binaries.BinariesError, engine_env.EngineEnvError) as error:
        raise SystemExit(f"kvscale demo: {error}") from None
    _say(f"  control plane binaries: {bins.bin_dir}")
    _say(f"  node binaries:          {node_files.root}")
    _say(f"  tiny model (HF cache):  {engine_env.hf_home()}")
    for archive in archives:
        _say(f"  image archive:          {archive}")

    _step(f"2/{STEPS}  start the local control plane and the real node")
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
        began = time.monotonic()
        local.load_images(handle, archives)
        _say(f"  images imported into the node's containerd in {time.monotonic() - began:.0f}s")
        handle.kubectl("apply", "--server-side", "-f", str(repo / CRD))
        handle.kubectl(
            "wait", "--for=condition=Established", "crd/inferencedeployments.kvscale.dev"
        )
        _say(f"  CRD installed: {CRD}")

        _step(f"3/{STEPS}  start the operator")
        with _operator(handle) as operator_log:
            _say(f"  kvscale operator running; log: {operator_log}")

            applied = _local_example(repo, _out_dir(args, repo))
            _step(f"4/{STEPS}  kubectl apply -f {applied}")
            _say(f"  ({EXAMPLE} with the vLLM CPU engine image and this host's model cache)")
            _say(handle.kubectl("apply", "-f", str(applied)).stdout.rstrip())
            name = "tiny-llama"
            pod = _wait_ready(handle, name, operator_log)

            _step(f"5/{STEPS}  the model answers, and kubectl shows what the operator made")
            infd = _get_json(handle, "infd", name)
            _say(f"  completion from {pod['status']['podIP']}: {_complete(pod, infd)!r}")
            _say(handle.kubectl("get", "infd").stdout.rstrip())
            _say(handle.kubectl("get", "deploy,svc,pdb,pods", "-o", "wide").stdout.rstrip())

            _load(handle, infd, reqs, args, repo)
            _say(handle.kubectl("get", "infd").stdout.rstrip())
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
