"""Typed models of the InferenceDeployment custom resource (group kvscale.dev, v1alpha1).

Field names are snake_case in Python and camelCase on the wire (aliases). Every optional field
has a default, and the same default is written into the CRD so the API server fills it in:
what `kubectl get -o yaml` shows is what the operator acts on.

Ranges are declared once, in each field's annotation; validation that needs more than one
field (minReplicas <= maxReplicas, swap needs a size) is declared once, as a value in the
model's `rules` (`kvscale.api.rule`). From those the CRD generator writes OpenAPI bounds and CEL
rules the API server enforces at admission, the base model's validator checks the same rules so
objects parsed in tests and in `kvscale simulate` obey them, and `kvscale.scaling.settings`
words them Knative-style. A test evaluates the CEL rules and checks pydantic agrees.
"""

from __future__ import annotations

import enum
import functools
import importlib.metadata
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kvscale.api import rule

GROUP = "kvscale.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceDeployment"
PLURAL = "inferencedeployments"
SINGULAR = "inferencedeployment"
SHORT_NAMES = ("infd",)

# A Kubernetes resource.Quantity that a container's requests and limits take: its grammar
# (a number, then a binary or decimal SI suffix or a decimal exponent) without a minus sign,
# since a pod refuses a negative request. The API server's own first-pass expression
# (`^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`) also passes "1.2.3", "-1" and "1mm", which
# only the Deployment's validation then refused, after admission.
QUANTITY_PATTERN = (
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)

DEFAULT_ENGINE_IMAGE = "vllm/vllm-openai:v0.32.0"
# The image Containerfile builds, tagged with the installed package's version: pyproject.toml
# is the one place that holds it.
DEFAULT_SIDECAR_IMAGE = f"ghcr.io/kvscale/kvscale:{importlib.metadata.version('kvscale')}"


class _Model(BaseModel):
    """Base for every part of the resource: camelCase on the wire, unknown fields refused, and
    a document read the way the API server reads it (see `_as_the_api_server_reads`)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # JSON types as the CRD's schema checks them: no "8" for a number, no 1 for a boolean,
        # no true for a number (pydantic's lax mode would coerce each; the API server refuses
        # them). Enum fields opt out, so their wire strings still parse.
        strict=True,
    )
    # Rules across this object's fields: CEL rules in the CRD, checked here by `_rules_hold`.
    rules: ClassVar[tuple[rule.Rule, ...]] = ()

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """A document, by its wire (camelCase) names only, as kubectl's strict validation reads
        it: `min_replicas` in YAML is an unknown field there and here. Python code still builds
        models by attribute name (`Scaling(min_replicas=2)`), which populate_by_name allows."""
        options.setdefault("by_name", False)
        return super().model_validate(obj, **options)

    @model_validator(mode="before")
    @classmethod
    def _as_the_api_server_reads(cls, data: Any) -> Any:
        """What the API server does to a document before it validates it: a null is dropped
        (no field here is nullable, so the server prunes it and fills in the default), and a
        whole number written as a float (8000.0) is an integer where the schema wants one."""
        if not isinstance(data, dict):
            return data
        integers = _integer_fields(cls)
        return {
            key: int(value) if key in integers and _whole_float(value) else value
            for key, value in data.items()
            if value is not None
        }

    @model_validator(mode="after")
    def _rules_hold(self) -> _Model:
        broken = rule.broken(type(self), self.rules, dict(self))
        if broken:
            raise ValueError("; ".join(broken))
        return self


# The largest whole float the API server's schema checker still takes as an integer (JSON's
# safe integers): 2.0**53 is refused as "must be of type integer", as is every larger float.
_MAX_WHOLE_FLOAT = 2.0**53 - 1


def _whole_float(value: object) -> bool:
    return isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_WHOLE_FLOAT


@functools.cache
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names (wire and Python) of the model's int fields."""
    names: set[str] = set()
    for attribute, field in model.model_fields.items():
        try:
            integer = rule.model_range(model, attribute).integer
        except TypeError:  # not a number
            continue
        if integer:
            names |= {attribute, field.alias or attribute}
    return frozenset(names)


# A path component other than "..", which the API server refuses in a hostPath volume
# (written without look-ahead: the CRD's patterns are RE2).
_PATH_PART = r"([^/.][^/]*|\.|\.[^/.][^/]*|\.\.[^/]+)"
ABSOLUTE_PATH_PATTERN = rf"^/({_PATH_PART}(/{_PATH_PART})*/?)?$"
# An object's name as the API server checks it (a PersistentVolumeClaim's): a DNS-1123
# subdomain.
DNS_1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Where the engine container sees spec.model.cache; HF_HOME points there.
MODEL_CACHE_MOUNT_PATH = "/var/cache/huggingface"


class ModelCache(_Model):
    """A volume holding the Hugging Face cache the engine reads the model from, mounted at
    /var/cache/huggingface as its HF_HOME: weights reach the pods the way users give them to
    vLLM, not baked into the engine image."""

    rules: ClassVar[tuple[rule.Rule, ...]] = (
        rule.ExactlyOne(("host_path", "persistent_volume_claim")),
    )

    host_path: Annotated[str, Field(max_length=4096, pattern=ABSOLUTE_PATH_PATTERN)] | None = Field(
        default=None,
        description="A directory on the node (a hostPath volume of type Directory), "
        "e.g. a node-local copy every engine on the node shares.",
    )
    persistent_volume_claim: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_1123_SUBDOMAIN_PATTERN)]
        | None
    ) = Field(
        default=None,
        description="The name of a PersistentVolumeClaim in the resource's namespace "
        "(ReadOnlyMany or ReadWriteMany when replicas span nodes).",
    )
    read_only: bool = Field(
        default=True,
        description="Mount the cache read-only and run the engine offline (HF_HUB_OFFLINE=1): "
        "it serves what the cache holds and never downloads. false: the engine may download "
        "into the cache.",
    )


class ModelSource(_Model):
    """Which model the engine serves."""

    name: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Hugging Face model id or a path visible to the engine container."
    )
    served_name: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="Name clients use in requests (vLLM --served-model-name). Default: name.",
    )
    cache: ModelCache | None = Field(
        default=None,
        description="A volume with the Hugging Face cache (HF_HOME) holding the model: exactly "
        "one of hostPath or persistentVolumeClaim. Unset: the engine downloads into its "
        "container's filesystem.",
    )


class PreemptionPolicy(enum.StrEnum):
    """What the engine does with a running request's KV blocks when the cache runs out."""

    RECOMPUTE = "recompute"  # free the blocks; recompute the prefix later (vLLM V1's mode)
    SWAP = "swap"  # move the blocks to CPU memory (vLLM V1: KV offloading to CPU)


class KVCacheDtype(enum.StrEnum):
    AUTO = "auto"
    FP8 = "fp8"


class ScalingMode(enum.StrEnum):
    """Whether the autoscaler acts on its decisions or only publishes them."""

    ACTIVE = "Active"  # sets the engine Deployment's replicas
    ADVISORY = "Advisory"  # decides and reports, never writes the Deployment's replicas


class Preemption(_Model):
    """Preemption policy of the engine and, for `swap`, the CPU memory set aside for it."""

    rules: ClassVar[tuple[rule.Rule, ...]] = (
        rule.RequiredWhen("swap_space_gib", "policy", PreemptionPolicy.SWAP.value),
    )

    policy: PreemptionPolicy = Field(
        default=PreemptionPolicy.RECOMPUTE,
        strict=False,  # the wire's string, not only the enum member
        description="recompute: drop and recompute preempted requests; "
        "swap: offload their KV blocks to CPU memory.",
    )
    swap_space_gib: Annotated[float, Field(gt=0, le=4096)] | None = Field(
        default=None,
        alias="swapSpaceGiB",
        description="CPU memory for swapped KV blocks, in GiB (required when policy is swap).",
    )


class Engine(_Model):
    """The vLLM engine: its image and the arguments that shape its KV cache."""

    image: Annotated[str, Field(min_length=1)] = Field(
        default=DEFAULT_ENGINE_IMAGE, description="vLLM OpenAI-compatible server image."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Extra vLLM arguments, appended as given."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8000, description="Port of the engine's HTTP API and /metrics."
    )
    block_size: Annotated[int, Field(ge=16, le=1024, multiple_of=16)] = Field(
        default=16, description="Tokens per KV-cache block (a positive multiple of 16)."
    )
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9, description="Fraction of GPU memory the engine may use (0, 1]."
    )
    max_num_seqs: Annotated[int, Field(ge=1, le=65536)] = Field(
        default=256, description="Maximum concurrently running sequences."
    )
    max_model_len: Annotated[int, Field(ge=16, le=10_485_760)] | None = Field(
        default=None, description="Maximum context length in tokens. Default: the model's."
    )
    kv_cache_dtype: KVCacheDtype = Field(
        default=KVCacheDtype.AUTO, strict=False, description="KV-cache data type: auto or fp8."
    )
    enable_prefix_caching: bool = Field(
        default=True, description="Reuse KV blocks of shared prompt prefixes."
    )
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1, description="GPUs one engine spans (tensor parallelism)."
    )
    preemption: Preemption = Field(
        default_factory=Preemption, description="Preemption policy when the KV cache is full."
    )
    shutdown_grace_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=60,
        description="How long a terminating engine pod may take to finish in-flight requests.",
    )


INT64 = (-(2**63), 2**63 - 1)


def _int64(value: int) -> int:
    """A Kubernetes integer is an int64: the API server refuses a larger number as not an
    integer. (Written as a validator, not as bounds: the server's schema checker refuses
    minimum -2**63 and maximum 2**63 - 1 themselves, as floats that are not integers.)"""
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{value} is not an int64 (a Kubernetes integer)")
    return value


class Toleration(_Model):
    """A pod toleration, as in core/v1."""

    key: str | None = None
    operator: Annotated[str, Field(pattern=r"^(Exists|Equal)$")] = "Equal"
    value: str | None = None
    effect: Annotated[str, Field(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)?$")] | None = (
        None
    )
    toleration_seconds: Annotated[int, AfterValidator(_int64)] | None = None


class Resources(_Model):
    """What one replica (one engine pod) asks the scheduler for."""

    gpus_per_replica: Annotated[int, Field(ge=0, le=64)] = Field(
        default=1, description="nvidia.com/gpu per replica."
    )
    cpu: Annotated[str, Field(pattern=QUANTITY_PATTERN)] = Field(
        default="2", description="CPU request and limit of the engine container."
    )
    memory: Annotated[str, Field(pattern=QUANTITY_PATTERN)] = Field(
        default="8Gi", description="Memory request and limit of the engine container."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the engine pods must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of the engine pods."
    )


class Scaling(_Model):
    """How the autoscaler sizes the deployment from KV-cache occupancy."""

    rules: ClassVar[tuple[rule.Rule, ...]] = (
        rule.AtMost("min_replicas", "max_replicas"),
        rule.AtMost("panic_window_seconds", "stable_window_seconds"),
    )

    mode: ScalingMode = Field(
        default=ScalingMode.ACTIVE,
        strict=False,
        description="Active: the autoscaler sets the engine Deployment's replicas. Advisory: it "
        "decides and publishes everything (desiredReplicas, reasons, learned capacity, Events, "
        "metrics) but never writes the Deployment's replicas, so it can run beside the HPA or "
        "KEDA that scales the Deployment today and be compared before switching.",
    )
    min_replicas: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=1, description="Fewest replicas, also when idle."
    )
    max_replicas: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=4, description="Most replicas."
    )
    target_occupancy: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.7, description="KV-cache occupancy per pod to aim for, in (0, 1]."
    )
    tolerance: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1, description="No action while observed/target is within 1 +/- tolerance."
    )
    stable_window_seconds: Annotated[float, Field(ge=1, le=3600)] = Field(
        default=60, description="Window the normal decision averages over."
    )
    panic_window_seconds: Annotated[float, Field(ge=1, le=3600)] = Field(
        default=6, description="Short window that detects bursts and scales up fast."
    )
    panic_threshold: Annotated[float, Field(gt=1, le=100)] = Field(
        default=2.0, description="Panic when the panic window wants this many times the pods."
    )
    max_scale_up_rate: Annotated[float, Field(gt=1, le=1000)] = Field(
        default=4.0, description="At most this many times the ready pods in one decision."
    )
    max_scale_down_rate: Annotated[float, Field(gt=1, le=1000)] = Field(
        default=2.0, description="At least ready/rate pods remain after one decision."
    )
    scale_down_delay_seconds: Annotated[float, Field(ge=0, le=86_400)] = Field(
        default=300, description="Scale down only to the highest size wanted in this window."
    )
    tick_seconds: Annotated[float, Field(ge=0.25, le=60)] = Field(
        default=1.0, description="How often the autoscaler collects reports and decides."
    )
    target_tokens_per_second: Annotated[float, Field(gt=0, le=1e9)] | None = Field(
        default=None,
        description="Token throughput per pod (prompt + generated tokens/s) to aim for, beside "
        "targetOccupancy: a pod counts as loaded as the higher of the two says. Unset: KV-cache "
        "occupancy alone. `kvscale simulate` can measure a value for a model and GPU.",
    )


class Sidecar(_Model):
    """The engine sidecar that reports KV-cache occupancy to the operator."""

    image: Annotated[str, Field(min_length=1)] = Field(
        default=DEFAULT_SIDECAR_IMAGE, description="kvscale image that runs `kvscale sidecar`."
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=9090, description="Port of the sidecar's /v1/occupancy, /metrics and /healthz."
    )
    poll_interval_seconds: Annotated[float, Field(ge=0.05, le=60)] = Field(
        default=0.25, description="How often the sidecar reads the engine's /metrics."
    )


# A Kubernetes-style duration in one unit, greater than zero: "2s", "100ms", "0.5s", "1.5m".
# (Go's time.ParseDuration also takes sums such as "1m30s"; a latency target never needs one.)
DURATION_PATTERN = r"^([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)(ms|s|m)$"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


def duration_seconds(text: str) -> float:
    """Seconds in a duration that matches DURATION_PATTERN ("100ms" -> 0.1)."""
    unit = "ms" if text.endswith("ms") else text[-1]
    return float(text[: -len(unit)]) * _DURATION_UNITS[unit]


class LatencyTarget(_Model):
    """A latency to meet at one or more percentiles: `p90: 2s` means 90% within 2 seconds."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    p50: _Duration | None = Field(default=None, description="Median, e.g. 500ms.")
    p90: _Duration | None = Field(default=None, description="90th percentile, e.g. 2s.")
    p95: _Duration | None = Field(default=None, description="95th percentile.")
    p99: _Duration | None = Field(default=None, description="99th percentile.")

    @model_validator(mode="after")
    def _some(self) -> LatencyTarget:
        if not self.targets():
            raise ValueError("set at least one of p50, p90, p95, p99")
        return self

    def targets(self) -> tuple[tuple[float, float], ...]:
        """(percentile as a 0..1 fraction, seconds) for every percentile set, lowest first."""
        found = ((0.5, self.p50), (0.9, self.p90), (0.95, self.p95), (0.99, self.p99))
        return tuple((q, duration_seconds(text)) for q, text in found if text is not None)


class Slo(_Model):
    """The latency users should get: the autoscaler sizes the fleet to meet it."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    ttft: LatencyTarget | None = Field(
        default=None,
        description="Time to first token of each request (vLLM's "
        "vllm:time_to_first_token_seconds), e.g. {p90: 2s}.",
    )
    itl: LatencyTarget | None = Field(
        default=None,
        description="Inter-token latency: time between a request's consecutive output tokens "
        "(vllm:inter_token_latency_seconds), e.g. {p90: 100ms}. Every gap counts, so one long "
        "prefill in the batch shows; for a request's average pace use tpot.",
    )
    tpot: LatencyTarget | None = Field(
        default=None,
        description="Time per output token of each request: its decode time over its output "
        "tokens after the first (vllm:request_time_per_output_token_seconds), e.g. "
        "{p90: 100ms}. The per-request pace most SLOs state (llm-d's TPOT).",
    )

    @model_validator(mode="after")
    def _some(self) -> Slo:
        if self.ttft is None and self.itl is None and self.tpot is None:
            raise ValueError("set at least one of ttft, itl, tpot")
        return self


class InferenceDeploymentSpec(_Model):
    """What the user declares."""

    model: ModelSource
    replicas: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        default=None,
        description="Replicas set through the scale subresource (kubectl scale). "
        "Leave unset in Git: the autoscaler owns the engine Deployment's replicas.",
    )
    engine: Engine = Field(default_factory=Engine)
    resources: Resources = Field(default_factory=Resources)
    scaling: Scaling = Field(default_factory=Scaling)
    sidecar: Sidecar = Field(default_factory=Sidecar)
    slo: Slo | None = Field(
        default=None,
        description="Latency targets (time to first token, inter-token latency) at a "
        "percentile. Unset: the autoscaler scales to spec.scaling's targets alone.",
    )


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(enum.StrEnum):
    READY = "Ready"
    SCALING_ACTIVE = "ScalingActive"
    SCALING_LIMITED = "ScalingLimited"
    METRICS_AVAILABLE = "MetricsAvailable"


# metav1.Condition's limit on a message; longer texts (an API server's refusal quoting a
# fuzzed field, say) are cut by whoever builds the condition.
CONDITION_MESSAGE_LIMIT = 32_768


class Condition(_Model):
    """A status condition, shaped like metav1.Condition."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus = Field(strict=False)
    reason: Annotated[str, Field(min_length=1, max_length=1024)]
    message: Annotated[str, Field(max_length=CONDITION_MESSAGE_LIMIT)] = ""
    last_transition_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = None


class ScalingEvent(_Model):
    """One entry of the bounded scaling history in status."""

    time: str = Field(json_schema_extra={"format": "date-time"})
    from_replicas: Annotated[int, Field(ge=0)]
    to_replicas: Annotated[int, Field(ge=0)]
    reason: str
    occupancy: float | None = None


class LearnedCapacity(_Model):
    """spec.slo: one resource's capacity per pod under the SLO, as the operator learned it."""

    resource: Literal["kv", "compute"] = Field(
        description="kv: KV demand as a fraction of a pod's blocks; compute: tokens per second."
    )
    per_pod: Annotated[float, Field(ge=0)] = Field(
        description="The load one pod carries and still meets the SLO (the resource's unit)."
    )
    confidence: Annotated[float, Field(ge=0, le=1)] = Field(
        description="From the recent samples that tested it (decayed); 0 for an untested prior."
    )
    source: Literal["target", "profile", "learned"] = Field(
        description="target: seeded from spec.scaling; learned: moved by the pods' latency."
    )
    use: Literal["trusted", "scale_up_only"] = Field(
        description="trusted: sizes the fleet both ways; scale_up_only: never removes a pod."
    )
    proven_per_pod: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="The highest load recently seen to meet the SLO."
    )


class InferenceDeploymentStatus(_Model):
    """What the operator observes and reports. Written only through the status subresource."""

    model_config = ConfigDict(frozen=False)

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The metadata.generation of the spec this status reflects."
    )
    replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Engine pods that exist (the Deployment's status.replicas)."
    )
    ready_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Engine pods that are ready to serve."
    )
    desired_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="What the operator currently wants."
    )
    occupancy: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Mean KV-cache demand over capacity of the ready pods."
    )
    last_scale_time: str | None = Field(
        default=None,
        description="When the autoscaler last changed the replica count.",
        json_schema_extra={"format": "date-time"},
    )
    selector: str | None = Field(
        default=None, description="Label selector of the engine pods (for the scale subresource)."
    )
    capacity: list[LearnedCapacity] = Field(
        default_factory=list,
        description="spec.slo: each resource's capacity per pod under the SLO, learned live.",
    )
    binding_resource: Literal["kv", "compute"] | None = Field(
        default=None,
        description="spec.slo: the resource whose capacity needs the most pods for the load now.",
    )
    lead_time_seconds: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="spec.slo: how long new pods take from creation to Ready, from their own "
        "conditions (what the pods asked ahead of a ramp are sized by).",
    )
    scaling_history: list[ScalingEvent] = Field(
        default_factory=list, description="The most recent scaling actions, newest last."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, ScalingActive, ScalingLimited, MetricsAvailable; one per type.",
        # A map keyed by type, like metav1.Condition lists: the API server refuses two
        # conditions of one type, and server-side apply merges them by type.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )

    @model_validator(mode="after")
    def _one_condition_per_type(self) -> InferenceDeploymentStatus:
        types = [condition.type for condition in self.conditions]
        duplicates = sorted({kind for kind in types if types.count(kind) > 1})
        if duplicates:
            raise ValueError(f"conditions: more than one condition of type {', '.join(duplicates)}")
        return self


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class InferenceDeployment(BaseModel):
    """A whole InferenceDeployment object, as read from the API server."""

    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, extra="ignore")

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: InferenceDeploymentSpec
    status: InferenceDeploymentStatus = Field(default_factory=InferenceDeploymentStatus)

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """A document by its wire names only, as `_Model.model_validate` says."""
        options.setdefault("by_name", False)
        return super().model_validate(obj, **options)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> InferenceDeployment:
        """Parse an object as the API server returns it (camelCase, status maybe absent)."""
        return cls.model_validate(obj)
