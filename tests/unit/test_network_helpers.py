"""Free ports for a cluster's components, and the first host of its Service range."""

from __future__ import annotations

import pytest

from kvscale.localstack import network


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
