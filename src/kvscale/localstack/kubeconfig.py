"""Kubeconfig files for a local cluster, rendered as text. Pure: no I/O.

Certificates are embedded (`*-data`), so a kubeconfig keeps working when copied elsewhere and
never points at files that `kvscale cluster down` removes.
"""

from __future__ import annotations

import base64

import yaml

from kvscale.localstack import pki


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(
    *,
    name: str,
    server: str,
    ca_pem: bytes,
    client: pki.Issued,
    user: str,
    tls_server_name: str | None = None,
) -> str:
    """A kubeconfig with one cluster, one user (client certificate) and one current context.

    `tls_server_name` is the name the server's certificate is checked against when `server`
    is an address the certificate does not name (the real node reaches the API server through
    a relay on its veth).
    """
    if not server.startswith("https://"):
        raise ValueError(f"server = {server!r}: must be an https:// URL")
    entry: dict[str, str] = {"server": server, "certificate-authority-data": _b64(ca_pem)}
    if tls_server_name is not None:
        entry["tls-server-name"] = tls_server_name
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": entry,
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert_pem),
                    "client-key-data": _b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
        "preferences": {},
    }
    rendered: str = yaml.safe_dump(document, sort_keys=False)
    return rendered
