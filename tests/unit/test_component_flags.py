"""Component command lines: loopback only, per-cluster ports, the security settings we rely on."""

from __future__ import annotations

import pathlib

import pytest

from kvscale.localstack import binaries, components, layout

BINS = binaries.Binaries(pathlib.Path("/opt/kube/bin"))
PORTS = components.Ports(
    etcd_client=41001, etcd_peer=41002, apiserver=41003, controller_manager=41004, scheduler=41005
)
PLAN = components.Plan(
    name="unit",
    files=layout.Layout(pathlib.Path("/state/unit")),
    ports=PORTS,
    service_cidr="10.96.0.0/16",
    etcd_data_dir=pathlib.Path("/dev/shm/kvscale-unit-etcd"),
)


def _flags(argv: list[str]) -> dict[str, str]:
    flags = {}
    for argument in argv[1:]:
        key, _, value = argument.partition("=")
        flags[key] = value
    return flags


@pytest.mark.parametrize(
    ("build", "port_flag", "port"),
    [
        (components.apiserver, "--secure-port", PORTS.apiserver),
        (components.controller_manager, "--secure-port", PORTS.controller_manager),
        (components.scheduler, "--secure-port", PORTS.scheduler),
    ],
)
def test_kubernetes_components_listen_on_loopback_on_their_own_port(
    build: components.Builder, port_flag: str, port: int
) -> None:
    flags = _flags(build(BINS, PLAN))

    assert flags["--bind-address"] == "127.0.0.1"
    assert flags[port_flag] == str(port)


def test_etcd_listens_on_loopback_only_and_skips_fsync() -> None:
    flags = _flags(components.etcd(BINS, PLAN))
    urls = [flags[k] for k in flags if k.startswith("--listen-")]

    assert urls == [f"http://127.0.0.1:{PORTS.etcd_client}", f"http://127.0.0.1:{PORTS.etcd_peer}"]
    assert flags["--unsafe-no-fsync"] == "true"
    assert flags["--data-dir"] == str(PLAN.etcd_data_dir)


def test_apiserver_runs_rbac_and_signs_service_account_tokens() -> None:
    flags = _flags(components.apiserver(BINS, PLAN))

    assert flags["--authorization-mode"].split(",")[-1] == "RBAC"
    assert flags["--endpoint-reconciler-type"] == "none"
    assert flags["--advertise-address"] == "127.0.0.1"
    assert flags["--etcd-servers"] == f"http://127.0.0.1:{PORTS.etcd_client}"
    assert flags["--service-account-signing-key-file"].endswith("service-account.key")
    assert flags["--service-account-key-file"].endswith("service-account.pub")
    assert flags["--service-account-issuer"].startswith("https://")


def test_controller_manager_uses_per_controller_credentials_without_leader_election() -> None:
    flags = _flags(components.controller_manager(BINS, PLAN))

    assert flags["--use-service-account-credentials"] == "true"
    assert flags["--leader-elect"] == "false"
    assert flags["--service-account-private-key-file"].endswith("service-account.key")
    assert flags["--root-ca-file"].endswith("ca.crt")
    assert flags["--kubeconfig"] == str(PLAN.files.component_kubeconfig("kube-controller-manager"))


def test_ports_must_differ() -> None:
    with pytest.raises(ValueError, match="differ"):
        components.Ports(1, 1, 2, 3, 4)
