"""The InferenceDeployment CustomResourceDefinition, generated from the typed models. Pure: no I/O.

`build_crd()` asks pydantic for the JSON Schema of the spec and of the status (by alias: the
wire's camelCase names) and turns it into the structural OpenAPI v3 schema the API server
requires: every `$ref` inlined, `Optional[X]` written as plain X (absent, never null), JSON
Schema 2020-12 keywords rewritten as OpenAPI 3.0, a default for every optional field, and each
model's `rules` (`kvscale.api.rule`) as CEL in `x-kubernetes-validations` on that model's object.

`render_yaml()` is what `kvscale crd` prints and what `crds/` holds; `render_reference()` is the
Markdown field reference under `docs/` (`kvscale crd --reference`). Tests fail when either
checked-in file drifts from the models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pydantic
import yaml
from pydantic import json_schema
from pydantic_core import core_schema

from kvscale.api import models, rule

CRD_NAME = f"{models.PLURAL}.{models.GROUP}"
CATEGORIES = ("kvscale",)
YAML_PATH = f"crds/{CRD_NAME}.yaml"
REFERENCE_PATH = "docs/crd-reference.md"

# Keywords that mean the same in JSON Schema and in a structural OpenAPI v3 schema.
_SAME = frozenset(
    {
        "type",
        "description",
        "format",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "multipleOf",
        "minimum",
        "maximum",
        "required",
        "nullable",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
    }
)
# Keywords that only document the Python side; the CRD has no use for them.
_DROPPED = frozenset({"title", "$defs", "$schema", "examples"})
# Key order of each node in the output, so the YAML reads top-down: what, then how, then inside.
_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "x-kubernetes-validations",
)


class SchemaError(ValueError):
    """A JSON Schema construct that has no structural OpenAPI v3 equivalent."""


class _KubernetesJsonSchema(json_schema.GenerateJsonSchema):
    """Pydantic's JSON Schema, plus what the API server needs and pydantic leaves out.

    Defaults made by a factory are written too (pydantic writes only static ones), so every
    optional field gets a server-side default, a nested model's default being the whole object
    its factory builds. Models' `rules` become CEL `x-kubernetes-validations`.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, pydantic.BaseModel):
            # The whole object, not `{}`: the API server checks a default against the object's
            # CEL rules without first filling in the inner defaults, so `{}` fails them.
            return value.model_dump(mode="json", by_alias=True, exclude_none=True)
        return value

    def model_schema(self, schema: core_schema.ModelSchema) -> json_schema.JsonSchemaValue:
        result = super().model_schema(schema)
        rules = cel_rules(schema["cls"])
        if rules:
            result["x-kubernetes-validations"] = [cel_validation(*cel) for cel in rules]
        return result


def cel_rules(model: type[pydantic.BaseModel]) -> tuple[tuple[str, str, str | None], ...]:
    """(rule, message, fieldPath) of each of the model's `rules`, as CEL (none for plain models)."""
    declared: tuple[rule.Rule, ...] = getattr(model, "rules", ())
    return tuple(declared_rule.cel(model) for declared_rule in declared)


def cel_validation(rule: str, message: str, field_path: str | None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; fieldPath makes errors name the offending field."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def to_structural(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON Schema (with `$defs`) into a structural OpenAPI v3 schema.

    Raises SchemaError naming the path of the first construct that has no structural form
    (a real union, a recursive model, a node without a type, an unknown keyword).
    """
    defs = schema.get("$defs", {})
    if not isinstance(defs, Mapping):
        raise SchemaError(f"<root>: $defs must be a mapping, got {type(defs).__name__}")
    return _convert(schema, defs, "<root>", ())


def _convert(
    node: Any, defs: Mapping[str, Any], path: str, refs: tuple[str, ...]
) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise SchemaError(f"{path}: expected a schema object, got {node!r}")
    out: dict[str, Any] = {}
    rest = dict(node)
    # Schemas merged into this node come first, so the node's own keys (a field's description
    # and default) win over those of the model or enum it refers to.
    if "$ref" in rest:
        out.update(_resolve(rest.pop("$ref"), defs, path, refs))
    if "allOf" in rest:
        parts = rest.pop("allOf")
        if not isinstance(parts, list) or len(parts) != 1:
            raise SchemaError(f"{path}: allOf is only supported with exactly one schema")
        out.update(_convert(parts[0], defs, path, refs))
    if "anyOf" in rest:
        options = [option for option in rest.pop("anyOf") if option != {"type": "null"}]
        if len(options) != 1:
            raise SchemaError(
                f"{path}: a union of {len(options)} types has no structural schema; "
                "use one type (Optional[X] is fine)"
            )
        out.update(_convert(options[0], defs, path, refs))
    for key, value in rest.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {
                name: _convert(sub, defs, f"{path}.{name}", refs) for name, sub in value.items()
            }
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]", refs)
        elif key == "additionalProperties":
            # `false` is not allowed in structural schemas: the API server prunes unknown
            # fields, and kubectl's strict field validation turns them into errors.
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _convert(value, defs, f"{path}{{}}", refs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(value, bool):  # already OpenAPI 3.0's boolean form
                out[key] = value
            else:  # JSON Schema 2020-12: the bound itself
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            if value is not None:  # Optional fields stay absent instead of defaulting to null
                out[key] = value
        elif key == "x-kubernetes-validations":
            out[key] = [_ordered_rule(entry, path) for entry in value]
        elif key in _SAME:
            out[key] = value
        else:
            raise SchemaError(f"{path}: JSON Schema keyword {key!r} has no structural equivalent")
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"{path}: no type; a structural schema needs one on every node")
    return _ordered(out)


def _resolve(ref: Any, defs: Mapping[str, Any], path: str, refs: tuple[str, ...]) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaError(f"{path}: cannot resolve $ref {ref!r}")
    if ref in refs:
        raise SchemaError(f"{path}: {ref} refers to itself; structural schemas cannot recurse")
    return _convert(defs[ref[len(prefix) :]], defs, path, (*refs, ref))


def _ordered_rule(rule: Any, path: str) -> dict[str, Any]:
    # Pydantic sorts every mapping's keys; a rule reads better rule-first.
    if not isinstance(rule, Mapping) or not isinstance(rule.get("rule"), str):
        raise SchemaError(f"{path}: each x-kubernetes-validations entry needs a rule, got {rule!r}")
    order = ("rule", "message", "messageExpression", "fieldPath", "reason", "optionalOldSelf")
    return {
        key: rule[key] for key in sorted(rule, key=lambda k: order.index(k) if k in order else 9)
    }


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {key: index for index, key in enumerate(_ORDER)}
    return dict(sorted(node.items(), key=lambda item: rank.get(item[0], len(rank))))


def model_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The structural schema of one model, as the CRD embeds it."""
    raw = model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_KubernetesJsonSchema
    )
    return to_structural(raw)


def resource_schema() -> dict[str, Any]:
    """The whole object's schema: Kubernetes' envelope around the spec and status models."""
    return {
        "description": "An LLM served by vLLM engine pods, scaled by live KV-cache occupancy.",
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "Versioned schema of this representation of an object.",
                "type": "string",
            },
            "kind": {"description": "REST resource this object represents.", "type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(models.InferenceDeploymentSpec),
            "status": model_schema(models.InferenceDeploymentStatus),
        },
        "required": ["spec"],
    }


def printer_columns() -> list[dict[str, str]]:
    """The columns of `kubectl get infd`."""
    return [
        {
            "name": "Ready",
            "type": "string",
            "description": "Status of the Ready condition.",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Replicas",
            "type": "integer",
            "description": "Engine pods that exist.",
            "jsonPath": ".status.replicas",
        },
        {
            "name": "Desired",
            "type": "integer",
            "description": "Engine pods the autoscaler wants.",
            "jsonPath": ".status.desiredReplicas",
        },
        {
            "name": "Occupancy",
            "type": "number",
            "description": "Mean KV-cache demand over capacity of the ready pods.",
            "jsonPath": ".status.occupancy",
        },
        {
            "name": "Mode",
            "type": "string",
            "description": "Active (sets the replicas) or Advisory (publishes its decisions).",
            "jsonPath": ".spec.scaling.mode",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object, ready to apply."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "kvscale", "app.kubernetes.io/part-of": "kvscale"},
        },
        "spec": {
            "group": models.GROUP,
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": resource_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns(),
                }
            ],
        },
    }


_YAML_HEADER = (
    "# Generated from src/kvscale/api/models.py by `kvscale crd`. Do not edit by hand:\n"
    f"# change the models, then run `kvscale crd > {YAML_PATH}`.\n"
)


def render_yaml() -> str:
    """The CRD as the YAML checked in under `crds/`."""
    body = yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)
    return _YAML_HEADER + body


# ---------------------------------------------------------------------------------------------
# The Markdown field reference.


def _rows(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    """(path, schema, required) for every field below `schema`, depth first, in model order."""
    required = set(schema.get("required", ()))
    for name, sub in schema.get("properties", {}).items():
        child = f"{path}.{name}"
        yield child, sub, name in required
        if sub.get("type") == "object":
            yield from _rows(sub, child)
        elif sub.get("type") == "array" and sub.get("items", {}).get("type") == "object":
            yield from _rows(sub["items"], f"{child}[]")


def _type_name(schema: Mapping[str, Any]) -> str:
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return "[]" + _type_name(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema:
        return "map[string]" + _type_name(schema["additionalProperties"])
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return kind


def _constraints(schema: Mapping[str, Any], required: bool) -> list[str]:
    found = ["required"] if required else []
    if "enum" in schema:
        found.append("one of " + ", ".join(f"`{value}`" for value in schema["enum"]))
    if "minimum" in schema:
        found.append((">" if schema.get("exclusiveMinimum") else ">=") + f" {schema['minimum']}")
    if "maximum" in schema:
        found.append(("<" if schema.get("exclusiveMaximum") else "<=") + f" {schema['maximum']}")
    if "multipleOf" in schema:
        found.append(f"multiple of {schema['multipleOf']}")
    if "minLength" in schema and "maxLength" in schema:
        found.append(f"length {schema['minLength']}..{schema['maxLength']}")
    elif "minLength" in schema:
        found.append(f"length >= {schema['minLength']}")
    elif "maxLength" in schema:
        found.append(f"length <= {schema['maxLength']}")
    if "maxItems" in schema:
        found.append(f"at most {schema['maxItems']} items")
    if "pattern" in schema:
        found.append(f"pattern `{schema['pattern']}`")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys", ()))
        found.append(f"unique by {keys}")
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _validations(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, str]]]:
    for entry in schema.get("x-kubernetes-validations", ()):
        yield path, entry
    for child, sub, _ in _rows(schema, path):
        for entry in sub.get("x-kubernetes-validations", ()):
            yield child, entry


def render_reference() -> str:
    """A Markdown reference of every field, its default, bounds and the CEL rules."""
    root = resource_schema()
    lines = [
        "# InferenceDeployment field reference",
        "",
        f"<!-- Generated from src/kvscale/api/models.py. Do not edit by hand: run "
        f"`kvscale crd --reference > {REFERENCE_PATH}`. -->",
        "",
        f"`{models.API_VERSION}`, kind `{models.KIND}`, short name "
        + ", ".join(f"`{name}`" for name in models.SHORT_NAMES)
        + ". See [crd.md](crd.md) for how validation and upgrades work.",
    ]
    for part in ("spec", "status"):
        schema = root["properties"][part]
        lines += [
            "",
            f"## {part}",
            "",
            _cell(str(schema.get("description", ""))),
            "",
            "| Field | Type | Default | Validation | Description |",
            "|---|---|---|---|---|",
        ]
        for path, sub, required in _rows(schema, part):
            default = _default_cell(sub)
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"`{path}`",
                        _type_name(sub),
                        _cell(default),
                        _cell("; ".join(_constraints(sub, required))),
                        _cell(str(sub.get("description", ""))),
                    ]
                )
                + " |"
            )
        rules = list(_validations(schema, part))
        if rules:
            lines += [
                "",
                f"Rules across fields of `{part}` (CEL, enforced by the API server):",
                "",
                "| On | Rule | Message (reported at) |",
                "|---|---|---|",
            ]
            for path, entry in rules:
                at = f"{path}{entry['fieldPath']}" if "fieldPath" in entry else path
                lines.append(
                    f"| `{path}` | `{_cell(entry['rule'])}` | {_cell(entry['message'])} (`{at}`) |"
                )
    return "\n".join(lines) + "\n"


def _default_cell(schema: Mapping[str, Any]) -> str:
    if "default" not in schema:
        return ""
    if schema.get("type") == "object" and "properties" in schema:
        return "its fields' defaults"  # the whole object is in the rows below
    return f"`{json.dumps(schema['default'])}`"
