"""The chart's capacity alerts: rendered from the chart itself (one source), valid for promtool,
each with its unit tests firing and staying quiet, its annotations and a runbook section.

Needs helm and promtool (`make tools`); a missing tool fails the test with how to get it.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from tests.support import prometheus

from kvscale.localstack import tools

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALERT_TESTS = ROOT / "tests" / "data" / "alerts" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/kvscale/kvscale/blob/main/docs/runbooks.md"
# The alerts the project promises (issue 6), by the name each carries.
PROMISED = {
    "KVScaleKVCacheSaturatedAtMaxReplicas",  # KV cache saturated at max replicas
    "KVScalePreemptionStorm",
    "KVScaleSustainedWaitingQueue",
    "KVScaleOccupancyReportsMissing",  # occupancy reports stale or missing
    "KVScaleDesiredReplicasNotReached",  # pods pending, e.g. no free GPUs
    "KVScaleOperatorNotReconciling",
    "KVScaleScalingFlapping",
}


def tool(name: str) -> pathlib.Path:
    try:
        return tools.ensure(name)
    except tools.ToolError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def helm() -> pathlib.Path:
    return tool("helm")


@pytest.fixture(scope="module")
def promtool() -> pathlib.Path:
    return tool("promtool")


def render_rules(helm: pathlib.Path, *sets: str) -> dict[str, Any]:
    """The PrometheusRule's spec (its rule groups) as the chart renders it."""
    (document,) = prometheus.render(helm, *sets)
    assert document["kind"] == "PrometheusRule"
    spec: dict[str, Any] = document["spec"]
    return spec


def rules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in spec["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def rules_dir(helm: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """rules.yaml (rendered with the default values) beside a copy of the unit tests."""
    directory = tmp_path_factory.mktemp("alerts")
    (directory / "rules.yaml").write_text(yaml.safe_dump(render_rules(helm), sort_keys=False))
    shutil.copy(ALERT_TESTS, directory / ALERT_TESTS.name)
    return directory


def test_the_rendered_rules_pass_promtool_check(
    promtool: pathlib.Path, rules_dir: pathlib.Path
) -> None:
    found = subprocess.run(
        [str(promtool), "check", "rules", str(rules_dir / "rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "SUCCESS: 8 rules found" in found.stdout


def test_the_alert_unit_tests_pass(promtool: pathlib.Path, rules_dir: pathlib.Path) -> None:
    found = subprocess.run(
        [str(promtool), "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=rules_dir,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "SUCCESS" in found.stdout


def test_every_alert_has_a_firing_and_a_quiet_case(helm: pathlib.Path) -> None:
    """Every alert fires for one InferenceDeployment in a test while another one (or the whole
    case) stays quiet: the exact lists of expected alerts make promtool check both."""
    names = {rule["alert"] for rule in rules(render_rules(helm))}
    assert names >= PROMISED
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        series_names = {
            match.group(1)
            for item in case["input_series"]
            for match in [re.search(r'name="([^"]+)"', item["series"])]
            if match
        }
        for check in case["alert_rule_test"]:
            fired = {alert["exp_labels"].get("name") for alert in check["exp_alerts"]}
            if check["exp_alerts"]:
                firing.add(check["alertname"])
            if not check["exp_alerts"] or series_names - fired:
                quiet.add(check["alertname"])
    assert firing == names, f"alerts without a firing case: {names - firing}"
    assert quiet == names, f"alerts without a quiet case: {names - quiet}"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_is_documented_and_links_its_runbook_section(helm: pathlib.Path) -> None:
    headings = {
        github_anchor(line[3:])
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in rules(render_rules(helm)):
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["summary"], name
        assert annotations["description"], name
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base == RUNBOOK_BASE, name
        assert anchor == name.lower(), name
        assert anchor in headings, f"docs/runbooks.md has no section for {name}"


def test_thresholds_and_switches_come_from_values(helm: pathlib.Path) -> None:
    spec = render_rules(
        helm,
        "prometheusRule.alerts.kvCacheSaturatedAtMaxReplicas.occupancy=0.8",
        "prometheusRule.alerts.kvCacheSaturatedAtMaxReplicas.for=3m",
        "prometheusRule.alerts.sustainedWaitingQueue.waitingPerPod=12",
        "prometheusRule.alerts.scalingFlapping.window=1h",
        "prometheusRule.alerts.preemptionStorm.enabled=false",
        "prometheusRule.alerts.desiredReplicasNotReached.severity=critical",
        "prometheusRule.additionalAlertLabels.team=ml-platform",
        "prometheusRule.runbookBaseUrl=https://runbooks.example/kvscale",
    )
    by_name = {rule["alert"]: rule for rule in rules(spec)}
    assert "KVScalePreemptionStorm" not in by_name
    saturated = by_name["KVScaleKVCacheSaturatedAtMaxReplicas"]
    assert ">= 0.8" in saturated["expr"]
    assert saturated["for"] == "3m"
    assert "> 12" in by_name["KVScaleSustainedWaitingQueue"]["expr"]
    assert "[1h]" in by_name["KVScaleScalingFlapping"]["expr"]
    assert by_name["KVScaleDesiredReplicasNotReached"]["labels"]["severity"] == "critical"
    for rule in by_name.values():
        assert rule["labels"]["team"] == "ml-platform"
        assert rule["annotations"]["runbook_url"].startswith("https://runbooks.example/kvscale#")


def test_the_operator_alert_selects_this_releases_operator(helm: pathlib.Path) -> None:
    """The operator's series are told apart by the metrics Service's name (the job) and the
    release's namespace, so two installations never cover for each other."""
    (document,) = prometheus.render(helm, release="ml", namespace="ml-ops")
    spec = document["spec"]
    operator = next(r for r in rules(spec) if r["alert"] == "KVScaleOperatorNotReconciling")
    assert 'job="ml-kvscale-metrics", namespace="ml-ops"' in operator["expr"]
