"""The node agent's settings, parsed and checked in one place. Pure.

`parse` turns the `kvscale node-agent` arguments into a `Settings`, or raises `SettingsError`
whose message names the flag and says what is wrong with its value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

from kvscale.localstack.nodeagent import backoff, ipam

# A node name is a DNS subdomain; the agent appends "-<index>", so the prefix must leave room.
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class SettingsError(ValueError):
    """A flag's value the agent cannot run with; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the agent runs with.

    kubeconfig: the API server and credentials.
    nodes, gpus_per_node, node_prefix: the Node objects to register (`<prefix>-<i>`).
    pod_cidr: loopback range pod IPs come from.
    state_dir: logs and process records live under `<state_dir>/pods/`.
    crashloop: the restart backoff schedule.
    lease_seconds: the node Lease's duration; renewed every `lease_seconds / 4`, like kubelet.
    node_status_seconds: how often the Ready condition's heartbeat is refreshed.
    shutdown_grace_seconds: the most a pod gets to stop when the agent itself shuts down.
    """

    kubeconfig: Path
    nodes: int
    gpus_per_node: int
    node_prefix: str
    pod_cidr: ipaddress.IPv4Network
    state_dir: Path
    crashloop: backoff.Backoff = dataclasses.field(default_factory=backoff.Backoff)
    lease_seconds: int = 40
    node_status_seconds: float = 30.0
    shutdown_grace_seconds: float = 10.0

    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}-{i}" for i in range(self.nodes)]

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"


def parse(
    *,
    kubeconfig: str,
    nodes: int,
    gpus_per_node: int,
    node_prefix: str,
    pod_cidr: str,
    state_dir: str,
    crashloop_backoff_initial: float = 10.0,
    crashloop_backoff_max: float = 300.0,
) -> Settings:
    """Checked settings from the command line's values."""
    if not kubeconfig:
        raise SettingsError("--kubeconfig: is required")
    if nodes < 1:
        raise SettingsError(f"--nodes = {nodes}, must be at least 1")
    if gpus_per_node < 0:
        raise SettingsError(f"--gpus-per-node = {gpus_per_node}, must be 0 or more")
    if len(node_prefix) > 200 or not _PREFIX.match(node_prefix):
        raise SettingsError(
            f"--node-prefix = {node_prefix!r}, must be lower-case letters, digits, '-' or '.', "
            "starting and ending with a letter or digit (a DNS name)"
        )
    if not state_dir:
        raise SettingsError("--state-dir: is required")
    try:
        network = ipam.parse_range(pod_cidr)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    try:
        schedule = backoff.Backoff(initial=crashloop_backoff_initial, maximum=crashloop_backoff_max)
    except ValueError as error:
        raise SettingsError(
            f"--crashloop-backoff-initial/--crashloop-backoff-max: {error}"
        ) from None
    return Settings(
        kubeconfig=Path(kubeconfig),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        node_prefix=node_prefix,
        pod_cidr=network,
        state_dir=Path(state_dir),
        crashloop=schedule,
    )
