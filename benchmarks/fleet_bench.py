"""Chaos scenario 8 (issue 14): 50 InferenceDeployments with twin engines under one operator.

    .venv/bin/python benchmarks/fleet_bench.py                  # 50 deployments, 120 s window
    .venv/bin/python benchmarks/fleet_bench.py --count 20 --window 60

What runs. A local cluster of its own (etcd, kube-apiserver, controllers, scheduler, the node
agent's 2 nodes), the CRD, ONE `kvscale operator` process under the Helm chart's
ServiceAccount and RBAC (leader election on, as the chart runs it), then `--count`
InferenceDeployments applied in one `kubectl apply`, each one twin engine pod (engine twin +
the real sidecar, 64 KV blocks, `gpusPerReplica: 0` so the fleet is not bounded by the fake
GPUs; tests/support/census.py). Once every pod is ready and every deployment says
MetricsAvailable=True, a light load (one 200-token prompt / 20 tokens out at a time) goes to
every `--loaded-every`th deployment, and the window starts.

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

from tests.integration import chartrbac  # noqa: E402
from tests.integration.autoscale_story import Load  # noqa: E402
from tests.integration.conftest import Operator  # noqa: E402
from tests.support import census, wait  # noqa: E402

from kvscale.api import crd  # noqa: E402
from kvscale.localstack import binaries  # noqa: E402
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
    settings = local.Settings(name="fleetbench", state_dir=state_dir / "cluster")
    started = time.monotonic()
    cluster = local.start(settings, bins=binaries.ensure(), progress=print)
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
        local.stop(cluster.state_dir, progress=print)


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
    parser.add_argument("--count", type=int, default=50, help="InferenceDeployments (50)")
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured (120)")
    parser.add_argument(
        "--loaded-every", type=int, default=5, help="load every Nth deployment (5: 10 of 50)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=10,
        help="deployments applied at a time, each batch's pods "
        "waited for (10; --batch 50 applies all at once)",
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
