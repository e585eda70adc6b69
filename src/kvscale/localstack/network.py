"""Loopback addresses and ports for a local cluster.

`free_ports` asks the kernel (I/O); `first_host` is pure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that are free right now.

    All sockets stay bound until every port is chosen, so the ports differ from each other; a
    port can still be taken by someone else before its component binds it, which the caller
    detects ("address already in use") and answers by choosing again.
    """
    if count < 1:
        raise ValueError(f"count = {count}: must be at least 1")
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def first_host(cidr: str) -> str:
    """The first usable address of `cidr` (the `kubernetes` Service's ClusterIP in a range)."""
    try:
        network = ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise ValueError(f"cidr = {cidr!r}: {exc}") from exc
    if network.num_addresses < 4:
        raise ValueError(f"cidr = {cidr!r}: too small for a service range")
    return str(network.network_address + 1)
