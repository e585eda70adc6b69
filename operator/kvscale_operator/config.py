"""Settings of one operator process, read from `kvscale operator`'s arguments. Pure."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

FIELD_MANAGER = "kvscale-operator"
SCALE_FIELD_MANAGER = "kvscale-autoscaler"
ANNOTATION_PREFIX = "kvscale.dev"
LEASE_NAME = "kvscale-operator"


@dataclasses.dataclass(frozen=True)
class LeaderElection:
    """Which Lease the replicas of one operator Deployment compete for, and its timing.

    Defaults are client-go's (kube-controller-manager's): a 15 s lease renewed every 2 s; a
    leader that cannot renew for 10 s steps down, 5 s before anyone else may take over.
    """

    namespace: str
    name: str = LEASE_NAME
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not self.namespace:
            raise ValueError("--leader-elect-resource-namespace: is required with --leader-elect")
        if not self.name:
            raise ValueError("--leader-elect-resource-name: must not be empty")
        if not self.retry_seconds > 0:
            raise ValueError(
                f"--leader-elect-retry-period = {self.retry_seconds:g}, must be greater than 0"
            )
        if not self.renew_deadline_seconds > self.retry_seconds:
            raise ValueError(
                f"--leader-elect-renew-deadline = {self.renew_deadline_seconds:g}, must be "
                f"greater than --leader-elect-retry-period ({self.retry_seconds:g})"
            )
        if not self.lease_seconds > self.renew_deadline_seconds:
            raise ValueError(
                f"--leader-elect-lease-duration = {self.lease_seconds:g}, must be greater than "
                f"--leader-elect-renew-deadline ({self.renew_deadline_seconds:g}): a leader "
                "must step down before another may take over"
            )

    @property
    def lease_whole_seconds(self) -> int:
        """The duration written into the Lease (an integer field), rounded up."""
        return max(1, -int(-self.lease_seconds // 1))


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the operator connects, what it watches and what it serves."""

    kubeconfig: pathlib.Path | None = None  # None: $KUBECONFIG, then in-cluster
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    metrics_port: int = 0  # 0: no Prometheus endpoint
    health_port: int = 0  # 0: no liveness endpoint
    listen_host: str = "0.0.0.0"  # where the metrics and liveness endpoints listen
    verbose: bool = False
    field_manager: str = FIELD_MANAGER  # owns the rendered manifests and the status
    scale_field_manager: str = SCALE_FIELD_MANAGER  # owns the Deployment's replicas
    annotation_prefix: str = ANNOTATION_PREFIX  # kopf's progress and diff-base annotations
    # Waits between attempts when a write meets a 409 Conflict (then the error is raised and
    # kopf retries the whole handler after `retry_delay_seconds`).
    conflict_backoffs: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
    retry_delay_seconds: float = 5.0
    # None: this process acts alone (no election); set when replicas compete for a Lease.
    leader_election: LeaderElection | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """From `kvscale operator`'s arguments; a clear error for values that cannot work."""
        for flag in ("metrics_port", "health_port"):
            port = getattr(args, flag, 0) or 0
            if not 0 <= port <= 65535:
                option = "--" + flag.replace("_", "-")
                raise ValueError(f"{option} = {port}, must be between 0 (off) and 65535")
        kubeconfig = getattr(args, "kubeconfig", None)
        return cls(
            kubeconfig=pathlib.Path(kubeconfig) if kubeconfig else None,
            namespaces=tuple(dict.fromkeys(getattr(args, "namespace", None) or ())),
            metrics_port=getattr(args, "metrics_port", 0) or 0,
            health_port=getattr(args, "health_port", 0) or 0,
            listen_host=getattr(args, "listen_host", None) or "0.0.0.0",
            verbose=bool(getattr(args, "verbose", False)),
            leader_election=_leader_election(args),
        )


def _leader_election(args: argparse.Namespace) -> LeaderElection | None:
    if not getattr(args, "leader_elect", False):
        return None
    return LeaderElection(
        namespace=getattr(args, "leader_elect_resource_namespace", None) or "",
        name=getattr(args, "leader_elect_resource_name", None) or LEASE_NAME,
        lease_seconds=getattr(args, "leader_elect_lease_duration", 15.0),
        renew_deadline_seconds=getattr(args, "leader_elect_renew_deadline", 10.0),
        retry_seconds=getattr(args, "leader_elect_retry_period", 2.0),
    )
