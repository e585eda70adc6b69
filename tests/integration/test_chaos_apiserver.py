"""Chaos, scenario 2 of issue 14: kube-apiserver down for 30 s, and etcd down for 30 s, under
load, with request accounting.

Two twin engines (min 2, max 3: a light load asks for 1, so the count is held at 2 by
minReplicas and any scale action would be a spurious scale-up) serve steady light load
(`Accounted`, from test_chaos.py) while one control-plane process is stopped for 30 s and
started again with its own command line (`cluster.stop_component` / `start_component`; etcd
keeps its data directory). The engines are reached on their pod IPs, as a Service's endpoints
would be: the data path does not go through the API server, so no request may fail. The
operator runs throughout; it may log the outage but must not exit, must not scale, and must
come back by itself: its reconcile answers a spec change made after the outage, and its ticks
run again without errors.

This runs on a cluster of its own (started and stopped by the module): an outage of the
session's cluster could leave later tests a control plane still settling. Its node is a real
one (kubelet, containerd, runc; the pods from the images this checkout builds), so what the
kubelet does while it cannot reach the API server, and after, is Kubernetes' own.

Alerts: a real Prometheus evaluates the chart's rules throughout (test_chaos.py says how); it
scrapes the operator and the sidecars directly, as a cluster's Prometheus does, so it keeps
its view through the outage. No alert may go even pending: a 30 s outage that fails no
request and changes nothing is not worth a page, and the rules' own windows (the operator's
last successful reconciles and decisions within 5 to 10 minutes) say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from typing import Any

import pytest
from tests.integration import realnode
from tests.integration import test_autoscale_twin as twin
from tests.integration.autoscale_story import Story, is_ready, wait_metrics_available, wait_ready
from tests.integration.conftest import ROOT, Operator, chart_prometheus
from tests.integration.test_chaos import Accounted, all_quiet_before_the_fault
from tests.integration.test_chaos_gitops import totals
from tests.support import census, manifest, prometheus, wait

from kvscale.api import crd
from kvscale.localstack import cluster as local
from kvscale.localstack import components

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "outage"
# The 30 s; longer outages: KVSCALE_OUTAGE_SECONDS=120 (past kopf's default retries).
DOWN_S = float(os.environ.get("KVSCALE_OUTAGE_SECONDS", "30"))
AFTER_S = 25.0  # past a stable window (8 s) and a scale-down delay (15 s) after the return
TIMEOUT = "--request-timeout=3s"  # kubectl must not hang on an API server without etcd


outage_cluster = realnode.module_cluster("outage")


def infd() -> dict[str, Any]:
    scaling = manifest.autoscaling(8, 15)
    scaling["minReplicas"] = 2
    return twin.infd(1, name=NAME, scaling=scaling)


class Router:
    """The load's targets kept at the ready pod IPs by a background poll; while the API server
    cannot answer, the last known set stays (as a Service's endpoints do)."""

    def __init__(self, story: Story, load: Accounted) -> None:
        self.story = story
        self.load = load
        self.unanswered = 0  # polls the API server did not answer
        self.changes: list[tuple[float, list[str]]] = []  # (when, ready IPs) at each change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            pods = read(self.story, "pods", "-l", self.story.selector)
            if pods is None:
                self.unanswered += 1
                continue
            ready = sorted(p["status"]["podIP"] for p in pods["items"] if is_ready(p))
            if not self.changes or self.changes[-1][1] != ready:
                self.changes.append((time.monotonic(), ready))
            self.load.targets = ready or self.load.targets


def read(story: Story, *args: str) -> Any:
    """`kubectl get -o json`, or None when the API server does not answer in time."""
    try:
        found = story.cluster.kubectl(
            "get", "-n", story.namespace, *args, "-o", "json", TIMEOUT,
            check=False, timeout_s=10,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    return json.loads(found.stdout) if found.returncode == 0 else None


def ticks(operator: Operator, namespace: str) -> tuple[float, float, float]:
    """The operator's (decisions, tick errors, scale actions) for the deployment, from its own
    /metrics (served whatever the API server does)."""
    samples = census.operator_metrics(operator.metrics_port)
    labels = {"namespace": namespace, "name": NAME}
    return (
        census.total(samples, "kvscale_autoscaler_decisions_total", **labels),
        census.total(samples, "kvscale_autoscaler_loop_errors_total", **labels),
        census.total(samples, "kvscale_autoscaler_scale_actions_total", **labels),
    )


def conditions(story: Story) -> dict[str, str]:
    found = ((read(story, "infd", NAME) or {}).get("status") or {}).get("conditions") or []
    return {
        c["type"]: f"{c['status']} {c.get('reason', '')}: {c.get('message', '')}" for c in found
    }


# `make test` runs the API server's outage; etcd's, which the operator meets only through the
# API server, only `make chaos` (marker `extended`).
@pytest.mark.parametrize(
    "component", [components.APISERVER, pytest.param(components.ETCD, marks=pytest.mark.extended)]
)
def test_a_control_plane_outage_under_load_fails_no_request_and_scales_nothing(
    outage_cluster: local.Cluster, component: str, tmp_path: Any
) -> None:
    cluster = outage_cluster
    namespace = f"outage-{component}"
    cluster.kubectl("create", "namespace", namespace)
    operator = Operator(cluster=cluster, log_path=tmp_path / "operator.log")
    story = Story(cluster, namespace, NAME)
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / crd.YAML_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")
    operator.start()
    load = Accounted(concurrency=4)
    router = Router(story, load)
    monitoring = contextlib.ExitStack()
    recorder: prometheus.AlertRecorder | None = None
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(infd()))
        load.targets = wait_ready(story, 2)
        wait_metrics_available(story)
        alerts = monitoring.enter_context(chart_prometheus(tmp_path / "prometheus", operator))
        all_quiet_before_the_fault(alerts, story)
        recorder = prometheus.AlertRecorder(alerts)
        recorder.start()
        before = story.replicas()
        load.start()
        router.start()
        time.sleep(5)
        decided_before, errors_before, actions_before = ticks(operator, namespace)

        # The outage.
        local.stop_component(cluster.state_dir, component)
        stopped = time.monotonic()
        during: list[tuple[float, float, float, float]] = []  # (t, decisions, errors, actions)
        while (now := time.monotonic()) - stopped < DOWN_S:
            assert operator.process is not None
            exited = operator.process.poll()
            assert exited is None, f"the operator exited ({exited}):\n{operator.log()[-5000:]}"
            during.append((now - stopped, *ticks(operator, namespace)))
            time.sleep(1)
        unanswered = router.unanswered
        local.start_component(cluster.state_dir, component)
        back = time.monotonic()
        back_s = back - stopped

        # The return: a spec change made now must be reconciled, and ticks must run clean.
        generation = story.infd()["metadata"]["generation"]
        cluster.kubectl(
            "patch", "infd", NAME, "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"scaling": {"maxReplicas": 4}}}),
        )  # fmt: skip
        observed = wait.eventually(
            lambda: (story.infd().get("status") or {}).get("observedGeneration", 0) > generation,
            "the operator reconciling a spec change made after the outage",
            timeout_s=120,
            interval_s=0.5,
            retry_on=wait.NOT_MADE_YET,
        )
        assert observed
        reconciled_s = time.monotonic() - back
        _, errors_back, _ = ticks(operator, namespace)

        def clean_tick() -> bool:
            decided, errors, _ = ticks(operator, namespace)
            return decided > decided_now and errors == errors_back

        decided_now = ticks(operator, namespace)[0]
        wait.eventually(clean_tick, "an autoscaler tick without error", timeout_s=60)
        ticking_s = time.monotonic() - back
        wait_metrics_available(story)
        available_s = time.monotonic() - back
        time.sleep(AFTER_S)
        after = story.replicas()
        decided_after, errors_after, actions_after = ticks(operator, namespace)
        status = conditions(story)
        pods = story.pods()
        described = story.describe()
        events = cluster.kubectl("get", "events", "-n", namespace, check=False).stdout
        nodes = cluster.kubectl("get", "nodes", check=False).stdout
    finally:
        seen = recorder.stop() if recorder else []
        polls = recorder.polls if recorder else 0
        monitoring.close()
        router.stop()
        load.stop()
        code = operator.stop()
    log = operator.log()
    completed, failed, why = totals(load.tallies)
    decided_during = during[-1][1] - decided_before if during else 0.0
    errors_during = during[-1][2] - errors_before if during else 0.0
    print(
        f"\n{component} down {DOWN_S:.0f} s, ready again {back_s:.1f} s after the stop; "
        f"{unanswered} of the router's polls unanswered"
    )
    print(
        f"during: {decided_during:.0f} decisions, {errors_during:.0f} tick errors; the operator "
        f"reconciled a spec change {reconciled_s:.1f} s after the return, ticked clean "
        f"{ticking_s:.1f} s after, MetricsAvailable True {available_s:.1f} s after"
    )
    print(
        f"count and generation before {before}, after {after}; scale actions "
        f"{actions_after - actions_before:.0f}; tick errors in all "
        f"{errors_after - errors_before:.0f}"
    )
    print(f"conditions after: {status}")
    print(
        "ready pods seen by the router: "
        + "; ".join(f"{when - stopped:+.1f} s {ips}" for when, ips in router.changes)
    )
    print(f"{described}\n{nodes}\n{events}")
    print(f"alerts from before the outage to the end ({polls} polls of /api/v1/alerts):")
    for line in [str(item) for item in seen] or ["none"]:
        print(f"  {line}")
    print(f"requests: {completed} completed, {failed} failed {why}; per engine:")
    for ip, tally in load.tallies.items():
        print(f"  {ip}: {tally}")
    print(
        f"operator log: {log.count('Traceback')} tracebacks, {log.count(' ERROR')} ERROR lines, "
        f"exit {code} on SIGTERM"
    )
    assert after[0] == before[0] == 2, (before, after)
    assert actions_after == actions_before, "a scale action around the outage"
    assert len(pods) == 2
    assert all(is_ready(p) for p in pods)
    assert completed > 0
    assert failed == 0, why
    assert code == 0, log[-5000:]
    assert status["MetricsAvailable"].startswith("True"), status
    assert decided_after > decided_before
    assert polls > 0, "no poll of /api/v1/alerts succeeded"
    assert seen == [], f"alerts went pending or fired around a harmless outage: {seen}"
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
