"""The real node's network namespace, veth pair, host route and cgroups: make them, remove them.

Does I/O (runs `ip`, `nsenter`, writes /sys/fs/cgroup, unmounts, signals). Every change is made
inside the namespace it creates, except three on the host, all named after the cluster and
removed by `destroy`: the veth's host end (with its /30), one route (the pod range via the veth)
and one cgroup per hierarchy. The host's default route and iptables are never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pathlib
import shutil
import signal
import subprocess
import time

from kvscale.localstack import node

CGROUP_FS = pathlib.Path("/sys/fs/cgroup")
NETNS_DIR = pathlib.Path("/run/netns")
_KILL_WAIT_S = 15.0


class NamespaceError(RuntimeError):
    """A command that sets up or tears down the node's namespace failed."""


class AddressTakenError(NamespaceError):
    """The host already routes one of the node's ranges (another cluster, or the machine)."""


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise NamespaceError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout


def _routed(prefixes: list[str]) -> list[str]:
    """Those of `prefixes` that overlap a route of the host's main table."""
    taken = []
    wanted = [ipaddress.ip_network(p) for p in prefixes]
    for line in _run(["ip", "-4", "route", "show"]).splitlines():
        target = line.split()[0] if line.split() else ""
        if target == "default":
            continue
        with contextlib.suppress(ValueError):
            route = ipaddress.ip_network(target, strict=False)
            taken += [str(w) for w in wanted if w.overlaps(route)]
    return taken


def hierarchies() -> list[pathlib.Path]:
    """Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers, named, unified)."""
    return sorted(
        p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink() and os.path.ismount(p)
    )


def _make_cgroups(plan: node.Plan) -> None:
    for hierarchy in hierarchies():
        group = hierarchy / plan.cgroup_root.lstrip("/")
        group.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            # A v1 cpuset cgroup starts with no CPUs or memory nodes: inherit the parent's.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (group / knob).write_text((hierarchy / knob).read_text())


def create(plan: node.Plan) -> None:
    """Make the namespace, the veth pair, the host route and the node's cgroups.

    Raises AddressTakenError when the host already routes the pod range or the veth's /30; on
    any other failure, undoes what it did and raises NamespaceError.
    """
    link = f"{plan.addresses.host_ip}/{plan.addresses.link_prefix}"
    taken = _routed([plan.addresses.pod_cidr, str(ipaddress.ip_network(link, strict=False))])
    if taken:
        raise AddressTakenError(f"the host already routes {', '.join(taken)}")
    ns = plan.netns
    try:
        plan.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _run(["ip", "netns", "add", ns])
        # The peer is made inside the namespace: the host may have an eth0 of its own.
        peer = ["peer", "name", "eth0", "netns", ns]
        _run(["ip", "link", "add", plan.veth_host, "type", "veth", *peer])
        _run(["ip", "addr", "add", link, "dev", plan.veth_host])
        _run(["ip", "link", "set", plan.veth_host, "up"])
        node_link = f"{plan.addresses.node_ip}/{plan.addresses.link_prefix}"
        _run(["ip", "-n", ns, "addr", "add", node_link, "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # The namespace has no default route (nothing may leave it), so a Service address
        # needs a route of its own before kube-proxy's DNAT in OUTPUT can rewrite it; the
        # namespace's loopback serves (these kernels have no dummy interfaces).
        _run(["ip", "-n", ns, "route", "add", plan.service_cidr, "dev", "lo"])
        # Forwarding between the bridge and the veth happens inside the namespace only; its
        # sysctl is per namespace, the host's stays as it is.
        _run(node.in_netns(plan, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        via = ["via", plan.addresses.node_ip, "dev", plan.veth_host]
        _run(["ip", "route", "add", plan.addresses.pod_cidr, *via])
        _make_cgroups(plan)
    except BaseException:
        destroy(plan)
        raise


def _cgroup_tree(group: pathlib.Path) -> list[pathlib.Path]:
    """`group` and every cgroup below it, children before their parents.

    The tree changes while we walk it: a container's cgroup goes when runc deletes the container,
    which killing its processes sets off. os.walk skips a directory that vanished mid-walk, where
    pathlib's rglob (Python 3.11) raises FileNotFoundError out of the teardown.
    """
    return [pathlib.Path(d) for d, _, _ in os.walk(group, topdown=False)]


def _pids(group: pathlib.Path) -> list[int]:
    pids: list[int] = []
    for directory in _cgroup_tree(group):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(line) for line in (directory / "cgroup.procs").read_text().split()]
    return pids


def kill_pods(plan: node.Plan) -> None:
    """SIGKILL every process in the node's cgroups (the pods' containers) and wait for them."""
    groups = [h / plan.cgroup_root.lstrip("/") for h in hierarchies()]
    deadline = time.monotonic() + _KILL_WAIT_S
    while True:
        pids = sorted({pid for g in groups if g.is_dir() for pid in _pids(g)})
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _mounts_under(root: pathlib.Path) -> list[str]:
    prefix = f"{root}/"
    points = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)  # deepest first


def _remove_cgroups(plan: node.Plan) -> list[str]:
    left = []
    for hierarchy in hierarchies():
        group = hierarchy / plan.cgroup_root.lstrip("/")
        if not group.is_dir():
            continue
        # rmdir bottom-up: a cgroup directory goes only once its children are gone.
        for directory in _cgroup_tree(group):
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue  # removed by runc between the walk and here: gone is what we want
            except OSError as exc:
                left.append(f"{directory}: {exc.strerror}")
    return left


def _remove_host_entries(plan: node.Plan) -> None:
    """This node's files in host directories the CNI library and kubelet write regardless."""
    sandboxes = (
        [d.name for d in plan.sandboxes_dir.iterdir()] if plan.sandboxes_dir.is_dir() else []
    )
    if node.CNI_CACHE_DIR.is_dir():
        for entry in node.CNI_CACHE_DIR.iterdir():
            if any(f"-{sandbox}-" in entry.name for sandbox in sandboxes):
                entry.unlink(missing_ok=True)
    if node.CONTAINER_LOG_LINKS.is_dir():
        for link in node.CONTAINER_LOG_LINKS.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(f"{plan.root}/"):
                    link.unlink()


def destroy(plan: node.Plan) -> None:
    """Remove everything `create` and the node made; call after its processes are stopped.

    Unmounts what containerd and kubelet mounted under the node's directory (the pods' root
    filesystems, volumes and network namespace files among them), removes the namespace (which
    takes the veth pair and the host route with it), the cgroups and the node's directory.
    Raises NamespaceError naming what is left.
    """
    kill_pods(plan)
    _remove_host_entries(plan)
    problems: list[str] = []
    for point in _mounts_under(plan.root):
        result = subprocess.run(
            ["umount", "-l", point], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            problems.append(f"umount {point}")
    if (NETNS_DIR / plan.netns).exists():
        result = subprocess.run(
            ["ip", "netns", "delete", plan.netns], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            problems.append(f"ip netns delete {plan.netns}: {result.stderr.strip()}")
    # Normally gone with the namespace; a veth whose peer never moved in stays otherwise.
    if pathlib.Path(f"/sys/class/net/{plan.veth_host}").exists():
        subprocess.run(["ip", "link", "delete", plan.veth_host], capture_output=True, check=False)
    problems += _remove_cgroups(plan)
    shutil.rmtree(plan.root, ignore_errors=True)
    shutil.rmtree(plan.run_dir, ignore_errors=True)
    if problems:
        raise NamespaceError("the node was not removed completely: " + "; ".join(problems))
