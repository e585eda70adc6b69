"""A pod's service-account credentials: the node agent's stand-in for kubelet's projected
service-account token volume. Does I/O (a TokenRequest, files in the pod's directory).

On a real node, the API server's ServiceAccount admission gives every pod that does not opt
out (`automountServiceAccountToken: false` on the pod or its ServiceAccount) a projected
volume `kube-api-access-*`, and kubelet fills it with a token bound to the pod, the cluster's
CA and the namespace, mounted at /var/run/secrets/kubernetes.io/serviceaccount; in-cluster
clients find the API server through KUBERNETES_SERVICE_HOST/PORT.

Here every container is a process on one shared filesystem (one fixed mount path cannot
hold many pods' tokens), and the `kubernetes` Service has no endpoints (see
`components.apiserver`). So for a pod with that volume the agent does what kubelet does —
asks the TokenRequest API for a token bound to the pod (expirationSeconds 3607, which the API
server extends for pod-bound tokens exactly as it does for kubelet's) — and writes `token`,
`ca.crt` and `namespace` into `<pod dir>/serviceaccount/`, with a kubeconfig that uses them,
and sets KUBECONFIG for the pod's containers: the variable every Kubernetes client (kubectl,
client-go, lightkube, kvscale's operator) reads first. A pod that opted out gets nothing.
Deleting the pod invalidates its token, as on a real cluster.
"""

from __future__ import annotations

import base64
import pathlib

import httpx2
import lightkube
import yaml
from lightkube.models import authentication_v1, meta_v1
from lightkube.resources import core_v1

from kvscale.localstack.nodeagent import environment, podspec

# kubelet's default; the API server extends pod-bound tokens of exactly this lifetime
# (--service-account-extend-token-expiration, on by default), so they outlive the pod.
TOKEN_SECONDS = 3607
DIRECTORY = "serviceaccount"


def kubeconfig(server: str, namespace: str, directory: pathlib.Path) -> str:
    """A kubeconfig for the pod's service account: the files in `directory`, the namespace as
    the default one (as in-cluster config does). Pure."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "in-cluster",
                "cluster": {"server": server, "certificate-authority": str(directory / "ca.crt")},
            }
        ],
        "users": [{"name": "service-account", "user": {"tokenFile": str(directory / "token")}}],
        "contexts": [
            {
                "name": "in-cluster",
                "context": {
                    "cluster": "in-cluster",
                    "user": "service-account",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "in-cluster",
    }
    rendered: str = yaml.safe_dump(document, sort_keys=False)
    return rendered


def _cluster(agent_kubeconfig: pathlib.Path) -> tuple[str, bytes]:
    """The API server's URL and CA certificate (PEM) from the agent's own kubeconfig."""
    single = lightkube.KubeConfig.from_file(agent_kubeconfig).get()
    if single is None:
        raise environment.ConfigError(f"the node agent's kubeconfig {agent_kubeconfig} is empty")
    cluster = single.cluster
    if cluster.certificate_auth_data:
        ca = base64.b64decode(cluster.certificate_auth_data)
    elif cluster.certificate_auth:
        ca = pathlib.Path(single.abs_file(cluster.certificate_auth)).read_bytes()
    else:
        raise environment.ConfigError(
            f"the node agent's kubeconfig {agent_kubeconfig} names no certificate authority "
            "to hand to pods"
        )
    return cluster.server, ca


async def provide(
    client: lightkube.AsyncClient,
    agent_kubeconfig: pathlib.Path,
    pod: podspec.Pod,
    pod_directory: pathlib.Path,
) -> dict[str, str]:
    """The environment that gives the pod's containers its service account (KUBECONFIG), or
    nothing for a pod without a token volume. A failure is a `ConfigError` (kubelet reports
    it the same way: the container waits with CreateContainerConfigError)."""
    if not pod.service_account_token:
        return {}
    account = pod.service_account_name or "default"
    request = core_v1.ServiceAccount.Token(
        # lightkube reads metadata on every POST; the namespace comes from the URL.
        metadata=meta_v1.ObjectMeta(),
        spec=authentication_v1.TokenRequestSpec(
            audiences=[],
            boundObjectRef=authentication_v1.BoundObjectReference(
                apiVersion="v1", kind="Pod", name=pod.name, uid=pod.uid
            ),
            expirationSeconds=TOKEN_SECONDS,
        ),
    )
    try:
        server, ca = _cluster(agent_kubeconfig)
        issued = await client.create(request, account, namespace=pod.namespace)
    except (lightkube.ApiError, lightkube.ConfigError, httpx2.HTTPError, OSError) as error:
        raise environment.ConfigError(
            f"failed to fetch a token for service account {pod.namespace}/{account}: {error}"
        ) from error
    token = issued.status.token if issued.status is not None else ""
    if not token:
        raise environment.ConfigError(
            f"the TokenRequest for service account {pod.namespace}/{account} returned no token"
        )
    directory = pod_directory / DIRECTORY
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, content in (
        ("token", token),
        ("ca.crt", ca.decode()),
        ("namespace", pod.namespace),
        ("kubeconfig", kubeconfig(server, pod.namespace, directory)),
    ):
        path = directory / name
        path.write_text(content)
        path.chmod(0o600)
    return {"KUBECONFIG": str(directory / "kubeconfig")}
