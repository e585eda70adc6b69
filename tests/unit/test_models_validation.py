"""Bad specs are refused by pydantic with an error naming the field, like the API server does.

The invalid examples under `examples/invalid/` are the shared table: the integration test
applies them to a real API server, this test parses them with the models. The CRD's CEL rules
are evaluated here with a CEL interpreter and must agree with the pydantic validators.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import celpy
import pydantic
import pytest
import yaml
from celpy import adapter

from kvscale.api import crd, models

ROOT = pathlib.Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))


@dataclasses.dataclass(frozen=True)
class InvalidExample:
    """One invalid CR and what its header comment says the API server answers."""

    path: pathlib.Path
    field: str  # the field path the error must name, e.g. spec.scaling.minReplicas
    message: str  # a fragment of the API server's message
    document: dict[str, Any]


def load(path: pathlib.Path) -> InvalidExample:
    text = path.read_text()
    header = {}
    for line in text.splitlines():
        key, sep, value = line.removeprefix("# ").partition(": ")
        if line.startswith("# expect-") and sep:
            header[key] = value.strip()
    assert {"expect-field", "expect-message"} <= header.keys(), (
        f"{path.name}: needs '# expect-field: <path>' and '# expect-message: <fragment>' lines"
    )
    document = yaml.safe_load(text)
    assert isinstance(document, dict), f"{path.name}: not a YAML mapping"
    return InvalidExample(path, header["expect-field"], header["expect-message"], document)


def test_invalid_examples_cover_every_kind_of_rule() -> None:
    fields = {load(path).field for path in INVALID}
    assert len(INVALID) >= 10
    assert {
        "spec.scaling.minReplicas",  # CEL min <= max, and its own minimum
        "spec.scaling.maxReplicas",  # wrong type
        "spec.scaling.maxReplica",  # unknown field
        "spec.scaling.targetOccupancy",  # exclusive minimum and maximum
        "spec.scaling.panicWindowSeconds",  # CEL panic <= stable
        "spec.engine.preemption.policy",  # enum
        "spec.engine.preemption.swapSpaceGiB",  # CEL swap needs a size, exclusive minimum
        "spec.engine.blockSize",  # multipleOf and minimum
        "spec.model.name",  # required
    } <= fields


def _names_field(error: Any, field: str) -> bool:
    """Whether a pydantic error is about `field`, a spec path such as spec.scaling.minReplicas."""
    at = ".".join(["spec", *(str(part) for part in error["loc"])])
    leaf = field.rsplit(".", 1)[-1]
    # Field-level errors sit at the field; cross-field ones sit at the object and name the field.
    return at == field or (field.startswith(at + ".") and leaf in error["msg"])


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_pydantic_refuses_invalid_example(path: pathlib.Path) -> None:
    example = load(path)
    with pytest.raises(pydantic.ValidationError) as caught:
        models.InferenceDeploymentSpec.model_validate(example.document["spec"])
    errors = caught.value.errors()
    assert any(_names_field(error, example.field) for error in errors), (
        f"{path.name}: no error names {example.field}: {caught.value}"
    )
    # The whole object, parsed as the operator parses it, is refused the same way.
    with pytest.raises(pydantic.ValidationError):
        models.InferenceDeployment.from_object(example.document)


def test_valid_example_parses() -> None:
    document = yaml.safe_load((ROOT / "examples" / "tiny-llama.yaml").read_text())
    resource = models.InferenceDeployment.from_object(document)
    assert resource.spec.model.name == "kvscale/tiny-llama"
    # The vLLM CPU backend needs a block size that is a multiple of 32.
    assert resource.spec.engine.block_size % 32 == 0
    assert resource.spec.resources.gpus_per_replica == 1
    assert (resource.spec.scaling.min_replicas, resource.spec.scaling.max_replicas) == (1, 4)


# --- pydantic validators and CEL rules agree ---------------------------------------------------

# (model, input on the wire, whether it is valid). Inputs respect each field's own bounds except
# where noted, so the cross-field rules decide.
CEL_CASES: list[tuple[type[models._Model], dict[str, Any], bool]] = [
    (models.Scaling, {}, True),
    (models.Scaling, {"minReplicas": 4, "maxReplicas": 4}, True),
    (models.Scaling, {"minReplicas": 0, "maxReplicas": 1}, True),
    (models.Scaling, {"minReplicas": 5, "maxReplicas": 4}, False),
    (models.Scaling, {"minReplicas": 5}, False),  # against the default maxReplicas 4
    (models.Scaling, {"maxReplicas": 10_000, "minReplicas": 10_000}, True),
    (models.Scaling, {"panicWindowSeconds": 60, "stableWindowSeconds": 60}, True),
    (models.Scaling, {"panicWindowSeconds": 60.5, "stableWindowSeconds": 60}, False),
    (models.Scaling, {"panicWindowSeconds": 7}, True),  # against the default stable window 60
    (models.Scaling, {"stableWindowSeconds": 5}, False),  # against the default panic window 6
    (models.Scaling, {"minReplicas": 9, "stableWindowSeconds": 2}, False),  # both rules fail
    (models.Preemption, {}, True),
    (models.Preemption, {"policy": "recompute"}, True),
    (models.Preemption, {"policy": "recompute", "swapSpaceGiB": 8}, True),
    (models.Preemption, {"policy": "swap"}, False),
    (models.Preemption, {"policy": "swap", "swapSpaceGiB": 0.5}, True),
    (models.Preemption, {"policy": "swap", "swapSpaceGiB": 0}, False),  # also its own bound
    (models.ModelCache, {"hostPath": "/var/lib/models"}, True),
    (models.ModelCache, {"persistentVolumeClaim": "weights", "readOnly": False}, True),
    (models.ModelCache, {}, False),
    (models.ModelCache, {"readOnly": True}, False),
    (models.ModelCache, {"hostPath": "/models", "persistentVolumeClaim": "weights"}, False),
]


def _as_the_server_sees_it(schema: dict[str, Any], value: Any) -> Any:
    """The object CEL sees: the CRD's defaults filled in, numbers typed by the schema.

    The API server types `self.x` from the schema, so a `number` field is a double in CEL even
    when the YAML says `60`; CEL has no int-double comparison without that.
    """
    if schema.get("type") == "number" and isinstance(value, int):
        return float(value)
    if not isinstance(value, dict):
        return value
    result = dict(value)
    for name, sub in schema.get("properties", {}).items():
        if name not in result and "default" in sub:
            result[name] = sub["default"]
        if name in result:
            result[name] = _as_the_server_sees_it(sub, result[name])
    return result


def _cel_failures(model: type[models._Model], wire: dict[str, Any]) -> list[str]:
    """Messages of the model's CEL rules that the object fails, evaluated as the server would."""
    seen = _as_the_server_sees_it(crd.model_schema(model), wire)
    activation = {"self": adapter.json_to_cel(seen)}
    environment = celpy.Environment()
    failed = []
    for rule, message, _ in crd.cel_rules(model):
        result = environment.program(environment.compile(rule)).evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), f"{rule!r} gave {result!r}"
        if not result:
            failed.append(message)
    return failed


@pytest.mark.parametrize(
    ("model", "wire", "valid"),
    CEL_CASES,
    ids=[f"{model.__name__}-{index}" for index, (model, _, _) in enumerate(CEL_CASES)],
)
def test_cel_rules_and_pydantic_agree(
    model: type[models._Model], wire: dict[str, Any], valid: bool
) -> None:
    failed = _cel_failures(model, wire)
    assert (not failed) is valid, f"CEL says {failed or 'valid'}; the table says valid={valid}"
    if valid:
        model.model_validate(wire)
        return
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(wire)
    if all(error["type"] == "value_error" for error in caught.value.errors()):
        # Refused by the validator, not by a field's own bound: with one of the rules' messages.
        assert any(message in str(caught.value) for message in failed), str(caught.value)


def _models_with_rules() -> set[type[models._Model]]:
    found = set()
    for value in vars(models).values():
        if isinstance(value, type) and issubclass(value, models._Model) and value.rules:
            found.add(value)
    return found


def test_every_cel_rule_has_a_case_that_fails_it_alone() -> None:
    assert {model for model, _, _ in CEL_CASES} == _models_with_rules()
    for model in _models_with_rules():
        for _, message, _ in crd.cel_rules(model):
            alone = [
                wire
                for case_model, wire, _ in CEL_CASES
                if case_model is model and _cel_failures(model, wire) == [message]
            ]
            assert alone, f"no case in CEL_CASES fails only {model.__name__}: {message!r}"


# --- a document is read as the API server reads it ---------------------------------------------
# Disagreements chaos scenario 9 (tests/integration/test_chaos_fuzz.py) found between the API
# server and the models; the refused side of each is an example under examples/invalid/.


def test_a_null_is_a_field_left_out() -> None:
    # kubectl apply sends the null; the server prunes it (no field here is nullable) and fills
    # in the default. The models refused `port: null` and `resources: null` before.
    spec = models.InferenceDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "servedName": None},
            "engine": {"port": None, "preemption": {"swapSpaceGiB": None}},
            "resources": None,
            "slo": None,
        }
    )
    assert spec.engine.port == 8000
    assert spec.model.served_name is None
    assert spec.resources == models.Resources()
    assert spec.slo is None
    with pytest.raises(pydantic.ValidationError, match=r"model\.name"):
        models.InferenceDeploymentSpec.model_validate({"model": {"name": None}})


def test_a_whole_float_is_an_integer_and_other_json_types_are_not_coerced() -> None:
    assert models.Engine.model_validate({"port": 8000.0}).port == 8000
    # A whole float past 2**53 is not an integer to the API server either.
    assert models.Toleration.model_validate({"tolerationSeconds": 2.0**53 - 1})
    with pytest.raises(pydantic.ValidationError, match="tolerationSeconds"):
        models.Toleration.model_validate({"tolerationSeconds": 2.0**53})
    for wire in (
        {"port": 8000.5},
        {"port": "8000"},
        {"port": True},
        {"gpuMemoryUtilization": "0.5"},
        {"gpuMemoryUtilization": True},
        {"enablePrefixCaching": 1},
        {"enablePrefixCaching": "true"},
    ):
        with pytest.raises(pydantic.ValidationError):
            models.Engine.model_validate(wire)
    # An int is a number: the server takes `60` where the schema says number.
    assert models.Scaling.model_validate({"stableWindowSeconds": 60}).stable_window_seconds == 60


def test_documents_use_wire_names_python_uses_attribute_names() -> None:
    with pytest.raises(pydantic.ValidationError, match="min_replicas"):
        models.Scaling.model_validate({"min_replicas": 2})
    with pytest.raises(pydantic.ValidationError, match="min_replicas"):
        models.InferenceDeployment.model_validate(
            {
                "metadata": {"name": "x"},
                "spec": {"model": {"name": "m"}, "scaling": {"min_replicas": 2}},
            }
        )
    assert models.Scaling(min_replicas=2).min_replicas == 2


def test_a_toleration_seconds_beyond_int64_is_refused() -> None:
    # A Kubernetes integer is an int64: the server refuses 2**63 as "must be of type integer".
    models.Toleration.model_validate({"tolerationSeconds": 2**63 - 1})
    with pytest.raises(pydantic.ValidationError, match="tolerationSeconds"):
        models.Toleration.model_validate({"tolerationSeconds": 2**63})
