"""The files of one cluster's state directory. Pure: names paths, touches nothing.

<state>/cluster.json          process records, ports, pod range (written by cluster.py)
<state>/kubeconfig            admin kubeconfig (system:masters), certificates embedded
<state>/pki/                  CA, serving certificates, admin client pair, SA signing keys
<state>/components/           kubeconfigs of kube-controller-manager and kube-scheduler
<state>/logs/<component>.log  stdout and stderr of every component
<state>/node/                 the real node (runtime "kubelet"): configs, containerd, kubelet
"""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class Layout:
    root: pathlib.Path

    @property
    def state_file(self) -> pathlib.Path:
        return self.root / "cluster.json"

    @property
    def lock_file(self) -> pathlib.Path:
        return self.root / ".lock"

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.root / "kubeconfig"

    @property
    def pki_dir(self) -> pathlib.Path:
        return self.root / "pki"

    @property
    def components_dir(self) -> pathlib.Path:
        return self.root / "components"

    @property
    def logs_dir(self) -> pathlib.Path:
        return self.root / "logs"

    @property
    def node_dir(self) -> pathlib.Path:
        """The real node's directory (`Cluster.node`'s root)."""
        return self.root / "node"

    def pem(self, name: str) -> pathlib.Path:
        """A PEM file in the PKI directory, e.g. `pem("ca.crt")`."""
        return self.pki_dir / name

    def component_kubeconfig(self, component: str) -> pathlib.Path:
        return self.components_dir / f"{component}.kubeconfig"

    def log(self, component: str) -> pathlib.Path:
        return self.logs_dir / f"{component}.log"
