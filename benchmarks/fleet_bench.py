"""Chaos scenario 8 (issue 14): a fleet of InferenceDeployments with twin engines under one
operator.

    .venv/bin/python benchmarks/fleet_bench.py                  # 16 deployments, 120 s window
    .venv/bin/python benchmarks/fleet_bench.py --count 50 --window 60   # on a node of 6+ cores

What runs. A local cluster of its own (etcd, kube-apiserver, controllers, scheduler, and one
real node: kubelet, containerd, runc, with the kvscale and engine-twin images), the CRD, ONE
`kvscale operator` process under the Helm chart's ServiceAccount and RBAC (leader election on,
as the chart runs it), then `--count` InferenceDeployments applied in batches, each one twin
engine pod (engine twin + the real sidecar, 64 KV blocks, `gpusPerReplica: 0` so the fleet is
not bounded by the fake GPUs; tests/support/census.py). Every pod asks for 100m of CPU (50m
for the twin, 50m for the sidecar) and the real node offers this machine's cores, so a fleet
larger than the node's allocatable CPU, less one pod's worth, is refused before anything starts
(19 fit the 2-core development machine; the default is 16). Once every pod is ready and every
deployment says MetricsAvailable=True, a light load (one 200-token prompt / 20 tokens out at a
time) goes to every `--loaded-every`th deployment, and the window starts.

What is measured over the window (census.py says how): the operator's tick duration p50/p99
from its own histogram, ticks per second against the number the ticks ask (one per deployment
per second), the API requests the operator made (the API server's flow-control count for the
operator's flow schema) and the API server's whole request rate, the operator's RSS (peak,
end) and CPU seconds, every deployment's MetricsAvailable polled every 5 s, tick errors, and
tracebacks in the operator's log. Prints one JSON line and writes
benchmarks/results/fleet_bench.json and .md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.* (the census, the operator process, the chart's RBAC)

from tests.integration import chartrbac, realnode  # noqa: E402
from tests.integration.autoscale_story import Load  # noqa: E402
from tests.integration.conftest import Operator  # noqa: E402
from tests.support import census, wait  # noqa: E402

from kvscale.api import crd  # noqa: E402
from kvscale.localstack import cluster as local  # noqa: E402

NAMESPACE = "fleet"


def run(
    count: int,
    window_s: float,
    loaded_every: int,
    batch: int,
    state_dir: pathlib.Path,
    sidecar_poll_s: float | None = None,
) -> dict[str, object]:
    started = time.monotonic()
    with realnode.cluster_with_images(state_dir / "cluster", 2, "fb") as cluster:
        check_fits(cluster, count)
        return _measure(
            cluster, count, window_s, loaded_every, batch, state_dir, sidecar_poll_s, started
        )


def check_fits(cluster: local.Cluster, count: int) -> None:
    """Refuse a fleet whose CPU requests exceed the node's allocatable CPU: its last pods would
    stay Pending and the run would measure a smaller fleet than it says."""
    node = json.loads(cluster.kubectl("get", "node", cluster.node.node_name, "-o", "json").stdout)
    allocatable_m = millicores(node["status"]["allocatable"]["cpu"])
    needed_m = count * census.POD_CPU_REQUEST_M
    # kube-proxy and the node's own pods ask for nothing; leave a pod's worth of room anyway.
    if needed_m > allocatable_m - census.POD_CPU_REQUEST_M:
        raise SystemExit(
            f"fleet_bench: {count} deployments ask for {needed_m}m of CPU; the node offers "
            f"{allocatable_m}m (this machine's cores), so at most "
            f"{allocatable_m // census.POD_CPU_REQUEST_M - 1} fit"
        )


def millicores(cpu: str) -> int:
    """A CPU quantity as the API server writes a node's ("2", "1950m") in millicores."""
    return int(cpu.removesuffix("m")) if cpu.endswith("m") else int(float(cpu) * 1000)


def _measure(
    cluster: local.Cluster,
    count: int,
    window_s: float,
    loaded_every: int,
    batch: int,
    state_dir: pathlib.Path,
    sidecar_poll_s: float | None,
    started: float,
) -> dict[str, object]:
    operator: Operator | None = None
    load: Load | None = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / crd.YAML_PATH))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}")
        kubeconfig, args = chartrbac.credentials(cluster, state_dir)
        operator = Operator(
            cluster, state_dir / "operator.log", kubeconfig=kubeconfig, extra_args=args
        )
        operator.start()
        assert operator.process is not None
        cluster.kubectl("create", "namespace", NAMESPACE)
        names = [census.name(index) for index in range(count)]
        applied = time.monotonic()
        # In batches, each waited for: 50 engine pods (100 Python processes) starting at once
        # saturate a 2-core machine for minutes (see docs/reliability.md, scenario 8).
        for first in range(0, count, batch):
            census.apply_fleet(cluster, NAMESPACE, min(batch, count - first), first, sidecar_poll_s)
            wanted = min(first + batch, count)

            def ready(wanted: int = wanted) -> dict[str, str] | None:
                found = census.ready_ips(cluster, NAMESPACE)
                return found if len(found) == wanted else None

            ips = wait.eventually(
                ready,
                f"{wanted} ready engine pods",
                timeout_s=600,
                interval_s=2,
            )
        ready_s = time.monotonic() - applied
        wait.eventually(
            lambda: set(census.metrics_available(cluster, NAMESPACE).values()) == {"True"},
            "MetricsAvailable=True on every deployment",
            timeout_s=300,
            interval_s=2,
        )
        reporting_s = time.monotonic() - applied
        print(
            f"{count} pods ready {ready_s:.1f} s after the apply, "
            f"all reporting at {reporting_s:.1f} s"
        )
        loaded = names[::loaded_every]
        body = {"model": census.MODEL, "prompt": [7] * 200, "max_tokens": 20}
        load = Load(body, census.ENGINE_PORT, len(loaded))
        load.targets = [ips[item] for item in loaded]
        load.start()
        window = census.watch(
            cluster,
            NAMESPACE,
            names,
            operator.process.pid,
            operator.metrics_port,
            window_s,
            clock=time.monotonic,
            sleep=time.sleep,
        )
        load.stop()
        ticks = window.ticks()
        figures: dict[str, object] = {
            **window.figures(),
            "ticks_asked_per_s": count,  # one tick per deployment per second (tickSeconds 1)
            "deployments_not_ticking": sorted(item for item, value in ticks.items() if value <= 0),
            "metrics_unavailable": window.not_available[:20],
            "loaded_deployments": len(loaded),
            "load_completions": load.completed,
            "load_failures": load.failed,
            "pods_ready_after_apply_s": round(ready_s, 1),
            "all_reporting_after_apply_s": round(reporting_s, 1),
        }
        statuses = census.list_json(cluster, NAMESPACE, "infd")
        figures["status_written"] = sum(
            1
            for item in statuses
            if (item.get("status") or {}).get("desiredReplicas") == 1
            and (census.condition(item, "MetricsAvailable") or {}).get("status") == "True"
        )
        code = operator.stop()
        log = operator.log()
        figures["operator_exit_code"] = code
        figures["operator_tracebacks"] = log.count("Traceback")
        figures["rbac_denials"] = len(chartrbac.denials(log))
        figures["total_run_s"] = round(time.monotonic() - started, 1)
        return figures
    finally:
        if load is not None:
            load.stop()
        if operator is not None:
            operator.stop()


def markdown(figures: dict[str, object], command: str) -> str:
    lines = [
        "# fleet_bench: InferenceDeployments with twin engines under one operator",
        "",
        f"`{command}`",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in figures.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", type=int, default=16, help="InferenceDeployments (16; 2 cores hold 19)"
    )
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured (120)")
    parser.add_argument(
        "--loaded-every", type=int, default=4, help="load every Nth deployment (4: 4 of 16)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=8,
        help="deployments applied at a time, each batch's pods "
        "waited for (8; --batch 16 applies all at once)",
    )
    parser.add_argument(
        "--sidecar-poll",
        type=float,
        default=1.0,
        help="seconds between a sidecar's reads of its engine (1.0; the CRD's default is "
        "0.25). The operator reads each sidecar once a tick whatever this is; at 0.25 s the "
        "50 sidecars' 200 reads a second starved this 2-core machine's API server",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    options = parser.parse_args(argv)
    # Kept afterwards: the operator's log is there.
    directory = tempfile.mkdtemp(prefix="fleet-bench-")
    print(f"state and the operator's log: {directory}")
    figures = run(
        options.count,
        options.window,
        options.loaded_every,
        options.batch,
        pathlib.Path(directory),
        options.sidecar_poll,
    )
    print(json.dumps(figures))
    out = pathlib.Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/fleet_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "fleet_bench.json").write_text(
        json.dumps({"command": command.strip(), "figures": figures}, indent=2) + "\n"
    )
    (out / "fleet_bench.md").write_text(markdown(figures, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
