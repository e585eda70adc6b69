"""The command line of every process of a local cluster. Pure: builds argv lists, runs nothing.

Everything listens on 127.0.0.1 only, on ports chosen per cluster, so two clusters run side by
side and nothing is reachable from outside the machine.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable

from kvscale.localstack import binaries, layout, network, node

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"

# Start order; `stop` goes the other way round, the node (kube-proxy, kubelet, containerd and
# the relay) first so it can end its pods while the API server still answers.
ORDER = (
    ETCD,
    APISERVER,
    CONTROLLER_MANAGER,
    SCHEDULER,
    node.RELAY,
    node.CONTAINERD,
    node.KUBELET,
    node.KUBE_PROXY,
)

# The issuer is what in-cluster clients expect; nothing fetches its discovery document here.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclasses.dataclass(frozen=True)
class Ports:
    """The TCP ports one cluster listens on (all on 127.0.0.1)."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    def __post_init__(self) -> None:
        values = dataclasses.astuple(self)
        for field, value in zip(dataclasses.fields(self), values, strict=True):
            if not isinstance(value, int) or not 1 <= value <= 65535:
                raise ValueError(f"ports.{field.name} = {value!r}: must be a TCP port")
        if len(set(values)) != len(values):
            raise ValueError(f"ports = {values}: must all differ")

    @property
    def apiserver_url(self) -> str:
        return f"https://{network.LOOPBACK}:{self.apiserver}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the command lines depend on."""

    name: str
    files: layout.Layout
    ports: Ports
    service_cidr: str
    etcd_data_dir: pathlib.Path


Builder = Callable[[binaries.Binaries, Plan], list[str]]


def _url(scheme: str, port: int) -> str:
    return f"{scheme}://{network.LOOPBACK}:{port}"


def etcd(bins: binaries.Binaries, plan: Plan) -> list[str]:
    peer = _url("http", plan.ports.etcd_peer)
    client = _url("http", plan.ports.etcd_client)
    return [
        str(bins.path(ETCD)),
        "--name=default",
        f"--data-dir={plan.etcd_data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token=kvscale-{plan.name}",
        # The data lives in tmpfs and dies with the cluster; fsync would only cost time.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver(bins: binaries.Binaries, plan: Plan) -> list[str]:
    pem = plan.files.pem
    return [
        str(bins.path(APISERVER)),
        f"--etcd-servers={_url('http', plan.ports.etcd_client)}",
        f"--bind-address={network.LOOPBACK}",
        f"--advertise-address={network.LOOPBACK}",
        f"--secure-port={plan.ports.apiserver}",
        # With one API server advertising a loopback address, the `kubernetes` Service's
        # endpoints would point at 127.0.0.1 from every pod's point of view: keep none.
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pem('apiserver.crt')}",
        f"--tls-private-key-file={pem('apiserver.key')}",
        f"--client-ca-file={pem('ca.crt')}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pem('service-account.pub')}",
        f"--service-account-signing-key-file={pem('service-account.key')}",
        f"--service-cluster-ip-range={plan.service_cidr}",
        # Node first, so the kubelet's own credentials are confined as on a real cluster.
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--profiling=false",
        f"--cert-dir={plan.files.pki_dir / 'apiserver-generated'}",
        # `kubectl logs/exec` on a real node: the API server calls its kubelet as admin (the
        # kubelet's webhook authorisation asks the API server, which allows system:masters),
        # at the node's InternalIP, since nothing resolves the node's name here.
        f"--kubelet-client-certificate={pem('admin.crt')}",
        f"--kubelet-client-key={pem('admin.key')}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def controller_manager(bins: binaries.Binaries, plan: Plan) -> list[str]:
    pem = plan.files.pem
    kubeconfig = plan.files.component_kubeconfig(CONTROLLER_MANAGER)
    return [
        str(bins.path(CONTROLLER_MANAGER)),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={network.LOOPBACK}",
        f"--secure-port={plan.ports.controller_manager}",
        f"--tls-cert-file={pem('controller-manager-serving.crt')}",
        f"--tls-private-key-file={pem('controller-manager-serving.key')}",
        f"--client-ca-file={pem('ca.crt')}",
        f"--service-account-private-key-file={pem('service-account.key')}",
        f"--root-ca-file={pem('ca.crt')}",
        # Each controller acts as its own service account, so RBAC applies to it as in prod.
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pem('ca.crt')}",
        f"--cluster-signing-key-file={pem('ca.key')}",
        f"--service-cluster-ip-range={plan.service_cidr}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def scheduler(bins: binaries.Binaries, plan: Plan) -> list[str]:
    pem = plan.files.pem
    kubeconfig = plan.files.component_kubeconfig(SCHEDULER)
    return [
        str(bins.path(SCHEDULER)),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={network.LOOPBACK}",
        f"--secure-port={plan.ports.scheduler}",
        f"--tls-cert-file={pem('scheduler-serving.crt')}",
        f"--tls-private-key-file={pem('scheduler-serving.key')}",
        f"--client-ca-file={pem('ca.crt')}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def health_url(component: str, ports: Ports) -> str | None:
    """The URL whose 200 means `component` is healthy (None for the node's parts, which
    `cluster` checks its own way)."""
    urls = {
        ETCD: f"{_url('http', ports.etcd_client)}/health",
        APISERVER: f"{ports.apiserver_url}/readyz",
        CONTROLLER_MANAGER: f"{_url('https', ports.controller_manager)}/healthz",
        SCHEDULER: f"{_url('https', ports.scheduler)}/healthz",
    }
    return urls.get(component)
