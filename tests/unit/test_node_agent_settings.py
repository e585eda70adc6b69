"""The node agent's flags are checked in one place; errors name the flag."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from kvscale.localstack.nodeagent import settings

GOOD: dict[str, Any] = {
    "kubeconfig": "/tmp/kubeconfig",
    "nodes": 2,
    "gpus_per_node": 2,
    "node_prefix": "local-node",
    "pod_cidr": "127.1.0.0/24",
    "state_dir": "/tmp/state",
}


def test_good_settings() -> None:
    parsed = settings.parse(**GOOD, crashloop_backoff_initial=1, crashloop_backoff_max=4)
    assert parsed.node_names() == ["local-node-0", "local-node-1"]
    assert parsed.pod_cidr == ipaddress.IPv4Network("127.1.0.0/24")
    assert parsed.pods_dir == Path("/tmp/state/pods")
    assert (parsed.crashloop.initial, parsed.crashloop.maximum) == (1, 4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("nodes", 0, "--nodes = 0, must be at least 1"),
        ("gpus_per_node", -1, "--gpus-per-node = -1"),
        ("node_prefix", "Local_Node", "--node-prefix = 'Local_Node'"),
        ("node_prefix", "-x", "--node-prefix"),
        ("pod_cidr", "10.1.0.0/24", "--pod-cidr = '10.1.0.0/24'"),
        ("kubeconfig", "", "--kubeconfig"),
        ("state_dir", "", "--state-dir"),
        ("crashloop_backoff_initial", 0, "--crashloop-backoff-initial"),
        ("crashloop_backoff_max", 1, "--crashloop-backoff-max"),
    ],
)
def test_bad_values_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(settings.SettingsError, match=message.replace("(", r"\(")):
        settings.parse(**{**GOOD, field: value})
