"""A container's environment variables, resolved the way kubelet resolves them. Pure.

Order and precedence follow kubelet: `envFrom` sources first (in order, later keys win), then
`env` entries in order, each value `$(VAR)`-expanded against everything defined before it. The
container's command and args are expanded against the result. The image's own environment (the
table in `images`) sits underneath: container variables override it, as in a container runtime.

ConfigMaps and Secrets are fetched by the I/O layer (`references` says which) and handed in as
plain string maps; a missing one that is not optional is a `ConfigError`, which kubelet reports
as the container waiting with reason `CreateContainerConfigError`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from kvscale.localstack.nodeagent import expansion, podspec

# Variables a process needs to run at all, taken from the agent's own environment. Everything
# else comes from the image table and the pod spec, as it would in a container.
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")

_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


class ConfigError(ValueError):
    """The container cannot be given its environment (kubelet: CreateContainerConfigError)."""


@dataclasses.dataclass(frozen=True)
class Sources:
    """ConfigMap and Secret data the I/O layer fetched, by name; None marks one not found."""

    config_maps: Mapping[str, Mapping[str, str] | None] = dataclasses.field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str] | None] = dataclasses.field(default_factory=dict)

    def data(self, kind: str, name: str) -> Mapping[str, str] | None:
        table = self.config_maps if kind == "ConfigMap" else self.secrets
        return table.get(name)


@dataclasses.dataclass(frozen=True)
class Environment:
    """A container's variables (what `$(VAR)` in command and args sees) and notes to log."""

    variables: dict[str, str]
    notes: tuple[str, ...] = ()


def references(container: podspec.Container) -> set[tuple[str, str]]:
    """The (kind, name) of every ConfigMap and Secret the container's env reads."""
    refs = {(source.kind, source.name) for source in container.env_from}
    refs.update(
        (var.source.kind, var.source.name)
        for var in container.env
        if isinstance(var.source, podspec.KeyRef)
    )
    return refs


def field_value(pod: podspec.Pod, field_path: str, pod_ip: str, host_ip: str) -> str:
    """A downward-API field (`valueFrom.fieldRef.fieldPath`) of the pod."""
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account_name,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return simple[field_path]
    match = _LABEL_REF.match(field_path)
    if match:
        table = pod.labels if match.group(1) == "labels" else pod.annotations
        return table.get(match.group(2), "")
    raise ConfigError(f"fieldRef.fieldPath {field_path!r} is not supported by the node agent")


def container_environment(
    pod: podspec.Pod,
    container: podspec.Container,
    pod_ip: str,
    host_ip: str,
    sources: Sources,
) -> Environment:
    """The container's own variables (without the image's), in kubelet's precedence order."""
    resolved: dict[str, str] = {}
    notes: list[str] = []
    for source in container.env_from:
        data = sources.data(source.kind, source.name)
        if data is None:
            if source.optional:
                continue
            raise ConfigError(f"{source.kind.lower()} {source.name!r} not found")
        for key, value in data.items():
            name = source.prefix + key
            if "=" in name or not name:
                notes.append(f"envFrom {source.kind} {source.name!r}: skipped invalid key {key!r}")
                continue
            resolved[name] = value
    for var in container.env:
        if var.source is None:
            resolved[var.name] = expansion.expand(var.value, resolved)
        elif isinstance(var.source, podspec.FieldRef):
            resolved[var.name] = field_value(pod, var.source.field_path, pod_ip, host_ip)
        elif isinstance(var.source, podspec.ResourceFieldRef):
            notes.append(
                f"env {var.name}: resourceFieldRef {var.source.resource!r} is not resolved by "
                "the node agent; the variable is left unset"
            )
        else:
            data = sources.data(var.source.kind, var.source.name)
            if data is None or var.source.key not in data:
                if var.source.optional:
                    continue
                what = f"{var.source.kind.lower()} {var.source.name!r}"
                missing = what if data is None else f"key {var.source.key!r} in {what}"
                raise ConfigError(f"env {var.name}: {missing} not found")
            resolved[var.name] = data[var.source.key]
    return Environment(variables=resolved, notes=tuple(notes))


def process_environment(
    agent_environment: Mapping[str, str],
    image_environment: Mapping[str, str],
    image_bin_dirs: tuple[str, ...],
    container_variables: Mapping[str, str],
    hostname: str,
) -> dict[str, str]:
    """Everything the process gets: a few basics from the agent, the image's environment (its
    bin directories first on PATH), HOSTNAME like a container, then the container's variables."""
    env = {name: agent_environment[name] for name in PASSED_THROUGH if name in agent_environment}
    path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PATH"] = ":".join((*image_bin_dirs, path)) if image_bin_dirs else path
    env.update(image_environment)
    env["HOSTNAME"] = hostname
    env.update(container_variables)
    return env
