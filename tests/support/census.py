"""Many InferenceDeployments under one operator: the objects, and what is measured of the
operator meanwhile. Does I/O (kubectl, HTTP, /proc).

Shared by benchmarks/fleet_bench.py (50 deployments, a long window) and
tests/integration/test_chaos_fleet.py (a dozen, a short one). Every deployment runs one twin
engine of `BLOCKS` KV blocks with `gpusPerReplica: 0`, so the fleet's size is bounded by the
machine, not by the cluster's fake GPUs (2 nodes x 2 by default).

What is measured over a window, from two snapshots (`Snapshot`) at its ends and polls between:
- ticks: the operator's own `kvscale_autoscaler_loop_duration_seconds` histogram, one series
  per deployment; the bucket counts' increase over the window, all deployments together, gives
  the tick duration's quantiles (interpolated within a bucket, as PromQL's histogram_quantile),
  and each deployment's `_count` increase says whether its ticks kept coming;
- API requests: the API server's `apiserver_flowcontrol_dispatched_requests_total` of the
  flow schema `service-accounts`. The operator runs under the Helm chart's ServiceAccount (as
  it does in a cluster), and it is the only client that schema matches here: kubelet is a
  node (`system-nodes`), kube-proxy a user of its own (`global-default`), the controllers
  are kube-system service accounts or system users with schemas of their own, the
  pods never call the API server, the benchmark's kubectl is an admin (`exempt`). A watch counts
  once, when it is opened. `apiserver_request_total` has no user-agent label, so it is given
  beside it only as the whole API server's load;
- the operator's RSS (/proc/PID/status VmRSS: peak over the polls and at the end) and CPU
  seconds (utime + stime of /proc/PID/stat);
- each deployment's MetricsAvailable condition, polled: any poll that saw it other than True.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import parser
from tests.support import manifest

from kvscale.localstack import cluster as local
from kvscale_operator.reconciler import render

TWIN_IMAGE = "ghcr.io/kvscale/engine-twin:0.1.0"
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
ENGINE_PORT = 8000
BLOCKS = 64
TWIN_CPU_M = 50
# What one fleet pod asks of the node's CPU: the twin's and the sidecar's requests.
POD_CPU_REQUEST_M = TWIN_CPU_M + int(render.SIDECAR_RESOURCES["requests"]["cpu"].removesuffix("m"))
"""KV blocks per twin engine (of 32 tokens): small, so a light load moves occupancy."""
OWNER_LABEL = "kvscale.dev/inference-deployment"
OPERATOR_FLOW_SCHEMA = "service-accounts"
TICK_HISTOGRAM = "kvscale_autoscaler_loop_duration_seconds"


def name(index: int) -> str:
    return f"fleet-{index:03d}"


def twin(index: int, namespace: str, sidecar_poll_s: float | None = None) -> dict[str, Any]:
    """One deployment of the fleet: one twin engine, no GPU, a 1 s tick, held at 1 replica
    (minReplicas = maxReplicas) so the fleet's size is the number of deployments. The sidecar
    polls its engine every `sidecar_poll_s` (None: the CRD's default)."""
    spec = {
        "model": {"name": MODEL},
        "engine": {
            "image": TWIN_IMAGE,
            # 32: with no GPU the operator renders vLLM's CPU build, whose attention works in
            # blocks of 32 tokens (the twin plays whichever the spec asks for).
            "blockSize": 32,
            "maxModelLen": 1024,
            "shutdownGraceSeconds": 1,
            "extraArgs": ["--num-gpu-blocks-override", str(BLOCKS)],
        },
        "resources": {"gpusPerReplica": 0, "cpu": f"{TWIN_CPU_M}m", "memory": "128Mi"},
        "scaling": {"minReplicas": 1, "maxReplicas": 1, "tickSeconds": 1},
    }
    if sidecar_poll_s is not None:
        spec["sidecar"] = {"pollIntervalSeconds": sidecar_poll_s}
    return manifest.inference_deployment(name(index), spec, namespace)


def apply_fleet(
    cluster: local.Cluster,
    namespace: str,
    count: int,
    first: int = 0,
    sidecar_poll_s: float | None = None,
) -> None:
    """Deployments `first` to `first + count - 1` in one `kubectl apply` (a List)."""
    items = [twin(index, namespace, sidecar_poll_s) for index in range(first, first + count)]
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(document))


def list_json(cluster: local.Cluster, namespace: str, *what: str) -> list[dict[str, Any]]:
    found = cluster.kubectl("get", *what, "-n", namespace, "-o", "json")
    items: list[dict[str, Any]] = json.loads(found.stdout)["items"]
    return items


def condition(item: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for found in (item.get("status") or {}).get("conditions") or []:
        if found["type"] == kind:
            return dict(found)
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        item["type"] == "Ready" and item["status"] == "True"
        for item in pod.get("status", {}).get("conditions", [])
    )


def ready_ips(cluster: local.Cluster, namespace: str) -> dict[str, str]:
    """Deployment name -> the pod IP of its ready engine pod."""
    found = {}
    for pod in list_json(cluster, namespace, "pods"):
        owner = pod["metadata"].get("labels", {}).get(OWNER_LABEL)
        if owner and is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
            found[owner] = pod["status"]["podIP"]
    return found


def metrics_available(cluster: local.Cluster, namespace: str) -> dict[str, str]:
    """Deployment name -> its MetricsAvailable status ("missing" when not written yet)."""
    found = {}
    for item in list_json(cluster, namespace, "infd"):
        written = condition(item, "MetricsAvailable")
        found[item["metadata"]["name"]] = written["status"] if written else "missing"
    return found


# --- the operator's process ----------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


# --- metrics -------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    found: Samples = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def operator_metrics(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def apiserver_metrics(cluster: local.Cluster) -> Samples:
    return parse(cluster.kubectl("get", "--raw", "/metrics").stdout)


def total(samples: Samples, sample_name: str, **labels: str) -> float:
    """The sum of `sample_name` over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value
        for (found, pairs), value in samples.items()
        if found == sample_name and wanted <= set(pairs)
    )


def per_deployment(samples: Samples, sample_name: str, namespace: str) -> dict[str, float]:
    """The series of `sample_name` in `namespace`, by the deployment's name."""
    found = {}
    for (sample, pairs), value in samples.items():
        labels = dict(pairs)
        if sample == sample_name and labels.get("namespace") == namespace:
            found[labels["name"]] = value
    return found


def buckets(samples: Samples, namespace: str) -> dict[float, float]:
    """The tick histogram's cumulative bucket counts, all deployments of `namespace` summed."""
    found: dict[float, float] = {}
    for (sample, pairs), value in samples.items():
        labels = dict(pairs)
        if sample == f"{TICK_HISTOGRAM}_bucket" and labels.get("namespace") == namespace:
            bound = float(labels["le"])
            found[bound] = found.get(bound, 0.0) + value
    return found


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative bucket counts (`le` -> count): linear
    interpolation within the bucket the rank falls in; the highest finite bound when it falls
    in +Inf; None without observations."""
    bounds = sorted(cumulative)
    counts = [cumulative[bound] for bound in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    index = bisect.bisect_left(counts, rank)
    if bounds[index] == float("inf"):
        return bounds[-2] if len(bounds) > 1 else None
    lower = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    inside = counts[index] - below
    if inside <= 0:
        return bounds[index]
    return lower + (bounds[index] - lower) * (rank - below) / inside


def increase(after: Mapping[Any, float], before: Mapping[Any, float]) -> dict[Any, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One end of the window."""

    at: float  # monotonic seconds
    operator: Samples
    apiserver: Samples
    cpu_seconds: float


def snapshot(
    cluster: local.Cluster, pid: int, metrics_port: int, clock: Callable[[], float]
) -> Snapshot:
    return Snapshot(
        at=clock(),
        operator=operator_metrics(metrics_port),
        apiserver=apiserver_metrics(cluster),
        cpu_seconds=cpu_seconds(pid),
    )


@dataclasses.dataclass
class Window:
    """What was seen between two snapshots; `figures` renders it."""

    namespace: str
    deployments: Sequence[str]
    start: Snapshot
    end: Snapshot
    rss_samples: list[int]
    not_available: list[tuple[float, str, str]]
    """(seconds into the window, deployment, MetricsAvailable status) of every poll that saw
    a deployment's MetricsAvailable other than True."""
    polls: int

    @property
    def seconds(self) -> float:
        return self.end.at - self.start.at

    def ticks(self) -> dict[str, float]:
        """Ticks per deployment in the window (the histogram's _count increase); 0 when a
        deployment's series is missing at the end."""
        name_ = f"{TICK_HISTOGRAM}_count"
        after = per_deployment(self.end.operator, name_, self.namespace)
        before = per_deployment(self.start.operator, name_, self.namespace)
        return {item: after.get(item, 0.0) - before.get(item, 0.0) for item in self.deployments}

    def tick_quantile(self, q: float) -> float | None:
        return quantile(
            q,
            increase(
                buckets(self.end.operator, self.namespace),
                buckets(self.start.operator, self.namespace),
            ),
        )

    def loop_errors(self) -> float:
        name_ = "kvscale_autoscaler_loop_errors_total"
        return total(self.end.operator, name_, namespace=self.namespace) - total(
            self.start.operator, name_, namespace=self.namespace
        )

    def operator_requests(self) -> float:
        name_ = "apiserver_flowcontrol_dispatched_requests_total"
        return total(self.end.apiserver, name_, flow_schema=OPERATOR_FLOW_SCHEMA) - total(
            self.start.apiserver, name_, flow_schema=OPERATOR_FLOW_SCHEMA
        )

    def apiserver_requests(self) -> float:
        name_ = "apiserver_request_total"
        return total(self.end.apiserver, name_) - total(self.start.apiserver, name_)

    def figures(self) -> dict[str, Any]:
        ticks = self.ticks()
        p50, p99 = self.tick_quantile(0.5), self.tick_quantile(0.99)
        return {
            "deployments": len(self.deployments),
            "window_s": round(self.seconds, 1),
            "ticks_total": int(sum(ticks.values())),
            "ticks_per_s": round(sum(ticks.values()) / self.seconds, 2),
            "ticks_per_deployment_min": int(min(ticks.values(), default=0)),
            "ticks_per_deployment_max": int(max(ticks.values(), default=0)),
            "tick_p50_s": None if p50 is None else round(p50, 4),
            "tick_p99_s": None if p99 is None else round(p99, 4),
            "loop_errors": int(self.loop_errors()),
            "operator_api_requests": int(self.operator_requests()),
            "operator_api_requests_per_s": round(self.operator_requests() / self.seconds, 2),
            "apiserver_requests_per_s_all_clients": round(
                self.apiserver_requests() / self.seconds, 2
            ),
            "operator_rss_peak_mib": round(max(self.rss_samples) / 2**20, 1),
            "operator_rss_end_mib": round(self.rss_samples[-1] / 2**20, 1),
            "operator_cpu_s": round(self.end.cpu_seconds - self.start.cpu_seconds, 1),
            "operator_cpu_share": round(
                (self.end.cpu_seconds - self.start.cpu_seconds) / self.seconds, 3
            ),
            "status_polls": self.polls,
            "metrics_unavailable_seen": len(self.not_available),
        }


def watch(
    cluster: local.Cluster,
    namespace: str,
    deployments: Sequence[str],
    pid: int,
    metrics_port: int,
    seconds: float,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    poll_s: float = 5.0,
) -> Window:
    """Snapshots at both ends of `seconds`; between them the operator's RSS every second and
    every deployment's MetricsAvailable every `poll_s`."""
    start = snapshot(cluster, pid, metrics_port, clock)
    rss = [rss_bytes(pid)]
    not_available: list[tuple[float, str, str]] = []
    polls = 0
    next_poll = start.at
    while clock() - start.at < seconds:
        if clock() >= next_poll:
            seen = metrics_available(cluster, namespace)
            polls += 1
            for item in deployments:
                if seen.get(item) != "True":
                    not_available.append((clock() - start.at, item, seen.get(item, "missing")))
            next_poll += poll_s
        rss.append(rss_bytes(pid))
        sleep(1.0)
    end = snapshot(cluster, pid, metrics_port, clock)
    rss.append(rss_bytes(pid))
    return Window(namespace, list(deployments), start, end, rss, not_available, polls)
