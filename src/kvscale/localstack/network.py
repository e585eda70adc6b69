"""Loopback addresses and ports for a local cluster.

`free_ports` asks the kernel (I/O); `pod_cidr_for_port` and `first_host` are pure.
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


def pod_cidr_for_port(port: int) -> str:
    """A /24 of loopback addresses for a cluster's pods, derived from its API server port.

    Two running clusters never share an API server port, so they never share a pod range:
    port p maps to 127.(p // 256).(p % 256).0/24. Ports from 1024 up map to 127.4.0.0 and
    above, which keeps clear of 127.0.0.0/24 (localhost, resolvers) and of the node agent's
    stand-alone default 127.1.0.0/24.
    """
    if not 1024 <= port <= 65535:
        raise ValueError(f"port = {port}: must be between 1024 and 65535")
    return f"127.{port // 256}.{port % 256}.0/24"


def first_host(cidr: str) -> str:
    """The first usable address of `cidr` (the `kubernetes` Service's ClusterIP in a range)."""
    try:
        network = ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise ValueError(f"cidr = {cidr!r}: {exc}") from exc
    if network.num_addresses < 4:
        raise ValueError(f"cidr = {cidr!r}: too small for a service range")
    return str(network.network_address + 1)
