"""Settings of one operator process, read from `kvscale operator`'s arguments. Pure."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

FIELD_MANAGER = "kvscale-operator"
SCALE_FIELD_MANAGER = "kvscale-autoscaler"
ANNOTATION_PREFIX = "kvscale.dev"


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
        )
