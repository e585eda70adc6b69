"""Pod IP addresses from a loopback range. Pure.

Every pod gets its own address in the range (`--pod-cidr`, e.g. 127.1.0.0/24), so many pods can
listen on the same port on one machine; Linux routes all of 127.0.0.0/8 to the loopback device
without any setup. An address is never handed out while its pod still holds it, and addresses
are handed out round-robin (like CNI's host-local plugin), so a just-freed address is the last
to be reused: a client still talking to a deleted pod does not reach its successor.
"""

from __future__ import annotations

import ipaddress

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
HOST_IP = "127.0.0.1"


def parse_range(cidr: str) -> ipaddress.IPv4Network:
    """The pod range, refused unless it is an IPv4 range inside 127.0.0.0/8."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as error:
        raise ValueError(f"--pod-cidr = {cidr!r}: not a network range ({error})") from None
    if not isinstance(network, ipaddress.IPv4Network) or not network.subnet_of(LOOPBACK):
        raise ValueError(
            f"--pod-cidr = {cidr!r}: must be inside 127.0.0.0/8, so pods only ever listen on "
            "loopback addresses"
        )
    if len(_usable(network)) == 0:
        raise ValueError(f"--pod-cidr = {cidr!r}: has no usable address besides the host's")
    return network


def _usable(network: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    # Network and broadcast addresses stay unused, as on any subnet, and so does the host's
    # address: pods with hostNetwork use it.
    hosts = list(network.hosts()) if network.prefixlen < 31 else list(network)
    host = ipaddress.IPv4Address(HOST_IP)
    return [address for address in hosts if address != host]


class Pool:
    """Addresses of one range, each held by at most one owner (a pod uid)."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self._addresses = [str(address) for address in _usable(network)]
        self._index = {address: i for i, address in enumerate(self._addresses)}
        self._owner_of: dict[str, str] = {}
        self._address_of: dict[str, str] = {}
        self._next = 0

    @property
    def size(self) -> int:
        return len(self._addresses)

    def address_of(self, owner: str) -> str | None:
        return self._address_of.get(owner)

    def owner_of(self, address: str) -> str | None:
        return self._owner_of.get(address)

    def allocate(self, owner: str) -> str | None:
        """The owner's address: the one it holds, else the next free one round-robin; None
        when the range is exhausted (the caller decides what the pod shows)."""
        held = self._address_of.get(owner)
        if held is not None:
            return held
        for step in range(len(self._addresses)):
            i = (self._next + step) % len(self._addresses)
            address = self._addresses[i]
            if address not in self._owner_of:
                self._take(owner, address)
                self._next = (i + 1) % len(self._addresses)
                return address
        return None

    def reserve(self, owner: str, address: str) -> bool:
        """Give the owner a specific address (one it had before an agent restart). False when
        the address is outside the range or held by someone else."""
        if address not in self._index:
            return False
        holder = self._owner_of.get(address)
        if holder is not None:
            return holder == owner
        if owner in self._address_of:
            return False
        self._take(owner, address)
        return True

    def release(self, owner: str) -> None:
        address = self._address_of.pop(owner, None)
        if address is not None:
            del self._owner_of[address]

    def _take(self, owner: str, address: str) -> None:
        self._owner_of[address] = owner
        self._address_of[owner] = address
