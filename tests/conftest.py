"""Shared fixtures: the real local Kubernetes cluster that tests marked `cluster` run against.

One cluster per test session: the control plane alone (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler; runtime "none"), in a temporary state directory on free
ports, so it runs beside a developer's own `kvscale cluster up`. Tests that run pods take a real
node of their module's own instead (`tests/integration/realnode.py`). It is stopped at the end
of the session whatever happened. Missing binaries are built (minutes, once per machine), never
skipped.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Protocol

import pytest

from kvscale.localstack import binaries
from kvscale.localstack import cluster as local


class Kubectl(Protocol):
    """Run the project's kubectl against the session's cluster."""

    def __call__(
        self, *args: str, check: bool = True, input: str | None = None, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]: ...


def _progress(line: str) -> None:
    # Shown with the setup output of the first test that uses the cluster.
    print(f"[cluster] {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.Cluster]:
    """A running local cluster for the whole session; stopped at its end, even on failure."""
    try:
        bins = binaries.ensure()
    except binaries.BinariesError as exc:
        pytest.fail(
            f"the Kubernetes control plane is needed and cannot be built: {exc}\n"
            "build it with `make control-plane` (scripts/build-control-plane.sh)",
            pytrace=False,
        )
    settings = local.Settings(
        name="pytest",
        state_dir=tmp_path_factory.mktemp("kvscale-cluster"),
        runtime=local.NO_RUNTIME,
    )
    handle = local.start(settings, bins=bins, progress=_progress)
    _progress(f"started in {handle.timings['total']:.1f}s: {dict(handle.timings)}")
    try:
        yield handle
    finally:
        local.stop(handle.state_dir, progress=_progress)


@pytest.fixture
def kubectl(cluster: local.Cluster) -> Kubectl:
    """`kubectl(*args, check=True, input=None)` against the session's cluster."""
    return cluster.kubectl
