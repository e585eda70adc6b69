"""Hypothesis strategies of InferenceDeployment specs, valid and broken. Pure: no I/O.

Every spec is drawn from the models themselves (`kvscale.api.models`): the walk below reads
each field's type, its range (`kvscale.api.rule.model_range`), length, pattern and multiple,
and each model's cross-field `rules`, so a new field or a changed bound is fuzzed without an
edit here. A draw is a valid-looking spec, then none, one or two mutations:

- `bound`: a number at, just inside and just outside each of its bounds (an int without a
  bound at the edge of int64, which a Kubernetes integer is);
- `type`: a value of another JSON type (a string of digits for a number, a number for a
  string, a list for an object, ...);
- `unknown`: a field the model does not declare (a near miss such as a snake_case spelling,
  a wrong case, a dropped letter, or a made-up name);
- `rule`: a cross-field rule broken (minReplicas > maxReplicas, swap without swapSpaceGiB);
- `odd`: a string field set to an empty, blank, unicode, control-character or huge string,
  or to its length bound and one past it;
- `missing`: a required field, or every field of an object that needs at least one, removed;
- `null`: a field set to JSON null;
- `quantity` and `duration`: near-miss Kubernetes quantities and SLO durations.

Each mutation records the wire paths it touched (`Fuzzed.touched`), so a test can check that
a refusal names one of them. Nothing here knows which mutations are valid: at a bound, a
value may be fine; the API server and the models decide, and must agree.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pydantic
from hypothesis import strategies as st

from kvscale.api import models, rule

Path = tuple[
    str | int, ...
]  # wire names from the object's root, e.g. ("spec", "scaling", "minReplicas")

INT64 = models.INT64  # an int field without a declared bound is still a Kubernetes int64

QUANTITIES = ("1", "100m", "250m", "2", "0.5", "1.5", "512Mi", "8Gi", "1e3", "1k", "64M", "1Ti")
NEAR_QUANTITIES = (
    "", "8 Gi", "8GB", "8gi", "1.2.3", ".", "+", "-1", "-100m", "Gi", "1iM", "1mm", "1KiB",
    "0x10", "1e", "1e1.5", "\u0661", "8Gi\n", " 1", "1_000", "1e400", "+1", "0", "0.", ".5",
)  # fmt: skip
DURATIONS = ("2s", "100ms", "0.5s", "1.5m", "250ms", "30s", "5.s", ".5s")
NEAR_DURATIONS = (
    "", "2", "0s", "0.0ms", "-1s", "2h", "1m30s", "100us", "1.5.s", "1e3s", "2 s", "2S",
    "∞s", "2s\n", "1" * 40 + "s",
)  # fmt: skip
ODD_STRINGS = (
    "", " ", "\t", "a\nb", "\u00e9t\u00e9", "\U0001f999 llama", "\u202eevil", "x\x00y", "\\",
    "{}", "null", "-", "--", "a" * 300,
)  # fmt: skip
HUGE = 60_000  # longer than any string field needs; under the annotations' 256 KiB budget


@dataclasses.dataclass(frozen=True)
class Shape:
    """One field as the model declares it: what the walk needs to fill or break it."""

    attribute: str  # Python name
    alias: str  # wire name
    base: Any  # int, float, bool, str, an enum class, a model class, list or dict
    item: Any  # list item or dict value type (after unwrapping); None otherwise
    required: bool
    nullable: bool
    range: rule.Range | None  # numbers only
    multiple_of: float | None
    min_length: int | None
    max_length: int | None
    pattern: str | None


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """(the bare type, every constraint object, whether None is allowed)."""
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        nullable = type(None) in options
        [annotation] = [option for option in options if option is not type(None)]
    found = list(metadata)
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            found += extra.metadata if isinstance(extra, pydantic.fields.FieldInfo) else [extra]
    return annotation, found, nullable


def _first(found: list[Any], name: str) -> Any:
    for item in found:
        value = getattr(item, name, None)
        if value is not None:
            return value
    return None


def shapes(model: type[pydantic.BaseModel]) -> list[Shape]:
    """The model's fields, in declaration order."""
    out = []
    for attribute, field in model.model_fields.items():
        base, found, nullable = _unwrap(field.annotation, list(field.metadata))
        origin = typing.get_origin(base)
        item = None
        if origin in (list, dict):
            item, _, _ = _unwrap(typing.get_args(base)[-1], [])
            base = origin
        alias = rule.alias(model, attribute)
        numeric = base in (int, float)
        out.append(
            Shape(
                attribute=attribute,
                alias=alias,
                base=base,
                item=item,
                required=field.is_required(),
                nullable=nullable,
                range=rule.model_range(model, attribute) if numeric else None,
                multiple_of=_first(found, "multiple_of"),
                min_length=_first(found, "min_length"),
                max_length=_first(found, "max_length"),
                pattern=_first(found, "pattern"),
            )
        )
    return out


def _is_model(base: Any) -> bool:
    return isinstance(base, type) and issubclass(base, pydantic.BaseModel)


def _needs_one(model: type[pydantic.BaseModel]) -> bool:
    """Whether the model's schema says minProperties: at least one of its fields is set."""
    extra = model.model_config.get("json_schema_extra")
    return isinstance(extra, dict) and bool(extra.get("minProperties"))


def _is_enum(base: Any) -> bool:
    return isinstance(base, type) and issubclass(base, enum.Enum)


# ---------------------------------------------------------------------------------------------
# Valid values.


def _int_bounds(shape: Shape) -> tuple[int, int]:
    assert shape.range is not None
    low = INT64[0] if shape.range.low is None else math.floor(shape.range.low)
    high = INT64[1] if shape.range.high is None else math.ceil(shape.range.high)
    if shape.range.low_open:
        low += 1
    if shape.range.high_open:
        high -= 1
    return low, high


def valid_number(shape: Shape) -> st.SearchStrategy[Any]:
    assert shape.range is not None
    if shape.base is int:
        low, high = _int_bounds(shape)
        if shape.range.low is None and shape.range.high is None:
            low, high = -3600, 3600  # an unbounded int (tolerationSeconds): plain values
        step = int(shape.multiple_of or 1)
        first, last = -(-low // step), high // step
        # Small values most of the time: a replica count of 9,000 is valid but would make the
        # cluster create that many pod objects.
        small = st.integers(first, min(last, first + 8))
        return st.one_of(small, small, st.integers(first, last)).map(lambda n: n * step)
    return st.floats(
        min_value=shape.range.low,
        max_value=shape.range.high,
        exclude_min=shape.range.low_open,
        exclude_max=shape.range.high_open,
        allow_nan=False,
        allow_infinity=False,
    )


def valid_string(shape: Shape) -> st.SearchStrategy[str]:
    if shape.pattern == models.QUANTITY_PATTERN:
        return st.sampled_from(QUANTITIES)
    if shape.pattern == models.DURATION_PATTERN:
        return st.sampled_from(DURATIONS)
    if shape.pattern is not None:
        return st.from_regex(shape.pattern, fullmatch=True).filter(
            lambda text: len(text) <= (shape.max_length or 64)
        )
    words = st.sampled_from(
        ("kvscale/tiny-llama", "meta-llama/Llama-3.1-8B-Instruct", "tiny", "Qwen/Qwen3-0.6B")
    )
    return words.filter(lambda text: len(text) >= (shape.min_length or 0))


# Values the API server accepts in the operator's own objects: the fuzzing of what those
# accept is the mutations' job, not the valid draw's.
_EXTRA_ARGS = (
    "--seed=1",
    "--disable-log-requests",
    "--max-num-batched-tokens=2048",
    "--block-size=32",
)
_LABELS = st.sampled_from(("gpu", "kvscale.dev/pool", "node.kubernetes.io/instance-type"))
_LABEL_VALUES = st.sampled_from(("h100", "l4", "a", "pool-1"))


@st.composite
def valid_object(draw: st.DrawFn, model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A valid body of `model`: required fields always, optional ones now and then, and the
    model's cross-field rules made to hold."""
    body: dict[str, Any] = {}
    for shape in shapes(model):
        if shape.required or draw(st.integers(0, 3)) == 0:
            body[shape.alias] = draw(valid_value(model, shape))
    _make_rules_hold(model, body, draw)
    if _needs_one(model) and not body:
        first = shapes(model)[0]
        body[first.alias] = draw(valid_value(model, first))
    return body


def valid_value(model: type[pydantic.BaseModel], shape: Shape) -> st.SearchStrategy[Any]:
    base = shape.base
    if base is bool:
        return st.booleans()
    if base in (int, float):
        return valid_number(shape)
    if base is str:
        if (model, shape.attribute) == (models.Toleration, "key"):
            return _LABELS
        return valid_string(shape)
    if _is_enum(base):
        return st.sampled_from([member.value for member in base])
    if _is_model(base):
        return valid_object(base)
    if base is list and shape.item is str:
        return st.lists(st.sampled_from(_EXTRA_ARGS), max_size=2, unique=True)
    if base is list and _is_model(shape.item):
        return st.lists(
            _valid_toleration() if shape.item is models.Toleration else valid_object(shape.item),
            max_size=2,
        )
    if base is dict:
        return st.dictionaries(_LABELS, _LABEL_VALUES, max_size=2)
    raise TypeError(f"{model.__name__}.{shape.attribute}: no strategy for {base!r}")


def _valid_toleration() -> st.SearchStrategy[dict[str, Any]]:
    # core/v1's own rules on top of the model's: Exists takes no value, tolerationSeconds
    # only with NoExecute.
    exists = st.fixed_dictionaries({"key": _LABELS, "operator": st.just("Exists")})
    equal = st.fixed_dictionaries(
        {"key": _LABELS, "operator": st.just("Equal"), "value": _LABEL_VALUES},
        optional={"effect": st.sampled_from(("NoSchedule", "PreferNoSchedule"))},
    )
    timed = st.fixed_dictionaries(
        {
            "key": _LABELS,
            "operator": st.just("Exists"),
            "effect": st.just("NoExecute"),
            "tolerationSeconds": st.integers(0, 3600),
        }
    )
    return st.one_of(exists, equal, timed)


def _value_or_default(
    model: type[pydantic.BaseModel], attribute: str, body: Mapping[str, Any]
) -> Any:
    alias = rule.alias(model, attribute)
    if alias in body:
        return body[alias]
    return model.model_fields[attribute].get_default(call_default_factory=True)


def _members(model: type[pydantic.BaseModel], declared: rule.ExactlyOne) -> list[Shape]:
    """The shapes of a one-of's fields, in declaration order."""
    return [shape for shape in shapes(model) if shape.attribute in declared.fields]


def _make_rules_hold(
    model: type[pydantic.BaseModel], body: dict[str, Any], draw: st.DrawFn
) -> None:
    for declared in getattr(model, "rules", ()):
        if isinstance(declared, rule.AtMost):
            low = _value_or_default(model, declared.field, body)
            high = _value_or_default(model, declared.limit, body)
            if low is not None and high is not None and low > high:
                # Both written, swapped: `low` > `high` >= the limit's own lower bound, so
                # each value stays inside the other field's range (the rules' pairs share one).
                body[rule.alias(model, declared.field)] = high
                body[rule.alias(model, declared.limit)] = low
        elif isinstance(declared, rule.RequiredWhen):
            switch = _value_or_default(model, declared.switch, body)
            if switch == declared.value and _value_or_default(model, declared.field, body) is None:
                shape = next(s for s in shapes(model) if s.attribute == declared.field)
                body[shape.alias] = draw(valid_number(shape))
        else:
            members = _members(model, declared)
            kept = draw(st.sampled_from(members))
            for shape in members:
                if shape is not kept:
                    body.pop(shape.alias, None)
            if body.get(kept.alias) is None:
                body[kept.alias] = draw(valid_value(model, kept))


# ---------------------------------------------------------------------------------------------
# Where a mutation can land, and the mutations.


@dataclasses.dataclass(frozen=True)
class Site:
    """A field of some object in the spec tree: its model, its shape and its wire path."""

    model: type[pydantic.BaseModel]
    shape: Shape
    path: Path  # from the object's root, list items as ints


def sites(
    model: type[pydantic.BaseModel] = models.InferenceDeploymentSpec, at: Path = ("spec",)
) -> Iterator[Site]:
    """Every field below `model`, depth first; a list of objects contributes its first item."""
    for shape in shapes(model):
        path = (*at, shape.alias)
        yield Site(model, shape, path)
        if _is_model(shape.base):
            yield from sites(shape.base, path)
        elif shape.base is list and _is_model(shape.item):
            yield from sites(shape.item, (*path, 0))


SITES = tuple(sites())


def wire(path: Path) -> str:
    """A path as the API server writes it: spec.resources.tolerations[0].key."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclasses.dataclass
class Fuzzed:
    """One drawn object and what was done to it."""

    body: dict[str, Any]  # the whole object: apiVersion, kind, metadata, spec
    touched: list[Path] = dataclasses.field(default_factory=list)  # paths the mutations set
    # Objects a null or a removal may have emptied: one that needs a field is refused there.
    emptied: list[Path] = dataclasses.field(default_factory=list)
    mutations: list[str] = dataclasses.field(default_factory=list)  # "kind at path = value"

    def named(self) -> set[str]:
        """Wire paths a refusal may name: each touched one, and the fields that share a
        cross-field rule with one (a rule reports at the field to fix, which may be the other)."""
        paths = set(self.touched) | set(self.emptied)
        for touched in self.touched:
            site = _site_or_none(touched)
            if site is None:  # an unknown field
                continue
            for declared in getattr(site.model, "rules", ()):
                pair = {rule.alias(site.model, name) for name in _rule_fields(declared)}
                if site.shape.alias in pair:
                    paths |= {(*touched[:-1], other) for other in pair}
                    if isinstance(declared, rule.ExactlyOne):  # reported at the object
                        paths.add(touched[:-1])
        return {wire(path) for path in paths}


def _rule_fields(declared: rule.Rule) -> tuple[str, ...]:
    if isinstance(declared, rule.AtMost):
        return declared.field, declared.limit
    if isinstance(declared, rule.RequiredWhen):
        return declared.field, declared.switch
    return declared.fields


def _parent(body: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The object holding the field at `path`, made (valid) where it is missing; None when an
    earlier mutation turned something on the way into a non-object."""
    node: Any = body
    walked: Path = ()
    for part in path[:-1]:
        walked = (*walked, part)
        if isinstance(part, int):
            if not isinstance(node, list):
                return None
            while len(node) <= part:
                node.append({})
            node = node[part]
            continue
        if not isinstance(node, dict):
            return None
        if part not in node:
            node[part] = [] if _site(walked).shape.base is list else {}
        node = node[part]
    return node if isinstance(node, dict) else None


def _site_or_none(path: Path) -> Site | None:
    generic = tuple(0 if isinstance(part, int) else part for part in path)
    return next((site for site in SITES if site.path == generic), None)


def _site(path: Path) -> Site:
    found = _site_or_none(path)
    assert found is not None, f"no field at {wire(path)}"
    return found


def _number_edges(shape: Shape) -> list[Any]:
    """Values at, just inside and just outside each bound."""
    assert shape.range is not None
    found: list[Any] = []
    if shape.base is int:
        low = INT64[0] if shape.range.low is None else int(shape.range.low)
        high = INT64[1] if shape.range.high is None else int(shape.range.high)
        step = int(shape.multiple_of or 1)
        for edge in (low, high):
            found += [edge - 1, edge, edge + 1, edge - step, edge + step]
        found += [low + 1 if step == 1 else low + step + 1]  # inside, and not a multiple
        # The same edges written as floats (8000.0): JSON has one number type.
        return [*sorted(set(found)), float(low), float(high), low + 0.5]
    for bound in (shape.range.low, shape.range.high):
        if bound is not None:
            found += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
            found += [bound - 1, bound + 1, bound - 1e-6, bound + 1e-6]
    return sorted(set(found))


def _other_type(shape: Shape) -> st.SearchStrategy[Any]:
    base = shape.base
    if base in (int, float):
        return st.sampled_from(["8", "0.5", "1e3", "", True, False, [1], {"value": 1}])
    if base is bool:
        return st.sampled_from(["true", "false", "yes", 1, 0, 1.0, [True]])
    if base is str or _is_enum(base):
        return st.sampled_from([1, 0, 1.5, True, ["x"], {"x": "y"}])
    if base is list:
        return st.sampled_from(["--seed=1", 1, {"0": "x"}, True])
    return st.sampled_from(["", "x", 1, True, [], [{}]])  # an object (a model or a map)


def _unknown_names(model: type[pydantic.BaseModel]) -> st.SearchStrategy[str]:
    """Names the model does not declare: Python's snake_case spelling of a field (a model that
    also takes its attribute names would accept it), other near misses, and made-up names."""
    declared = shapes(model)
    aliases = {shape.alias for shape in declared}
    snake = sorted({shape.attribute for shape in declared} - aliases)
    near: set[str] = set()
    for shape in declared:
        near |= {shape.alias.lower(), shape.alias.upper(), shape.alias[:-1], shape.alias + "s"}
        near |= {shape.alias[0].upper() + shape.alias[1:], shape.alias.replace("GiB", "Gib")}
    options = [st.sampled_from(sorted(near - aliases))]
    options += [st.sampled_from(snake)] if snake else []
    options += [st.from_regex(r"[a-z][a-zA-Z0-9]{0,12}", fullmatch=True)]
    return st.one_of(options).filter(lambda name: name not in aliases)


def _odd_string(shape: Shape) -> st.SearchStrategy[str]:
    lengths = [n for n in (shape.min_length, shape.max_length) if n is not None]
    sized = [("m" * n) for length in lengths for n in (length - 1, length, length + 1) if n >= 0]
    return st.one_of(
        st.sampled_from(ODD_STRINGS + tuple(sized) + ("h" * HUGE,)),
        st.text(max_size=24),
    )


_KINDS = ("bound", "type", "unknown", "rule", "odd", "missing", "null", "quantity", "duration")


@st.composite
def mutate(draw: st.DrawFn, fuzzed: Fuzzed) -> None:
    """Applies one mutation to `fuzzed.body`, recording where."""
    kind = draw(st.sampled_from(_KINDS))
    spec = fuzzed.body["spec"]
    root = {"spec": spec}

    def pick(accept: Callable[[Site], bool]) -> Site:
        return draw(st.sampled_from([site for site in SITES if accept(site)]))

    def put(site: Site, value: Any, path: Path | None = None) -> None:
        path = path or site.path
        parent = _parent(root, path)
        if parent is None:
            return
        key = path[-1]
        assert isinstance(key, str), f"{wire(path)} is not a field"
        if value is _REMOVE:
            parent.pop(key, None)
            shown = "removed"
        else:
            parent[key] = value
            shown = (
                repr(value)
                if not isinstance(value, str) or len(value) < 40
                else f"<{len(value)} chars>"
            )
        fuzzed.touched.append(path)
        if value is None or value is _REMOVE:
            fuzzed.emptied.append(path[:-1])
        fuzzed.mutations.append(f"{kind} {wire(path)} = {shown}")

    if kind == "bound":
        site = pick(lambda s: s.shape.range is not None)
        put(site, draw(st.sampled_from(_number_edges(site.shape))))
    elif kind == "type":
        site = pick(lambda s: True)
        put(site, draw(_other_type(site.shape)))
    elif kind == "unknown":
        holders = [(models.InferenceDeploymentSpec, ("spec",))] + [
            (
                s.shape.base if _is_model(s.shape.base) else s.shape.item,
                s.path + ((0,) if s.shape.base is list else ()),
            )
            for s in SITES
            if _is_model(s.shape.base) or (s.shape.base is list and _is_model(s.shape.item))
        ]
        model, at = draw(st.sampled_from(holders))
        name = draw(_unknown_names(model))
        parent = _parent(root, (*at, "?"))
        if parent is not None:
            parent[name] = draw(st.sampled_from([1, "x", True, {}]))
            fuzzed.touched.append((*at, name))
            fuzzed.mutations.append(f"unknown {wire((*at, name))}")
    elif kind == "rule":
        site = pick(lambda s: bool(getattr(s.shape.base, "rules", ())))
        declared = draw(st.sampled_from(site.shape.base.rules))
        model = site.shape.base
        if isinstance(declared, rule.AtMost):
            low_shape = next(s for s in shapes(model) if s.attribute == declared.limit)
            high_shape = next(s for s in shapes(model) if s.attribute == declared.field)
            small = draw(valid_number(low_shape))
            big = draw(valid_number(high_shape).filter(lambda value: value > small))
            put(site, big, (*site.path, high_shape.alias))
            put(site, small, (*site.path, low_shape.alias))
        elif isinstance(declared, rule.RequiredWhen):
            put(site, declared.value, (*site.path, rule.alias(model, declared.switch)))
            put(site, _REMOVE, (*site.path, rule.alias(model, declared.field)))
        else:  # a one-of with every member set, or none
            members = _members(model, declared)
            every = draw(st.booleans())
            for shape in members:
                value = draw(valid_value(model, shape)) if every else _REMOVE
                put(site, value, (*site.path, shape.alias))
    elif kind == "odd":
        site = pick(
            lambda s: s.shape.base is str or (s.shape.base in (list, dict) and s.shape.item is str)
        )
        value = draw(_odd_string(site.shape))
        if site.shape.base is list:
            put(site, [*draw(valid_value(site.model, site.shape)), value])
        elif site.shape.base is dict:
            key = draw(st.sampled_from(["gpu", value])) or "gpu"
            put(site, {key: draw(st.sampled_from([value, "a"]))})
        else:
            put(site, value)
    elif kind == "missing":
        site = pick(
            lambda s: s.shape.required or (_is_model(s.shape.base) and _needs_one(s.shape.base))
        )
        if site.shape.required:
            put(site, _REMOVE)
        else:
            put(site, {})
    elif kind == "null":
        site = pick(lambda s: True)
        put(site, None)
    elif kind == "quantity":
        site = pick(lambda s: s.shape.pattern == models.QUANTITY_PATTERN)
        put(site, draw(st.sampled_from(NEAR_QUANTITIES + QUANTITIES)))
    else:
        site = pick(lambda s: s.shape.pattern == models.DURATION_PATTERN)
        put(site, draw(st.sampled_from(NEAR_DURATIONS + DURATIONS)))


class _Remove(enum.Enum):
    REMOVE = enum.auto()


_REMOVE = _Remove.REMOVE


@st.composite
def inference_deployments(draw: st.DrawFn, name: str) -> Fuzzed:
    """One InferenceDeployment called `name`: a valid spec, then 0 to 2 mutations (none about
    a third of the time)."""
    spec = draw(valid_object(models.InferenceDeploymentSpec))
    body = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }
    fuzzed = Fuzzed(body)
    for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2)))):
        draw(mutate(fuzzed))
    return fuzzed
