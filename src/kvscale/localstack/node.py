"""The real node of a local cluster: its addresses, config files and command lines. Pure.

The node is containerd, the CNI bridge, kubelet and kube-proxy, all inside one network
namespace that `kvscale cluster up` creates and reaches from the host through a veth pair. The
pod and Service ranges exist only inside that namespace (the host gets one route: the pod range
via the veth), so no pod or Service address can reach or be reached from an outside interface.
Everything here renders text or argv lists from a `Plan`; `namespace` and `cluster` do the I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import pathlib

import yaml

CONTAINERD = "containerd"
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
RELAY = "apiserver-relay"

# Images built by scripts/build-node.sh and imported into the node's containerd.
PAUSE_IMAGE = "kvscale.local/pause:3.10"
TEST_IMAGE = "kvscale.local/webecho:1"
GPU_RESOURCE = "nvidia.com/gpu"
# Where Debian's packages (installed by scripts/build-node.sh) put them.
CNI_BIN_DIR = pathlib.Path("/usr/lib/cni")
CONTAINERD_BINARY = "/usr/bin/containerd"
NSENTER = "/usr/bin/nsenter"
# Paths on the host that containerd 1.6's CNI library and kubelet use whatever they are told:
# `namespace.destroy` removes this node's entries from them.
CNI_CACHE_DIR = pathlib.Path("/var/lib/cni/results")
CONTAINER_LOG_LINKS = pathlib.Path("/var/log/containers")
KUBELET_PORT = 10250
BRIDGE = "kvscale0"  # inside the node's namespace, so every cluster may use the same name


@dataclasses.dataclass(frozen=True)
class Addresses:
    """The node's addresses, derived from the API server port so clusters never share them.

    k = port % 1024 picks a pod /24 in 10.244.0.0/14 and a /30 in 100.64.0.0/20 for the veth
    (host side .1, node side .2). Two running clusters whose ports agree modulo 1024 would
    collide; `namespace.create` refuses a range the host already routes, and the caller then
    chooses new ports.
    """

    pod_cidr: str
    host_ip: str
    node_ip: str
    link_prefix: int = 30

    @classmethod
    def for_port(cls, port: int) -> Addresses:
        if not 1024 <= port <= 65535:
            raise ValueError(f"port = {port}: must be between 1024 and 65535")
        k = port % 1024
        link = ipaddress.ip_address("100.64.0.0") + 4 * k
        return cls(
            pod_cidr=f"10.{244 + k // 256}.{k % 256}.0/24",
            host_ip=str(link + 1),
            node_ip=str(link + 2),
        )


# containerd's sockets live here, not under the state directory: a unix socket's path has at
# most 104 bytes on containerd's side, which a state directory under a long home or a test's
# temporary directory overruns ("unix socket path too long"). Root only, as the node is.
RUN_ROOT = pathlib.Path("/run/kvscale")
# kubelet binds a unix socket under its root directory (`pod-resources/<up to 10 digits>`), at
# most 107 bytes long: the node's directory may have at most this many characters.
MAX_ROOT_LENGTH = 107 - len("/kubelet/pod-resources/") - 10


def check_root(root: pathlib.Path) -> pathlib.Path:
    """`root` if kubelet's sockets under it fit a unix socket's path, else ValueError."""
    if len(str(root)) > MAX_ROOT_LENGTH:
        raise ValueError(
            f"state directory: the node's directory {root} has {len(str(root))} characters, "
            f"more than the {MAX_ROOT_LENGTH} that kubelet's unix sockets under it allow; "
            "choose a shorter state root (KVSCALE_STATE)"
        )
    return root


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the node's files and command lines depend on."""

    cluster: str
    root: pathlib.Path  # <state>/node
    addresses: Addresses
    service_cidr: str
    apiserver_port: int
    node_name: str
    gpus: int

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"gpus = {self.gpus}: must be 0 or more")
        check_root(self.root)

    @property
    def netns(self) -> str:
        return f"kvscale-{self.cluster}"

    @property
    def veth_host(self) -> str:
        """The host end of the veth: interface names have at most 15 characters."""
        return "kvs" + hashlib.sha256(self.cluster.encode()).hexdigest()[:10]

    @property
    def cgroup_root(self) -> str:
        """The cgroup (in every hierarchy) that holds all of this node's pods."""
        return f"/kvscale-{self.cluster}"

    @property
    def run_dir(self) -> pathlib.Path:
        """The node's short directory for sockets (at most 13 + 40 characters: the cluster's
        name is), removed with the node."""
        return RUN_ROOT / self.cluster

    @property
    def socket(self) -> pathlib.Path:
        return self.run_dir / "containerd.sock"

    @property
    def containerd_root(self) -> pathlib.Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> pathlib.Path:
        return self.root / "containerd" / "state"

    @property
    def kubelet_dir(self) -> pathlib.Path:
        return self.root / "kubelet"

    @property
    def cni_conf_dir(self) -> pathlib.Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> pathlib.Path:
        return self.root / "cni" / "ipam"

    @property
    def sandboxes_dir(self) -> pathlib.Path:
        """One directory per pod sandbox id, kept by containerd's CRI plugin."""
        return self.containerd_root / "io.containerd.grpc.v1.cri" / "sandboxes"

    @property
    def pod_logs_dir(self) -> pathlib.Path:
        return self.root / "pod-logs"

    def file(self, name: str) -> pathlib.Path:
        """A config file of the node, e.g. `file("kubelet.yaml")`."""
        return self.root / "config" / name

    @property
    def relay_url(self) -> str:
        """Where the node reaches the API server: the relay on the host end of the veth."""
        return f"https://{self.addresses.host_ip}:{self.apiserver_port}"


def in_netns(plan: Plan, argv: list[str]) -> list[str]:
    """`argv` run inside the node's network namespace and nothing else.

    nsenter, not `ip netns exec`: the latter also gives the command a private mount namespace
    with a fresh /sys, which hides the cgroup hierarchies and would split containerd's mounts
    from kubelet's volume mounts.
    """
    return [NSENTER, f"--net=/run/netns/{plan.netns}", "--", *argv]


def containerd_config(plan: Plan) -> str:
    """containerd 1.6's config (version 2): private root, state and socket; CRI on cgroupfs."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    lines = [
        "version = 2",
        f'root = "{plan.containerd_root}"',
        f'state = "{plan.containerd_state}"',
        "[grpc]",
        f'  address = "{plan.socket}"',
        "[ttrpc]",
        f'  address = "{plan.socket}.ttrpc"',
        f"[{cri}]",
        f'  sandbox_image = "{PAUSE_IMAGE}"',
        # Negative oom_score_adj is denied on these machines even to root; kubelet asks -998
        # for every sandbox, which made runc fail until containerd clamps it.
        "  restrict_oom_score_adj = true",
        # Pods' network namespace files under the node's state, not the host's /run/netns,
        # so `down` finds (and unmounts) every one of them under the node's directory.
        "  netns_mounts_under_state_dir = true",
        # The stream server (exec, attach) listens inside the namespace only.
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  enable_selinux = false",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = false",
        f'  Root = "{plan.containerd_state / "runc"}"',
        f"[{cri}.cni]",
        f'  bin_dir = "{CNI_BIN_DIR}"',
        f'  conf_dir = "{plan.cni_conf_dir}"',
        "  max_conf_num = 1",
        '[plugins."io.containerd.internal.v1.opt"]',
        f'  path = "{plan.root / "containerd" / "opt"}"',
    ]
    return "\n".join(lines) + "\n"


def cni_config(plan: Plan) -> str:
    """A bridge with the gateway address, host-local IPAM and portmap (loopback is implied)."""
    document = {
        "cniVersion": "0.4.0",
        # Per cluster: the CNI library names its cache files on the host after the network.
        "name": plan.netns,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerade: pod traffic never leaves the namespace but for the host's veth,
                # which routes the pod range back here.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": plan.addresses.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(plan.cni_data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def kubelet_config(plan: Plan, client_ca: pathlib.Path) -> str:
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": plan.cgroup_root,
        # These hosts mount cgroup v1 hierarchies (cgroup2 only at /sys/fs/cgroup/unified),
        # which kubelet >= 1.35 refuses unless told otherwise.
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{plan.socket}",
        "address": plan.addresses.node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "podCIDR": plan.addresses.pod_cidr,
        "podLogsDir": str(plan.pod_logs_dir),
        "clusterDomain": "cluster.local",
        # The images cannot be pulled again (no registry): never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared, busy disk must not make the node evict pods.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "maxPods": 110,
        "resolvConf": "",
        # Status is reported often so the tests see a new Ready state quickly.
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
    }
    rendered: str = yaml.safe_dump(document, sort_keys=False)
    return rendered


def kube_proxy_config(plan: Plan, kubeconfig: pathlib.Path) -> str:
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": plan.node_name,
        "clusterCIDR": plan.addresses.pod_cidr,
        "bindAddress": plan.addresses.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zero leaves the kernel's conntrack settings alone: they are not namespaced and
        # belong to the machine.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False},
    }
    rendered: str = yaml.safe_dump(document, sort_keys=False)
    return rendered


def containerd_argv(plan: Plan) -> list[str]:
    return in_netns(plan, [CONTAINERD_BINARY, "--config", str(plan.file("containerd.toml"))])


def kubelet_argv(plan: Plan, binary: pathlib.Path, kubeconfig: pathlib.Path) -> list[str]:
    return in_netns(
        plan,
        [
            str(binary),
            f"--config={plan.file('kubelet.yaml')}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={plan.kubelet_dir}",
            f"--cert-dir={plan.kubelet_dir / 'pki'}",
            f"--node-ip={plan.addresses.node_ip}",
            f"--hostname-override={plan.node_name}",
            "--v=1",
        ],
    )


def kube_proxy_argv(plan: Plan, binary: pathlib.Path) -> list[str]:
    return in_netns(plan, [str(binary), f"--config={plan.file('kube-proxy.yaml')}", "--v=1"])


def gpu_patch(gpus: int) -> str:
    """The JSON patch of the node's status that advertises `gpus` fake GPUs.

    An extended resource as the Kubernetes docs show it: capacity and allocatable, which the
    scheduler counts like any other resource; nothing on the node backs it.
    """
    key = GPU_RESOURCE.replace("/", "~1")
    return json.dumps(
        [
            {"op": "add", "path": f"/status/capacity/{key}", "value": str(gpus)},
            {"op": "add", "path": f"/status/allocatable/{key}", "value": str(gpus)},
        ]
    )


def api_endpoint_slice(plan: Plan, port: int) -> str:
    """The EndpointSlice that points the `kubernetes` Service at the relay, as JSON.

    The API server runs with `--endpoint-reconciler-type=none` (it listens on the host's
    loopback, which no pod can reach), so nothing fills the default Service's endpoints. Pods
    that use in-cluster config (the operator's, the sidecars') dial `KUBERNETES_SERVICE_HOST`,
    the Service's ClusterIP; kube-proxy sends that to this slice's address: the relay on the
    host end of the veth, which forwards to the API server. Its certificate names the ClusterIP.
    """
    return json.dumps(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "kvscale-localstack",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [plan.addresses.host_ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
    )
