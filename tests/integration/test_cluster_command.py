"""`kvscale cluster up|status|down` from the command line: the control plane and, by default, the
real node; `down` leaves nothing running.

Runs the real CLI in subprocesses with its own `KVSCALE_STATE`, next to the session's cluster
(which shows that two clusters run side by side), and checks every recorded process by pid and
start time after `down`.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from kvscale.localstack import cluster as local
from kvscale.localstack import components, node, paths

pytestmark = pytest.mark.cluster

NAME = "cli-test"


def _kvscale(state_root: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVSCALE_STATE": str(state_root)}
    env.pop("KUBECONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "kvscale.cli", "cluster", *args, "--name", NAME],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _alive(pid: int, start_ticks: int) -> bool:
    """Whether the process recorded as (pid, start time) still exists and is not a zombie."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == start_ticks


@pytest.fixture
def short_tmp() -> Iterator[pathlib.Path]:
    """A state root short enough for kubelet's unix sockets under it (pytest's own temporary
    directories are too long: `cluster up` refuses them, naming KVSCALE_STATE)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="kvs-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_up_status_down_leaves_no_process_behind(short_tmp: pathlib.Path) -> None:
    tmp_path = short_tmp
    state_dir = paths.cluster_state_dir(NAME, {"KVSCALE_STATE": str(tmp_path)})
    try:
        up = _kvscale(tmp_path, "up", "--nodes", "1")
        assert up.returncode == 0, up.stdout + up.stderr
        handle = local.load(state_dir)
        assert handle is not None
        assert f"export KUBECONFIG={handle.kubeconfig}" in up.stdout
        recorded = {name: (r.pid, r.start_ticks) for name, r in handle.processes.items()}
        # The default runtime is the real node: its processes are recorded beside the control
        # plane's, and `up` says where the node is.
        assert set(recorded) == {
            components.ETCD,
            components.APISERVER,
            components.CONTROLLER_MANAGER,
            components.SCHEDULER,
            node.RELAY,
            node.CONTAINERD,
            node.KUBELET,
            node.KUBE_PROXY,
        }
        assert f"{handle.node.node_name}: kubelet pid {handle.processes[node.KUBELET].pid}" in (
            up.stdout
        )
        assert "2 nvidia.com/gpu" in up.stdout
        assert all(_alive(*pid_ticks) for pid_ticks in recorded.values())

        again = _kvscale(tmp_path, "up")
        status = _kvscale(tmp_path, "status")
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert local.load(state_dir) == handle  # the second `up` started nothing new
        assert status.returncode == 0, status.stdout
        for name, (pid, _) in recorded.items():
            assert f"{name:<24} pid {pid} " in status.stdout

        down = _kvscale(tmp_path, "down")
        after = _kvscale(tmp_path, "status")
    finally:
        local.stop(state_dir)

    assert down.returncode == 0, down.stdout + down.stderr
    assert after.returncode == 1
    assert "not running" in after.stdout
    assert [name for name, pid_ticks in recorded.items() if _alive(*pid_ticks)] == []
    assert not handle.etcd_data_dir.exists()
    assert not handle.kubeconfig.exists()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert handle.node.netns not in namespaces.split()
