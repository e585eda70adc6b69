"""The real node's addresses, config files and command lines (`kvscale.localstack.node`)."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import tomllib

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kvscale.localstack import node

PLAN = node.Plan(
    cluster="demo",
    root=pathlib.Path("/state/demo/node"),
    addresses=node.Addresses.for_port(6443),
    service_cidr="10.96.0.0/16",
    apiserver_port=6443,
    node_name="local-node-0",
    gpus=4,
)


@pytest.mark.parametrize(
    ("port", "pod_cidr", "host_ip", "node_ip"),
    [
        (1024, "10.244.0.0/24", "100.64.0.1", "100.64.0.2"),
        (1025, "10.244.1.0/24", "100.64.0.5", "100.64.0.6"),
        (6443, "10.245.43.0/24", "100.64.4.173", "100.64.4.174"),
        (2047, "10.247.255.0/24", "100.64.15.253", "100.64.15.254"),
        (65535, "10.247.255.0/24", "100.64.15.253", "100.64.15.254"),
    ],
)
def test_addresses_follow_the_api_server_port(
    port: int, pod_cidr: str, host_ip: str, node_ip: str
) -> None:
    assert node.Addresses.for_port(port) == node.Addresses(pod_cidr, host_ip, node_ip)


@pytest.mark.parametrize("port", [0, 80, 1023, 65536])
def test_ports_outside_the_range_are_refused_naming_the_field(port: int) -> None:
    with pytest.raises(ValueError, match="port = "):
        node.Addresses.for_port(port)


@given(st.integers(1024, 65535))
def test_the_veth_pair_shares_one_slash_30_and_stays_out_of_the_pod_and_service_ranges(
    port: int,
) -> None:
    addresses = node.Addresses.for_port(port)
    link = ipaddress.ip_network(f"{addresses.host_ip}/30", strict=False)
    assert ipaddress.ip_address(addresses.node_ip) in link
    assert addresses.host_ip != addresses.node_ip
    assert str(link.network_address) not in (addresses.host_ip, addresses.node_ip)
    pods = ipaddress.IPv4Network(addresses.pod_cidr)
    assert not pods.overlaps(link)
    assert not pods.overlaps(ipaddress.ip_network("10.96.0.0/16"))
    assert pods.subnet_of(ipaddress.IPv4Network("10.244.0.0/14"))


@given(st.integers(1024, 65535), st.integers(1024, 65535))
def test_two_ports_share_ranges_only_when_equal_modulo_1024(a: int, b: int) -> None:
    same = node.Addresses.for_port(a) == node.Addresses.for_port(b)
    assert same == (a % 1024 == b % 1024)


def test_names_fit_the_kernel_and_are_per_cluster() -> None:
    other = node.Plan(**{**PLAN.__dict__, "cluster": "other"})
    assert len(PLAN.veth_host) <= 15
    assert PLAN.veth_host != other.veth_host
    assert (PLAN.netns, PLAN.cgroup_root) == ("kvscale-demo", "/kvscale-demo")


def test_containerds_socket_fits_a_unix_socket_path_whatever_the_state_directory() -> None:
    deep = node.Plan(
        **{**PLAN.__dict__, "root": pathlib.Path("/" + "x" * (node.MAX_ROOT_LENGTH - 1))}
    )
    longest = node.Plan(**{**PLAN.__dict__, "cluster": "c" * 40})
    assert deep.socket == pathlib.Path("/run/kvscale/demo/containerd.sock")
    # containerd adds ".ttrpc" and refuses paths over 104 bytes.
    assert len(f"{longest.socket}.ttrpc") <= 104
    assert deep.run_dir != longest.run_dir


def test_a_node_directory_too_long_for_kubelets_sockets_is_refused_naming_the_fix() -> None:
    fits = pathlib.Path("/" + "x" * (node.MAX_ROOT_LENGTH - 1))
    assert node.Plan(**{**PLAN.__dict__, "root": fits}).root == fits
    with pytest.raises(ValueError, match=r"state directory: .*\(KVSCALE_STATE\)"):
        node.Plan(**{**PLAN.__dict__, "root": fits / "y"})


def test_negative_gpus_are_refused() -> None:
    with pytest.raises(ValueError, match="gpus = -1"):
        node.Plan(**{**PLAN.__dict__, "gpus": -1})


def test_containerd_config_is_private_and_clamps_oom_scores() -> None:
    config = tomllib.loads(node.containerd_config(PLAN))
    assert config["root"] == "/state/demo/node/containerd/root"
    assert config["state"] == "/state/demo/node/containerd/state"
    assert config["grpc"]["address"] == "/run/kvscale/demo/containerd.sock"
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == node.PAUSE_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False
    assert runc["Root"] == "/state/demo/node/containerd/state/runc"
    assert cri["cni"]["conf_dir"] == "/state/demo/node/cni/net.d"


def test_cni_config_is_a_bridge_over_the_pod_range_without_masquerade() -> None:
    config = json.loads(node.cni_config(PLAN))
    assert config["name"] == "kvscale-demo"
    bridge, portmap = config["plugins"]
    assert bridge["type"] == "bridge"
    assert bridge["isGateway"] is True
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": PLAN.addresses.pod_cidr}]]
    assert portmap["type"] == "portmap"


def test_kubelet_config_accepts_this_hosts_cgroups_and_authenticates_callers() -> None:
    config = yaml.safe_load(node.kubelet_config(PLAN, pathlib.Path("/pki/ca.crt")))
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["failSwapOn"] is False
    assert config["cgroupRoot"] == "/kvscale-demo"
    assert config["address"] == PLAN.addresses.node_ip
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["x509"] == {"clientCAFile": "/pki/ca.crt"}
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["imageGCHighThresholdPercent"] == 100


def test_kube_proxy_leaves_the_machines_conntrack_alone() -> None:
    config = yaml.safe_load(node.kube_proxy_config(PLAN, pathlib.Path("/k")))
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["clusterCIDR"] == PLAN.addresses.pod_cidr
    assert config["hostnameOverride"] == "local-node-0"


def test_every_node_process_runs_in_the_namespace_by_absolute_paths() -> None:
    argvs = [
        node.containerd_argv(PLAN),
        node.kubelet_argv(PLAN, pathlib.Path("/bin/kubelet"), pathlib.Path("/k")),
        node.kube_proxy_argv(PLAN, pathlib.Path("/bin/kube-proxy")),
    ]
    for argv in argvs:
        assert argv[:3] == [node.NSENTER, "--net=/run/netns/kvscale-demo", "--"]
        assert argv[3].startswith("/")
    assert f"--node-ip={PLAN.addresses.node_ip}" in argvs[1]


def test_the_gpu_patch_sets_capacity_and_allocatable() -> None:
    patch = json.loads(node.gpu_patch(3))
    assert patch == [
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "3"},
        {"op": "add", "path": "/status/allocatable/nvidia.com~1gpu", "value": "3"},
    ]


def test_the_node_reaches_the_api_server_through_the_relay_on_the_veth() -> None:
    assert PLAN.relay_url == f"https://{PLAN.addresses.host_ip}:6443"


def test_the_kubernetes_service_slice_points_at_the_relay_on_the_api_servers_port() -> None:
    made = json.loads(node.api_endpoint_slice(PLAN, 6443))
    # kube-proxy finds a Service's slices by this label alone.
    assert made["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert made["metadata"]["namespace"] == "default"
    assert made["endpoints"] == [
        {"addresses": [PLAN.addresses.host_ip], "conditions": {"ready": True}}
    ]
    # The port's name matches the `kubernetes` Service's port name, or kube-proxy skips it.
    assert made["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]
