"""A pod's JSON, as the API server serves it, turned into the typed spec the agent runs. Pure.

Only what the agent acts on is read. The API server has validated the pod already, so errors
here are rare; when one happens, `SpecError` names the field (`spec.containers[0].ports[1]...`)
so the pod's status can say exactly what the agent could not use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeAlias

DEFAULT_TERMINATION_GRACE_SECONDS = 30
RESTART_POLICIES = ("Always", "OnFailure", "Never")


class SpecError(ValueError):
    """A pod field the agent cannot use; the message starts with the field's path."""


@dataclasses.dataclass(frozen=True)
class HttpGet:
    """An HTTP GET: success is a status code in [200, 400)."""

    port: int | str
    path: str = "/"
    host: str | None = None
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class TcpSocket:
    """A TCP connect: success is an accepted connection."""

    port: int | str
    host: str | None = None


@dataclasses.dataclass(frozen=True)
class Exec:
    """A command run in the container's environment: success is exit code 0."""

    command: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Sleep:
    """A lifecycle hook that only waits (`lifecycle.preStop.sleep`)."""

    seconds: int


@dataclasses.dataclass(frozen=True)
class Unsupported:
    """A handler kind the agent does not run (gRPC probes); it always fails, loudly."""

    kind: str


Action: TypeAlias = HttpGet | TcpSocket | Exec | Sleep | Unsupported


@dataclasses.dataclass(frozen=True)
class Probe:
    """A readiness, liveness or startup probe, with Kubernetes' defaults."""

    action: Action
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: int | None = None


@dataclasses.dataclass(frozen=True)
class FieldRef:
    """`valueFrom.fieldRef`: a downward-API field of the pod."""

    field_path: str


@dataclasses.dataclass(frozen=True)
class ResourceFieldRef:
    """`valueFrom.resourceFieldRef`: not resolved by this agent (logged and left unset)."""

    resource: str


@dataclasses.dataclass(frozen=True)
class KeyRef:
    """`valueFrom.configMapKeyRef` or `valueFrom.secretKeyRef`."""

    kind: str  # "ConfigMap" or "Secret"
    name: str
    key: str
    optional: bool = False


EnvSource: TypeAlias = FieldRef | ResourceFieldRef | KeyRef


@dataclasses.dataclass(frozen=True)
class EnvVar:
    """One `env` entry: a literal value (may hold `$(VAR)`) or a source."""

    name: str
    value: str = ""
    source: EnvSource | None = None


@dataclasses.dataclass(frozen=True)
class EnvFrom:
    """One `envFrom` entry: every key of a ConfigMap or Secret, with an optional prefix."""

    kind: str  # "ConfigMap" or "Secret"
    name: str
    prefix: str = ""
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class Container:
    """One container (or init container) of the pod."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    ports: Mapping[str, int] = dataclasses.field(default_factory=dict)
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    pre_stop: Action | None = None
    working_dir: str | None = None
    # Only init containers have one: "Always" makes a native sidecar.
    restart_policy: str | None = None

    def port_number(self, port: int | str) -> int | None:
        """A probe's port: a number, or the name of one of this container's ports."""
        if isinstance(port, int):
            return port
        if port.isdigit():
            return int(port)
        return self.ports.get(port)


@dataclasses.dataclass(frozen=True)
class Pod:
    """The parts of a pod the agent runs and reports on."""

    namespace: str
    name: str
    uid: str
    node_name: str
    restart_policy: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    termination_grace_period_seconds: int = DEFAULT_TERMINATION_GRACE_SECONDS
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    host_network: bool = False
    service_account_name: str = ""
    # The API server gave the pod a projected service-account token volume (automount was
    # not turned off): the agent provides the credentials (see `account`).
    service_account_token: bool = False
    readiness_gates: tuple[str, ...] = ()
    phase: str | None = None
    pod_ip: str | None = None
    # The status as last seen on the API server: previous container states and conditions.
    status: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def grace_period_seconds(self) -> int:
        """How long a deletion may take: the deletion's own grace period when it has one."""
        if self.deletion_grace_period_seconds is not None:
            return self.deletion_grace_period_seconds
        return self.termination_grace_period_seconds


# -- parsing -------------------------------------------------------------------------------


def _has_token_volume(volumes: object) -> bool:
    """Whether any volume projects a service-account token. Volumes are not run here, so
    malformed ones are not an error of the pod; they simply hold no token."""
    if not isinstance(volumes, list):
        return False
    for volume in volumes:
        projected = volume.get("projected") if isinstance(volume, Mapping) else None
        sources = projected.get("sources") if isinstance(projected, Mapping) else None
        if isinstance(sources, list) and any(
            isinstance(source, Mapping) and "serviceAccountToken" in source for source in sources
        ):
            return True
    return False


def _mapping(value: object, path: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}: must be an object, got {type(value).__name__}")
    return value


def _list(value: object, path: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{path}: must be a list, got {type(value).__name__}")
    return value


def _str(value: object, path: str, default: str | None = None) -> str:
    if value is None:
        if default is None:
            raise SpecError(f"{path}: is required")
        return default
    if not isinstance(value, str):
        raise SpecError(f"{path}: must be a string, got {value!r}")
    return value


def _optional_str(value: object, path: str) -> str | None:
    return None if value is None else _str(value, path)


def _int(value: object, path: str, default: int, minimum: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}: must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{path}: must be at least {minimum}, got {value}")
    return value


def _optional_int(value: object, path: str) -> int | None:
    return None if value is None else _int(value, path, 0)


def _bool(value: object, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise SpecError(f"{path}: must be true or false, got {value!r}")
    return value


def _str_tuple(value: object, path: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(_str(item, f"{path}[{i}]") for i, item in enumerate(_list(value, path)))


def _str_map(value: object, path: str) -> dict[str, str]:
    return {key: _str(item, f"{path}[{key!r}]") for key, item in _mapping(value, path).items()}


def _port(value: object, path: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{path}: must be a port number or a port name, got {value!r}")
    if isinstance(value, int) and not 0 < value < 65536:
        raise SpecError(f"{path}: must be between 1 and 65535, got {value}")
    return value


def parse_action(raw: Mapping[str, object], path: str) -> Action:
    """A probe or lifecycle handler: exactly one of httpGet, tcpSocket, exec, sleep, grpc."""
    if "httpGet" in raw:
        http = _mapping(raw["httpGet"], f"{path}.httpGet")
        headers = []
        for i, header in enumerate(_list(http.get("httpHeaders"), f"{path}.httpGet.httpHeaders")):
            entry = _mapping(header, f"{path}.httpGet.httpHeaders[{i}]")
            headers.append(
                (
                    _str(entry.get("name"), f"{path}.httpGet.httpHeaders[{i}].name"),
                    _str(entry.get("value"), f"{path}.httpGet.httpHeaders[{i}].value", ""),
                )
            )
        scheme = _str(http.get("scheme"), f"{path}.httpGet.scheme", "HTTP")
        if scheme not in ("HTTP", "HTTPS"):
            raise SpecError(f"{path}.httpGet.scheme: must be HTTP or HTTPS, got {scheme!r}")
        return HttpGet(
            port=_port(http.get("port"), f"{path}.httpGet.port"),
            path=_str(http.get("path"), f"{path}.httpGet.path", "/") or "/",
            host=_optional_str(http.get("host"), f"{path}.httpGet.host") or None,
            scheme=scheme,
            headers=tuple(headers),
        )
    if "tcpSocket" in raw:
        tcp = _mapping(raw["tcpSocket"], f"{path}.tcpSocket")
        return TcpSocket(
            port=_port(tcp.get("port"), f"{path}.tcpSocket.port"),
            host=_optional_str(tcp.get("host"), f"{path}.tcpSocket.host") or None,
        )
    if "exec" in raw:
        command = _str_tuple(
            _mapping(raw["exec"], f"{path}.exec").get("command"), f"{path}.exec.command"
        )
        if not command:
            raise SpecError(f"{path}.exec.command: must name a command")
        return Exec(command=command)
    if "sleep" in raw:
        sleep = _mapping(raw["sleep"], f"{path}.sleep")
        return Sleep(seconds=_int(sleep.get("seconds"), f"{path}.sleep.seconds", 0))
    if "grpc" in raw:
        return Unsupported(kind="grpc")
    raise SpecError(f"{path}: needs one of httpGet, tcpSocket, exec, sleep")


def _probe(raw: object, path: str) -> Probe | None:
    if raw is None:
        return None
    probe = _mapping(raw, path)
    return Probe(
        action=parse_action(probe, path),
        initial_delay_seconds=_int(
            probe.get("initialDelaySeconds"), f"{path}.initialDelaySeconds", 0
        ),
        period_seconds=_int(probe.get("periodSeconds"), f"{path}.periodSeconds", 10, minimum=1),
        timeout_seconds=_int(probe.get("timeoutSeconds"), f"{path}.timeoutSeconds", 1, minimum=1),
        success_threshold=_int(
            probe.get("successThreshold"), f"{path}.successThreshold", 1, minimum=1
        ),
        failure_threshold=_int(
            probe.get("failureThreshold"), f"{path}.failureThreshold", 3, minimum=1
        ),
        termination_grace_period_seconds=_optional_int(
            probe.get("terminationGracePeriodSeconds"), f"{path}.terminationGracePeriodSeconds"
        ),
    )


def _env_var(raw: object, path: str) -> EnvVar:
    entry = _mapping(raw, path)
    name = _str(entry.get("name"), f"{path}.name")
    if "valueFrom" not in entry or entry["valueFrom"] is None:
        return EnvVar(name=name, value=_str(entry.get("value"), f"{path}.value", ""))
    source = _mapping(entry["valueFrom"], f"{path}.valueFrom")
    if "fieldRef" in source:
        ref = _mapping(source["fieldRef"], f"{path}.valueFrom.fieldRef")
        field_path = _str(ref.get("fieldPath"), f"{path}.valueFrom.fieldRef.fieldPath")
        return EnvVar(name=name, source=FieldRef(field_path=field_path))
    if "resourceFieldRef" in source:
        ref = _mapping(source["resourceFieldRef"], f"{path}.valueFrom.resourceFieldRef")
        resource = _str(ref.get("resource"), f"{path}.valueFrom.resourceFieldRef.resource")
        return EnvVar(name=name, source=ResourceFieldRef(resource=resource))
    for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
        if field in source:
            ref = _mapping(source[field], f"{path}.valueFrom.{field}")
            return EnvVar(
                name=name,
                source=KeyRef(
                    kind=kind,
                    name=_str(ref.get("name"), f"{path}.valueFrom.{field}.name"),
                    key=_str(ref.get("key"), f"{path}.valueFrom.{field}.key"),
                    optional=_bool(ref.get("optional"), f"{path}.valueFrom.{field}.optional"),
                ),
            )
    raise SpecError(
        f"{path}.valueFrom: needs one of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef"
    )


def _env_from(raw: object, path: str) -> EnvFrom:
    entry = _mapping(raw, path)
    prefix = _str(entry.get("prefix"), f"{path}.prefix", "")
    for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
        if field in entry:
            ref = _mapping(entry[field], f"{path}.{field}")
            return EnvFrom(
                kind=kind,
                name=_str(ref.get("name"), f"{path}.{field}.name"),
                prefix=prefix,
                optional=_bool(ref.get("optional"), f"{path}.{field}.optional"),
            )
    raise SpecError(f"{path}: needs configMapRef or secretRef")


def _ports(raw: object, path: str) -> dict[str, int]:
    named: dict[str, int] = {}
    for i, item in enumerate(_list(raw, path)):
        port = _mapping(item, f"{path}[{i}]")
        number = _port(port.get("containerPort"), f"{path}[{i}].containerPort")
        if not isinstance(number, int):
            raise SpecError(f"{path}[{i}].containerPort: must be a number, got {number!r}")
        name = _optional_str(port.get("name"), f"{path}[{i}].name")
        if name:
            named[name] = number
    return named


def parse_container(raw: object, path: str) -> Container:
    """One entry of `spec.containers` or `spec.initContainers`."""
    entry = _mapping(raw, path)
    lifecycle = _mapping(entry.get("lifecycle"), f"{path}.lifecycle")
    pre_stop_raw = lifecycle.get("preStop")
    pre_stop = (
        None
        if pre_stop_raw is None
        else parse_action(
            _mapping(pre_stop_raw, f"{path}.lifecycle.preStop"), f"{path}.lifecycle.preStop"
        )
    )
    restart_policy = _optional_str(entry.get("restartPolicy"), f"{path}.restartPolicy")
    if restart_policy is not None and restart_policy not in RESTART_POLICIES:
        raise SpecError(
            f"{path}.restartPolicy: must be one of {RESTART_POLICIES}, got {restart_policy!r}"
        )
    return Container(
        name=_str(entry.get("name"), f"{path}.name"),
        image=_str(entry.get("image"), f"{path}.image"),
        command=_str_tuple(entry.get("command"), f"{path}.command"),
        args=_str_tuple(entry.get("args"), f"{path}.args"),
        env=tuple(
            _env_var(item, f"{path}.env[{i}]")
            for i, item in enumerate(_list(entry.get("env"), f"{path}.env"))
        ),
        env_from=tuple(
            _env_from(item, f"{path}.envFrom[{i}]")
            for i, item in enumerate(_list(entry.get("envFrom"), f"{path}.envFrom"))
        ),
        ports=_ports(entry.get("ports"), f"{path}.ports"),
        readiness_probe=_probe(entry.get("readinessProbe"), f"{path}.readinessProbe"),
        liveness_probe=_probe(entry.get("livenessProbe"), f"{path}.livenessProbe"),
        startup_probe=_probe(entry.get("startupProbe"), f"{path}.startupProbe"),
        pre_stop=pre_stop,
        working_dir=_optional_str(entry.get("workingDir"), f"{path}.workingDir") or None,
        restart_policy=restart_policy,
    )


def parse_pod(raw: Mapping[str, object]) -> Pod:
    """The agent's view of a pod object (a dict as the API server serves it)."""
    metadata = _mapping(raw.get("metadata"), "metadata")
    spec = _mapping(raw.get("spec"), "spec")
    status = _mapping(raw.get("status"), "status")
    restart_policy = _str(spec.get("restartPolicy"), "spec.restartPolicy", "Always")
    if restart_policy not in RESTART_POLICIES:
        raise SpecError(
            f"spec.restartPolicy: must be one of {RESTART_POLICIES}, got {restart_policy!r}"
        )
    containers = tuple(
        parse_container(item, f"spec.containers[{i}]")
        for i, item in enumerate(_list(spec.get("containers"), "spec.containers"))
    )
    if not containers:
        raise SpecError("spec.containers: must have at least one container")
    gates = tuple(
        _str(
            _mapping(gate, f"spec.readinessGates[{i}]").get("conditionType"),
            f"spec.readinessGates[{i}].conditionType",
        )
        for i, gate in enumerate(_list(spec.get("readinessGates"), "spec.readinessGates"))
    )
    return Pod(
        namespace=_str(metadata.get("namespace"), "metadata.namespace", "default"),
        name=_str(metadata.get("name"), "metadata.name"),
        uid=_str(metadata.get("uid"), "metadata.uid"),
        node_name=_str(spec.get("nodeName"), "spec.nodeName", ""),
        restart_policy=restart_policy,
        containers=containers,
        init_containers=tuple(
            parse_container(item, f"spec.initContainers[{i}]")
            for i, item in enumerate(_list(spec.get("initContainers"), "spec.initContainers"))
        ),
        labels=_str_map(metadata.get("labels"), "metadata.labels"),
        annotations=_str_map(metadata.get("annotations"), "metadata.annotations"),
        termination_grace_period_seconds=_int(
            spec.get("terminationGracePeriodSeconds"),
            "spec.terminationGracePeriodSeconds",
            DEFAULT_TERMINATION_GRACE_SECONDS,
        ),
        deletion_timestamp=_optional_str(
            metadata.get("deletionTimestamp"), "metadata.deletionTimestamp"
        ),
        deletion_grace_period_seconds=_optional_int(
            metadata.get("deletionGracePeriodSeconds"), "metadata.deletionGracePeriodSeconds"
        ),
        host_network=_bool(spec.get("hostNetwork"), "spec.hostNetwork"),
        service_account_name=_str(spec.get("serviceAccountName"), "spec.serviceAccountName", ""),
        service_account_token=_has_token_volume(spec.get("volumes")),
        readiness_gates=gates,
        phase=_optional_str(status.get("phase"), "status.phase"),
        pod_ip=_optional_str(status.get("podIP"), "status.podIP") or None,
        status=status,
    )
