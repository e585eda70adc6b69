"""Where the operator's credentials come from, for lightkube and kopf alike. Reads files.

Order: `--kubeconfig`, then `$KUBECONFIG` (its first file), then the pod's service account.
Both clients get the same cluster and user: lightkube through its own config object, kopf
through a `kopf.ConnectionInfo` built from that same object.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

import kopf
from lightkube import ConfigError, KubeConfig
from lightkube.config.kubeconfig import SingleConfig

from kvscale_operator import config


class LoginError(RuntimeError):
    """No usable credentials; the message says what was tried."""


def kubeconfig_path(settings: config.Settings, environ: Mapping[str, str]) -> pathlib.Path | None:
    """The kubeconfig file to use, or None for the in-cluster service account."""
    if settings.kubeconfig is not None:
        return settings.kubeconfig
    paths = [item for item in environ.get("KUBECONFIG", "").split(os.pathsep) if item.strip()]
    return pathlib.Path(paths[0]).expanduser() if paths else None


def load(settings: config.Settings, environ: Mapping[str, str]) -> SingleConfig:
    """The cluster and user to talk to, from the first source that exists."""
    path = kubeconfig_path(settings, environ)
    try:
        if path is not None:
            if not path.is_file():
                raise LoginError(f"kubeconfig {path} does not exist")
            loaded = KubeConfig.from_file(path)
            where = str(path)
        else:
            loaded = KubeConfig.from_service_account()
            where = "the in-cluster service account"
        single = loaded.get()
    except (ConfigError, KeyError, OSError) as error:
        raise LoginError(
            f"no Kubernetes credentials: pass --kubeconfig, set $KUBECONFIG or run in a pod "
            f"with a service account ({error})"
        ) from error
    if single is None:
        raise LoginError(f"{where} has no current context")
    return single


def _file(single: SingleConfig, name: str | None) -> str | None:
    return str(single.abs_file(name)) if name else None


def connection_info(single: SingleConfig) -> kopf.ConnectionInfo:
    """The same cluster and user as kopf's connection (kopf decodes the *-data fields)."""
    cluster, user = single.cluster, single.user
    token = user.token if user else None
    if user is not None and user.token_file and not token:
        token = pathlib.Path(single.abs_file(user.token_file)).read_text().strip()
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=_file(single, cluster.certificate_auth),
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure or None,
        username=user.username if user else None,
        password=user.password if user else None,
        token=token,
        certificate_path=_file(single, user.client_cert) if user else None,
        certificate_data=user.client_cert_data if user else None,
        private_key_path=_file(single, user.client_key) if user else None,
        private_key_data=user.client_key_data if user else None,
        default_namespace=single.context.namespace,
    )
