"""Each cluster's pods get loopback addresses no other running cluster uses."""

from __future__ import annotations

import ipaddress

import pytest

from kvscale.localstack import network

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
RESERVED = ipaddress.IPv4Network("127.0.0.0/24")
NODE_AGENT_DEFAULT = ipaddress.IPv4Network("127.1.0.0/24")


def test_distinct_api_server_ports_give_disjoint_loopback_ranges() -> None:
    ranges = [ipaddress.IPv4Network(network.pod_cidr_for_port(p)) for p in range(1024, 65536)]
    lowest = min(r.network_address for r in ranges)

    assert len(set(ranges)) == len(ranges)
    assert all(r.prefixlen == 24 and r.network_address in LOOPBACK for r in ranges)
    # /24s starting above both reserved ranges cannot overlap them.
    assert lowest > RESERVED.broadcast_address
    assert lowest > NODE_AGENT_DEFAULT.broadcast_address


@pytest.mark.parametrize("port", [0, 80, 1023, 65536])
def test_ports_outside_the_unprivileged_range_are_refused(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        network.pod_cidr_for_port(port)


def test_free_ports_are_distinct_and_unprivileged() -> None:
    ports = network.free_ports(5)

    assert len(set(ports)) == 5
    assert all(1024 <= p <= 65535 for p in ports)


@pytest.mark.parametrize(
    ("cidr", "first"), [("10.96.0.0/16", "10.96.0.1"), ("10.0.0.0/24", "10.0.0.1")]
)
def test_kubernetes_service_ip_is_the_first_host(cidr: str, first: str) -> None:
    assert network.first_host(cidr) == first


@pytest.mark.parametrize("cidr", ["10.96.0.0/33", "not-a-range", "10.0.0.1/24", "10.0.0.0/31"])
def test_bad_service_ranges_are_refused_naming_the_field(cidr: str) -> None:
    with pytest.raises(ValueError, match="cidr"):
        network.first_host(cidr)
