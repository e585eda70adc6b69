"""A start that cannot even execute its first component fails clearly and leaves nothing behind."""

from __future__ import annotations

import pathlib
import uuid

import pytest

from kvscale.localstack import binaries
from kvscale.localstack import cluster as local


def test_missing_executable_is_named_and_the_tmpfs_data_is_removed(tmp_path: pathlib.Path) -> None:
    name = f"nothing-{uuid.uuid4().hex[:8]}"
    settings = local.Settings(name=name, state_dir=tmp_path / "state", runtime=local.NO_RUNTIME)
    empty = binaries.Binaries(tmp_path / "no-binaries-here")

    with pytest.raises(local.ClusterError, match=r"etcd: cannot execute .*no-binaries-here/etcd"):
        local.start(settings, bins=empty)

    assert local.load(settings.state_dir) is None
    assert list(pathlib.Path("/dev/shm").glob(f"kvscale-{name}-*")) == []
    assert not (settings.state_dir / "kubeconfig").exists()
    assert not (settings.state_dir / "pki").exists()


def test_the_real_node_without_root_is_refused_before_anything_starts(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kvscale.localstack.cluster.os.geteuid", lambda: 1000)
    settings = local.Settings(name="noroot", state_dir=tmp_path / "state")
    empty = binaries.Binaries(tmp_path / "no-binaries-here")

    with pytest.raises(local.ClusterError, match=r"needs root .*--runtime none"):
        local.start(settings, bins=empty)

    assert not settings.state_dir.exists()
