"""Pod IPs come from a loopback range, one per pod, never shared while held."""

from __future__ import annotations

import ipaddress

import pytest

from kvscale.localstack.nodeagent import ipam


def pool(cidr: str) -> ipam.Pool:
    return ipam.Pool(ipam.parse_range(cidr))


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.0/24", "must be inside 127.0.0.0/8"),
        ("::1/128", "must be inside 127.0.0.0/8"),
        ("not-a-range", "not a network range"),
        ("127.0.0.1/32", "no usable address"),
    ],
)
def test_bad_ranges_are_refused_naming_the_flag(cidr: str, message: str) -> None:
    with pytest.raises(ValueError, match="--pod-cidr") as caught:
        ipam.parse_range(cidr)
    assert message in str(caught.value)


def test_network_broadcast_and_host_addresses_are_never_handed_out() -> None:
    addresses = pool("127.0.0.0/29")
    given = [addresses.allocate(f"pod-{i}") for i in range(addresses.size)]
    assert given == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
    assert addresses.allocate("one-too-many") is None


def test_an_owner_keeps_its_address() -> None:
    addresses = pool("127.1.0.0/24")
    first = addresses.allocate("a")
    assert addresses.allocate("a") == first
    assert addresses.address_of("a") == first
    assert addresses.owner_of(first or "") == "a"


def test_addresses_are_handed_out_round_robin_so_a_freed_one_is_reused_last() -> None:
    addresses = pool("127.1.0.0/30")  # two usable: .1 and .2
    assert addresses.allocate("a") == "127.1.0.1"
    addresses.release("a")
    assert addresses.allocate("b") == "127.1.0.2"
    assert addresses.allocate("c") == "127.1.0.1"
    assert addresses.allocate("d") is None
    addresses.release("b")
    assert addresses.allocate("d") == "127.1.0.2"


def test_no_address_is_held_by_two_owners() -> None:
    addresses = pool("127.1.0.0/28")
    held: dict[str, str] = {}
    for step in range(200):
        owner = f"pod-{step}"
        if step % 3 == 2:
            released = sorted(held)[0]
            addresses.release(released)
            del held[released]
        address = addresses.allocate(owner)
        if address is not None:
            assert address not in held.values()
            held[owner] = address
    assert all(
        ipaddress.IPv4Address(a) in ipaddress.IPv4Network("127.1.0.0/28") for a in held.values()
    )


def test_reserve_keeps_an_address_from_before_a_restart() -> None:
    addresses = pool("127.1.0.0/24")
    assert addresses.reserve("old-pod", "127.1.0.9")
    assert addresses.reserve("old-pod", "127.1.0.9")
    assert not addresses.reserve("other-pod", "127.1.0.9")
    assert not addresses.reserve("old-pod", "127.1.0.10")  # it holds one already
    assert not addresses.reserve("stranger", "127.2.0.1")  # outside the range
    given = {addresses.allocate(f"p{i}") for i in range(20)}
    assert "127.1.0.9" not in given


def test_release_of_an_unknown_owner_is_harmless() -> None:
    addresses = pool("127.1.0.0/24")
    addresses.release("nobody")
    assert addresses.allocate("a") == "127.1.0.1"
