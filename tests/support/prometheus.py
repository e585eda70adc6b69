"""A real Prometheus server that evaluates the Helm chart's alert rules against the operator's
and the engine sidecars' /metrics. Does I/O: renders the chart with helm, writes a config into
a folder of its own, runs `prometheus` as a process and reads its HTTP API.

Inside a cluster the Prometheus Operator turns the chart's ServiceMonitor and PodMonitor into
scrape configs. Here there is no Prometheus Operator, so `Monitoring` reads the same objects
from the rendered chart and `Prometheus` writes the scrape config they would have produced:
the operator's job is named after the metrics Service and carries the release's namespace
(the operator alert selects on both), the engine pods are found as the PodMonitor's selector
and port name say and get its relabelings (the `name` label the alerts group by). Targets are
file_sd files, rewritten as pods come and go (Prometheus watches them). Scrape and evaluation
run every `interval_s` (2 s) instead of the chart's 15-30 s, so short scenarios are seen; the
rules themselves, `for:` included, are the chart's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml
from tests.support import wait

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kvscale"
RELEASE = "kvscale"
NAMESPACE = "kvscale-system"
KUBE_VERSION = "1.36.3"
MONITORING_KINDS = ("PrometheusRule", "ServiceMonitor", "PodMonitor")


def render(
    helm: pathlib.Path,
    *sets: str,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    templates: tuple[str, ...] = ("prometheusrule.yaml",),
) -> list[dict[str, Any]]:
    """The chart's documents from `templates`, rendered as in a cluster that serves the
    Prometheus Operator's kinds; `sets` are `--set` items."""
    argv = [
        str(helm), "template", release, str(CHART), "--namespace", namespace,
        "--kube-version", KUBE_VERSION,
    ]  # fmt: skip
    for kind in MONITORING_KINDS:
        argv += ["--api-versions", f"monitoring.coreos.com/v1/{kind}"]
    for template in templates:
        argv += ["--show-only", f"templates/{template}"]
    for item in sets:
        argv += ["--set", item]
    found = subprocess.run(argv, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise AssertionError(f"helm template failed: {found.stderr}")
    return [document for document in yaml.safe_load_all(found.stdout) if document]


def _snake(key: str) -> str:
    """A Prometheus Operator field (`sourceLabels`) in Prometheus' spelling (`source_labels`)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def _label_name(key: str) -> str:
    """A Kubernetes label key as Kubernetes service discovery puts it in a meta label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


@dataclasses.dataclass(frozen=True)
class Monitoring:
    """What the rendered chart tells a Prometheus: its rule groups and how it scrapes."""

    groups: list[dict[str, Any]]  # the PrometheusRule's spec.groups
    namespace: str  # the release's namespace: the operator's series get it as `namespace`
    operator_job: str  # the ServiceMonitor's job: the name of the Service it selects
    operator_honor_labels: bool
    engines_job: str  # "<namespace>/<PodMonitor name>", as the Prometheus Operator names it
    engines_selector: dict[str, str]  # the PodMonitor's matchLabels
    engines_port: str  # the pod port name it scrapes
    engines_path: str
    engines_relabelings: list[dict[str, Any]]  # its relabelings, in Prometheus' spelling

    @classmethod
    def of_chart(cls, helm: pathlib.Path, *sets: str) -> Monitoring:
        templates = (
            "prometheusrule.yaml",
            "service.yaml",
            "servicemonitor.yaml",
            "podmonitor.yaml",
        )
        by_kind = {
            document["kind"]: document for document in render(helm, *sets, templates=templates)
        }
        missing = {"PrometheusRule", "Service", "ServiceMonitor", "PodMonitor"} - set(by_kind)
        if missing:
            raise AssertionError(f"the chart rendered no {sorted(missing)}")
        service, service_monitor = by_kind["Service"], by_kind["ServiceMonitor"]
        wanted = service_monitor["spec"]["selector"]["matchLabels"]
        if any(service["metadata"]["labels"].get(k) != v for k, v in wanted.items()):
            raise AssertionError("the chart's ServiceMonitor does not select its metrics Service")
        (operator_endpoint,) = service_monitor["spec"]["endpoints"]
        pod_monitor = by_kind["PodMonitor"]
        (engines_endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
        return cls(
            groups=by_kind["PrometheusRule"]["spec"]["groups"],
            namespace=service["metadata"]["namespace"],
            operator_job=service["metadata"]["name"],
            operator_honor_labels=bool(operator_endpoint.get("honorLabels", False)),
            engines_job=f"{pod_monitor['metadata']['namespace']}/{pod_monitor['metadata']['name']}",
            engines_selector=dict(pod_monitor["spec"]["selector"]["matchLabels"]),
            engines_port=engines_endpoint["port"],
            engines_path=engines_endpoint.get("path", "/metrics"),
            engines_relabelings=[
                {_snake(key): value for key, value in item.items()}
                for item in engines_endpoint.get("relabelings", [])
            ],
        )

    def alert_names(self) -> set[str]:
        return {
            rule["alert"] for group in self.groups for rule in group["rules"] if "alert" in rule
        }

    def pod_target(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """A pod as Kubernetes service discovery would hand it to the PodMonitor's scrape
        config (its address and meta labels), or None when the PodMonitor would not scrape
        it: not selected, no IP yet, not running, or no port of that name."""
        metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        labels = metadata.get("labels", {})
        if any(labels.get(k) != v for k, v in self.engines_selector.items()):
            return None
        if status.get("phase") != "Running" or not status.get("podIP"):
            return None
        for container in spec["containers"]:
            for port in container.get("ports", []):
                if port.get("name") == self.engines_port:
                    meta = {
                        "__meta_kubernetes_namespace": metadata["namespace"],
                        "__meta_kubernetes_pod_name": metadata["name"],
                        "__meta_kubernetes_pod_container_name": container["name"],
                        **{
                            f"__meta_kubernetes_pod_label_{_label_name(k)}": v
                            for k, v in labels.items()
                        },
                    }
                    address = f"{status['podIP']}:{port['containerPort']}"
                    return {"targets": [address], "labels": meta}
        return None


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert as /api/v1/alerts lists it."""

    name: str
    state: str  # pending or firing
    labels: tuple[tuple[str, str], ...]  # sorted, without alertname

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.labels if k not in ("severity",))
        return f"{self.name} {self.state} {{{shown}}}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Prometheus:
    """One Prometheus process on 127.0.0.1 (a free port), its data and config in `directory`."""

    def __init__(
        self,
        binary: pathlib.Path,
        directory: pathlib.Path,
        monitoring: Monitoring,
        interval_s: float = 2.0,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.monitoring = monitoring
        self.interval_s = interval_s
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._written: dict[str, str] = {}

    # -- the process

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rules.yaml").write_text(
            yaml.safe_dump({"groups": self.monitoring.groups}, sort_keys=False)
        )
        self._write("operator.json", [])
        self._write("engines.json", [])
        (self.directory / "prometheus.yml").write_text(
            yaml.safe_dump(self._config(), sort_keys=False)
        )
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with (self.directory / "prometheus.log").open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
            )

        def ready() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"prometheus exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait.eventually(ready, "Prometheus ready", timeout_s=60)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _config(self) -> dict[str, Any]:
        monitoring, every = self.monitoring, f"{self.interval_s:g}s"

        def set_label(name: str, value: str) -> dict[str, Any]:
            return {"target_label": name, "replacement": value}

        def copy(meta: str, name: str) -> dict[str, Any]:
            return {"source_labels": [meta], "target_label": name}

        return {
            "global": {
                "scrape_interval": every,
                "scrape_timeout": every,
                "evaluation_interval": every,
            },
            "rule_files": ["rules.yaml"],
            "scrape_configs": [
                {
                    # The ServiceMonitor's job: the operator as a process stands in for the
                    # Service's endpoint.
                    "job_name": "operator",
                    "honor_labels": monitoring.operator_honor_labels,
                    "file_sd_configs": [{"files": ["operator.json"]}],
                    "relabel_configs": [
                        set_label("job", monitoring.operator_job),
                        set_label("namespace", monitoring.namespace),
                    ],
                },
                {
                    # The Prometheus Operator's own relabelings for a PodMonitor come first,
                    # then the chart's.
                    "job_name": "engines",
                    "metrics_path": monitoring.engines_path,
                    "file_sd_configs": [{"files": ["engines.json"]}],
                    "relabel_configs": [
                        copy("__meta_kubernetes_namespace", "namespace"),
                        copy("__meta_kubernetes_pod_container_name", "container"),
                        copy("__meta_kubernetes_pod_name", "pod"),
                        set_label("job", monitoring.engines_job),
                        set_label("endpoint", monitoring.engines_port),
                        *monitoring.engines_relabelings,
                    ],
                },
            ],
        }

    # -- targets

    def _write(self, name: str, groups: list[dict[str, Any]]) -> None:
        """Rewrites a file_sd file when its content changes, atomically (Prometheus may read
        it at any moment)."""
        text = json.dumps(groups, sort_keys=True, indent=1)
        if self._written.get(name) == text:
            return
        path = self.directory / name
        partial = path.with_suffix(".tmp")
        partial.write_text(text)
        os.replace(partial, path)
        self._written[name] = text

    def scrape_operator(self, *addresses: str) -> None:
        """The operator's /metrics at these addresses (host:port): one process, or the chart's
        replicas as its ServiceMonitor finds them."""
        self._write("operator.json", [{"targets": list(addresses), "labels": {}}])

    def scrape_pods(self, pods: list[dict[str, Any]]) -> int:
        """Scrapes the sidecars of these pods (kubectl's JSON) that the chart's PodMonitor
        selects; returns how many that is."""
        groups = [found for pod in pods if (found := self.monitoring.pod_target(pod))]
        self._write("engines.json", groups)
        return len(groups)

    # -- the HTTP API

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's vector: (labels, value) per series."""
        data = self._get("/api/v1/query", query=expr)
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def up(self, job: str) -> dict[str, float]:
        """`up` of each target of `job`, by instance."""
        return {labels["instance"]: value for labels, value in self.query(f'up{{job="{job}"}}')}

    def evaluated_alert_rules(self) -> set[str]:
        """The alerting rules Prometheus has loaded and evaluated without error (health "ok";
        a rule not evaluated yet is "unknown", a failing one "err")."""
        groups = self._get("/api/v1/rules", type="alert")["groups"]
        return {
            rule["name"] for group in groups for rule in group["rules"] if rule["health"] == "ok"
        }

    def alerts(self) -> list[Alert]:
        """The alerts active now (pending or firing)."""
        found = []
        for item in self._get("/api/v1/alerts")["alerts"]:
            labels = dict(item["labels"])
            name = labels.pop("alertname")
            found.append(Alert(name, item["state"], tuple(sorted(labels.items()))))
        return found


@dataclasses.dataclass(frozen=True)
class Seen:
    """An alert in one state, seen in one or more polls: each unbroken run of polls that saw
    it (an episode) as (first, last), in seconds since the recorder started. Two faults in one
    watch give two episodes, not one span over the quiet time between them."""

    alert: Alert
    episodes: tuple[tuple[float, float], ...]

    @property
    def first_s(self) -> float:
        return self.episodes[0][0]

    @property
    def last_s(self) -> float:
        return self.episodes[-1][1]

    def __str__(self) -> str:
        spans = ", ".join(f"from {first:.1f} s to {last:.1f} s" for first, last in self.episodes)
        return f"{self.alert} {spans}"


class AlertRecorder:
    """Polls /api/v1/alerts in a thread and keeps every (alert, state) seen, from `start` to
    `stop`. A poll that fails (Prometheus busy) is counted and skipped."""

    def __init__(self, prometheus: Prometheus, poll_s: float = 0.5) -> None:
        self.prometheus = prometheus
        self.poll_s = poll_s
        self.polls = 0
        self.failed_polls = 0
        self._seen: dict[Alert, Seen] = {}
        self._last_poll: set[Alert] = set()  # the alerts the last successful poll saw
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> list[Seen]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.seen()

    def seen(self) -> list[Seen]:
        return sorted(self._seen.values(), key=lambda item: (item.first_s, item.alert.name))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                alerts = self.prometheus.alerts()
            except (urllib.error.URLError, OSError, AssertionError, ValueError):
                self.failed_polls += 1
            else:
                self.polls += 1
                now = time.monotonic() - self._started
                for alert in alerts:
                    before = self._seen.get(alert)
                    if before is None:
                        episodes: tuple[tuple[float, float], ...] = ((now, now),)
                    elif alert in self._last_poll:  # the same episode goes on
                        episodes = (*before.episodes[:-1], (before.episodes[-1][0], now))
                    else:  # gone in a poll between: a new episode
                        episodes = (*before.episodes, (now, now))
                    self._seen[alert] = Seen(alert, episodes)
                self._last_poll = set(alerts)
            self._stop.wait(self.poll_s)
