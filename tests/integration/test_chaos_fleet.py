"""Chaos scenario 8 (issue 14), short form: a fleet of InferenceDeployments under one operator.

`FLEET` deployments (one twin engine each, no GPU; tests/support/census.py) are applied at
once to an operator running under the Helm chart's ServiceAccount, on the real node (kubelet,
containerd, runc; the pods from the images this checkout builds; a cluster of the module's
own); a third of them get a light load. Over a `WINDOW_S` window every deployment must keep
ticking (its tick histogram's count grows), keep MetricsAvailable=True at every poll, and have
its status written; no tick may fail, the operator must log no traceback and exit 0 on
SIGTERM. The figures (tick p50/p99, the operator's API requests per second, RSS, CPU) are
printed, not asserted on: they belong to the machine. A real Prometheus evaluates the chart's
rules over the window (test_chaos.py says how), scraping the operator and the 12 sidecars: no
alert may go even pending, since nothing is wrong. The 50-deployment run is
benchmarks/fleet_bench.py.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable

import pytest
from tests.integration import chartrbac, realnode
from tests.integration.autoscale_story import Load, Story
from tests.integration.conftest import ROOT, Operator, chart_prometheus
from tests.integration.test_chaos import all_quiet_before_the_fault
from tests.support import census, prometheus, wait

from kvscale.api import crd
from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FLEET = 12
WINDOW_S = 30.0


# The fleet asks for no GPU; its CPU requests (census.twin: 50m for each twin and sidecar) must
# fit the node's allocatable CPU, which is this machine's.
cluster = realnode.module_cluster("cf", 2, None)


def test_a_fleet_of_deployments_under_one_operator_keeps_every_one_ticking_and_reporting(
    cluster: local.Cluster,
    namespace: str,
    operator_factory: Callable[..., Operator],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / crd.YAML_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")
    kubeconfig, args = chartrbac.credentials(cluster, tmp_path_factory.mktemp("fleet"))
    operator = operator_factory("fleet", *args, kubeconfig=kubeconfig)
    try:
        _run_the_fleet(cluster, namespace, operator, tmp_path_factory.mktemp("prometheus"))
    finally:
        # The chart's ServiceAccount and bindings go with the test.
        operator.stop()
        chartrbac.revoke(cluster)


def _run_the_fleet(
    cluster: local.Cluster, namespace: str, operator: Operator, monitoring: pathlib.Path
) -> None:
    operator.start()
    assert operator.process is not None
    names = [census.name(index) for index in range(FLEET)]

    census.apply_fleet(cluster, namespace, FLEET)
    ips = wait.eventually(
        lambda: found if len(found := census.ready_ips(cluster, namespace)) == FLEET else None,
        f"{FLEET} ready engine pods",
        timeout_s=240,
        interval_s=2,
    )
    try:
        wait.eventually(
            lambda: set(census.metrics_available(cluster, namespace).values()) == {"True"},
            "MetricsAvailable=True on every deployment",
            timeout_s=120,
            interval_s=2,
        )
    except AssertionError:
        for item in census.list_json(cluster, namespace, "infd"):
            print(
                item["metadata"]["name"], json.dumps((item.get("status") or {}).get("conditions"))
            )
        raise

    with chart_prometheus(monitoring, operator) as server:
        all_quiet_before_the_fault(server, *(Story(cluster, namespace, item) for item in names))
        recorder = prometheus.AlertRecorder(server)
        recorder.start()
        try:
            _load_and_watch(cluster, namespace, operator, names, ips)
        finally:
            seen = recorder.stop()
    print(f"alerts over the window ({recorder.polls} polls of /api/v1/alerts): {seen or 'none'}")
    assert recorder.polls > 0, "no poll of /api/v1/alerts succeeded"
    assert seen == [], f"alerts went pending or fired in a healthy fleet: {seen}"
    code = operator.stop()
    log = operator.log()
    assert code == 0, f"the operator exited with {code} on SIGTERM"
    assert "Traceback" not in log, log[-5000:]
    assert chartrbac.denials(log) == []


def _load_and_watch(
    cluster: local.Cluster,
    namespace: str,
    operator: Operator,
    names: list[str],
    ips: dict[str, str],
) -> None:
    assert operator.process is not None
    loaded = names[: FLEET // 3]
    load = Load({"model": census.MODEL, "prompt": [7] * 200, "max_tokens": 20}, 8000, len(loaded))
    load.targets = [ips[item] for item in loaded]
    load.start()
    try:
        window = census.watch(
            cluster,
            namespace,
            names,
            operator.process.pid,
            operator.metrics_port,
            WINDOW_S,
            clock=time.monotonic,
            sleep=time.sleep,
        )
    finally:
        load.stop()
    figures = window.figures()
    print(f"\nfleet of {FLEET}, {len(loaded)} loaded: " + json.dumps(figures))
    occupancy = census.per_deployment(
        window.end.operator, "kvscale_autoscaler_occupancy_ratio", namespace
    )
    print(
        f"load: {load.completed} completions, {load.failed} failed; occupancy at the end: "
        + ", ".join(f"{item} {occupancy.get(item)}" for item in names)
    )

    ticks = window.ticks()
    assert all(ticks[item] > 0 for item in names), f"deployments that did not tick: {ticks}"
    assert window.not_available == [], f"MetricsAvailable other than True: {window.not_available}"
    assert figures["loop_errors"] == 0
    assert figures["operator_api_requests"] > 0, "the operator's flow schema counted nothing"
    assert load.completed > 0
    assert load.failed == 0
    for item in census.list_json(cluster, namespace, "infd"):
        status = item.get("status") or {}
        where = item["metadata"]["name"]
        assert status.get("desiredReplicas") == 1, (where, status)
        assert status.get("observedGeneration") == item["metadata"]["generation"], (where, status)
        ready = census.condition(item, "Ready")
        assert ready is not None, (where, status)
        assert ready["status"] == "True", (where, ready)
