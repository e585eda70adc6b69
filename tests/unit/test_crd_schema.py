"""Pydantic's JSON Schema becomes a structural OpenAPI v3 schema the API server accepts."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pydantic
import pytest

from kvscale.api import crd, models

CONVERSIONS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "optional-collapses-to-its-type",
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "default": None},
        {"type": "integer", "minimum": 0},
    ),
    (
        "optional-keeps-siblings",
        {"anyOf": [{"type": "string"}, {"type": "null"}], "format": "date-time", "title": "T"},
        {"type": "string", "format": "date-time"},
    ),
    ("title-dropped", {"type": "string", "title": "Name"}, {"type": "string"}),
    (
        "exclusive-minimum-number-to-openapi-3.0",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
    ),
    (
        "exclusive-maximum-number-to-openapi-3.0",
        {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True},
    ),
    (
        "exclusive-minimum-already-boolean",
        {"type": "number", "minimum": 2, "exclusiveMinimum": True},
        {"type": "number", "minimum": 2, "exclusiveMinimum": True},
    ),
    (
        "enum-kept",
        {"type": "string", "enum": ["auto", "fp8"], "default": "auto"},
        {"type": "string", "enum": ["auto", "fp8"], "default": "auto"},
    ),
    ("const-becomes-enum", {"type": "string", "const": "x"}, {"type": "string", "enum": ["x"]}),
    (
        "additional-properties-false-dropped",
        {"type": "object", "additionalProperties": False, "properties": {"a": {"type": "string"}}},
        {"type": "object", "properties": {"a": {"type": "string"}}},
    ),
    (
        "string-map-kept",
        {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
        {"type": "object", "default": {}, "additionalProperties": {"type": "string"}},
    ),
    (
        "additional-properties-true-preserves-unknown-fields",
        {"type": "object", "additionalProperties": True},
        {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    ),
    (
        "ref-inlined-field-keys-win",
        {
            "$defs": {"E": {"type": "string", "enum": ["a", "b"], "description": "class doc"}},
            "type": "object",
            "properties": {"e": {"$ref": "#/$defs/E", "default": "a", "description": "field doc"}},
        },
        {
            "type": "object",
            "properties": {
                "e": {
                    "description": "field doc",
                    "type": "string",
                    "enum": ["a", "b"],
                    "default": "a",
                }
            },
        },
    ),
    (
        "single-allof-inlined",
        {
            "$defs": {"M": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            "allOf": [{"$ref": "#/$defs/M"}],
        },
        {"type": "object", "properties": {"x": {"type": "integer"}}},
    ),
    (
        "array-items-converted",
        {"type": "array", "items": {"type": "integer", "title": "I", "exclusiveMinimum": 0}},
        {"type": "array", "items": {"type": "integer", "minimum": 0, "exclusiveMinimum": True}},
    ),
    (
        "cel-rule-entries-rule-first",
        {
            "type": "object",
            "x-kubernetes-validations": [{"message": "m", "fieldPath": ".a", "rule": "r"}],
        },
        {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "r", "message": "m", "fieldPath": ".a"}],
        },
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"), [c[1:] for c in CONVERSIONS], ids=[c[0] for c in CONVERSIONS]
)
def test_conversion(source: dict[str, Any], expected: dict[str, Any]) -> None:
    assert crd.to_structural(source) == expected


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "real-union",
        {
            "type": "object",
            "properties": {"v": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
        },
        "<root>.v: a union of 2 types",
    ),
    (
        "recursive-model",
        {
            "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
            "$ref": "#/$defs/N",
        },
        "refers to itself",
    ),
    ("no-type", {"type": "object", "properties": {"any": {}}}, "<root>.any: no type"),
    ("unknown-keyword", {"type": "string", "oneOf": []}, "keyword 'oneOf'"),
    ("dangling-ref", {"$ref": "#/$defs/Missing"}, "cannot resolve $ref '#/$defs/Missing'"),
    ("not-a-schema", {"type": "array", "items": 3}, "<root>[]: expected a schema object"),
    ("two-allof", {"allOf": [{"type": "string"}, {"type": "string"}]}, "exactly one schema"),
    ("rule-without-rule", {"type": "object", "x-kubernetes-validations": [{}]}, "needs a rule"),
]


@pytest.mark.parametrize(
    ("source", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refused_with_the_path(source: dict[str, Any], fragment: str) -> None:
    with pytest.raises(crd.SchemaError, match=re.escape(fragment)):
        crd.to_structural(source)


def _nodes(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _openapi() -> dict[str, Any]:
    schema: dict[str, Any] = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_every_node_is_structural() -> None:
    forbidden = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const"}
    for path, node in _nodes(_openapi(), ""):
        assert "type" in node, f"{path} has no type"
        assert not forbidden & node.keys(), f"{path} has {forbidden & node.keys()}"
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties false"
        assert not node.get("nullable"), f"{path} is nullable"
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}.{bound} must be OpenAPI 3.0's boolean"
    status = _openapi()["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status, "status must stay typed"


def _model_nodes() -> Iterator[tuple[str, type[pydantic.BaseModel], Mapping[str, Any]]]:
    """Every model in the spec and status trees, with the CRD node that describes it."""
    pending: list[tuple[str, type[pydantic.BaseModel], Mapping[str, Any]]] = [
        ("spec", models.InferenceDeploymentSpec, _openapi()["properties"]["spec"]),
        ("status", models.InferenceDeploymentStatus, _openapi()["properties"]["status"]),
    ]
    while pending:
        path, model, node = pending.pop()
        yield path, model, node
        for name, field in model.model_fields.items():
            alias = field.alias or name
            sub = node["properties"][alias]
            for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if isinstance(candidate, type) and issubclass(candidate, pydantic.BaseModel):
                    inner = sub["items"] if sub["type"] == "array" else sub
                    pending.append((f"{path}.{alias}", candidate, inner))


def test_every_optional_field_has_the_pydantic_default() -> None:
    checked = 0
    for path, model, node in _model_nodes():
        for name, field in model.model_fields.items():
            alias = field.alias or name
            sub = node["properties"][alias]
            if field.is_required():
                assert alias in node.get("required", ()), f"{path}.{alias} should be required"
                continue
            assert field.annotation is not None
            default = pydantic.TypeAdapter(field.annotation).dump_python(
                field.get_default(call_default_factory=True),
                mode="json",
                by_alias=True,
                exclude_none=True,
            )
            if default is None:
                assert "default" not in sub, f"{path}.{alias}: optional, so absent, not null"
            else:
                assert sub.get("default") == default, (
                    f"{path}.{alias}: default differs from pydantic"
                )
            checked += 1
    assert checked > 40


def test_cel_rules_sit_on_their_models_objects() -> None:
    found = {}
    for path, model, node in _model_nodes():
        if crd.cel_rules(model):
            found[path] = node["x-kubernetes-validations"]
            assert node["x-kubernetes-validations"] == [
                crd.cel_validation(*rule) for rule in crd.cel_rules(model)
            ]
        else:
            assert "x-kubernetes-validations" not in node, path
    assert set(found) == {"spec.model.cache", "spec.engine.preemption", "spec.scaling"}


def _apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """The API server's structural defaulting: fill absent fields top-down, recursively."""
    if not isinstance(value, dict):
        if isinstance(value, list) and "items" in schema:
            return [_apply_defaults(schema["items"], item) for item in value]
        return value
    result = dict(value)
    for name, sub in schema.get("properties", {}).items():
        if name not in result and "default" in sub:
            result[name] = sub["default"]
        if name in result:
            result[name] = _apply_defaults(sub, result[name])
    return result


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"name": "m"}},
        {"model": {"name": "m"}, "scaling": {}, "engine": {"preemption": {}}},
        {"model": {"name": "m"}, "engine": {"blockSize": 32}, "scaling": {"maxReplicas": 9}},
        {"model": {"name": "m"}, "resources": {"tolerations": [{"key": "gpu"}]}},
    ],
    ids=["minimal", "empty-objects", "partial-objects", "list-items"],
)
def test_server_defaults_equal_pydantic_defaults(spec: dict[str, Any]) -> None:
    # What `kubectl get -o yaml` shows is what the operator acts on.
    server_side = _apply_defaults(_openapi()["properties"]["spec"], spec)
    parsed = models.InferenceDeploymentSpec.model_validate(spec)
    assert server_side == parsed.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_resource_names_and_scope() -> None:
    built = crd.build_crd()
    assert built["metadata"]["name"] == "inferencedeployments.kvscale.dev"
    spec = built["spec"]
    assert spec["group"] == "kvscale.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "InferenceDeployment",
        "listKind": "InferenceDeploymentList",
        "plural": "inferencedeployments",
        "singular": "inferencedeployment",
        "shortNames": ["infd"],
        "categories": ["kvscale"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_status_and_scale_subresources() -> None:
    [version] = crd.build_crd()["spec"]["versions"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    # Each path the scale subresource reads exists in the schema with the type it needs.
    properties = version["schema"]["openAPIV3Schema"]["properties"]
    assert properties["spec"]["properties"]["replicas"]["type"] == "integer"
    assert properties["status"]["properties"]["replicas"]["type"] == "integer"
    assert properties["status"]["properties"]["selector"]["type"] == "string"


def test_printer_columns() -> None:
    [version] = crd.build_crd()["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status'),
        "Replicas": ("integer", ".status.replicas"),
        "Desired": ("integer", ".status.desiredReplicas"),
        "Occupancy": ("number", ".status.occupancy"),
        "Mode": ("string", ".spec.scaling.mode"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_conditions_are_a_map_keyed_by_type() -> None:
    conditions = _openapi()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    # A map key must always be present on every item.
    assert "type" in conditions["items"]["required"]


def test_date_times_keep_their_format() -> None:
    status = _openapi()["properties"]["status"]["properties"]
    assert status["lastScaleTime"]["format"] == "date-time"
    assert (
        status["conditions"]["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"
    )


def test_reference_lists_every_field_and_rule() -> None:
    reference = crd.render_reference()
    for path, _ in _nodes(_openapi()["properties"]["spec"], "spec"):
        # Rows are fields; the item of a list or the value of a map is described by its field.
        if path != "spec" and not path.endswith(("{}", "[]")):
            assert f"| `{path}` |" in reference, f"{path} missing from the reference"
    for _, model, _ in _model_nodes():
        for rule, message, _ in crd.cel_rules(model):
            assert rule.replace("|", "\\|") in reference
            assert message in reference
