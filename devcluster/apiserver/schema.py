"""Structural-schema handling for custom resources, as the API server does it (pure functions).

``apply_defaults`` prunes unknown fields (unless ``x-kubernetes-preserve-unknown-fields``)
and fills ``default`` values; ``validate`` reports ``type``, ``enum``, ``required``,
numeric ranges, string length/``pattern``, item counts and ``nullable`` violations with the
API server's wording (``spec.x: Unsupported value: ...``). Not covered: CEL
``x-kubernetes-validations``, ``format`` checks, ``oneOf``/``anyOf``/``allOf``/``not``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

_ROOT_KEEP = ("apiVersion", "kind", "metadata")
# Numeric bounds: (keyword, its exclusive flag, the API server's word for the relation).
_BOUNDS = (
    ("minimum", "exclusiveMinimum", "greater than"),
    ("maximum", "exclusiveMaximum", "less than"),
)
# Size limits by JSON type: (keyword, whether it is a lower bound, the message).
_SIZE_LIMITS: dict[type, tuple[tuple[str, bool, str], ...]] = {
    str: (
        ("minLength", True,
         "{path}: Invalid value: {shown}: {path} in body should be at least {limit} chars long"),
        ("maxLength", False, "{path}: Too long: may not be more than {limit} bytes"),
    ),
    list: (
        ("minItems", True,
         "{path}: Invalid value: {size}: {path} in body should have at least {limit} items"),
        ("maxItems", False, "{path}: Too many: {size}: must have at most {limit} items"),
    ),
}  # fmt: skip


def _preserves_unknown(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _walk_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        properties: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        if properties and not _preserves_unknown(schema) and not additional:
            for key in [k for k in value if k not in properties]:
                del value[key]
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _walk_defaults(sub, value[key])
        if isinstance(additional, dict):
            for key in [k for k in value if k not in properties]:
                value[key] = _walk_defaults(additional, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_walk_defaults(schema["items"], item) for item in value]
    return value


def apply_defaults(schema: dict[str, Any], obj: dict[str, Any]) -> None:
    """Prune unknown fields and fill defaults in place (keeps apiVersion, kind, metadata)."""
    kept = {key: obj[key] for key in _ROOT_KEEP if key in obj}
    properties = schema.get("properties") or {}
    if properties and not _preserves_unknown(schema):
        for key in [k for k in obj if k not in properties and k not in _ROOT_KEEP]:
            del obj[key]
    for key, sub in properties.items():
        if key in _ROOT_KEEP:
            continue
        if key not in obj and "default" in sub:
            obj[key] = copy.deepcopy(sub["default"])
        if key in obj:
            obj[key] = _walk_defaults(sub, obj[key])
    obj.update(kept)


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, default=str)


def _type_ok(expected: str, value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    match expected:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _check(schema: dict[str, Any], value: Any, path: str, problems: list[str]) -> None:
    if value is None:
        if not schema.get("nullable"):
            problems.append(f'{path}: Invalid value: "null": {path} in body must not be null')
        return
    expected = schema.get("type")
    if expected and not _type_ok(expected, value, schema):
        problems.append(
            f"{path}: Invalid value: {_show(value)}: {path} in body must be of type {expected}"
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        problems.append(f"{path}: Unsupported value: {_show(value)}: supported values: {supported}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, exclusive, word in _BOUNDS:
            bound = schema.get(key)
            if bound is None:
                continue
            outside = value < bound if key == "minimum" else value > bound
            if schema.get(exclusive) and (outside or value == bound):
                relation = f"{word} {bound}"
            elif outside:
                relation = f"{word} or equal to {bound}"
            else:
                continue
            problems.append(
                f"{path}: Invalid value: {_show(value)}: {path} in body should be {relation}"
            )
    for keyword, lower, template in _SIZE_LIMITS.get(type(value), ()):
        if keyword in schema:
            limit = schema[keyword]
            if len(value) < limit if lower else len(value) > limit:
                problems.append(
                    template.format(path=path, shown=_show(value), size=len(value), limit=limit)
                )
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(
            f"{path}: Invalid value: {_show(value)}: {path} in body should match "
            f"'{schema['pattern']}'"
        )
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                _check(items, item, f"{path}[{index}]", problems)
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties") or {}
        for required in schema.get("required") or []:
            if required not in value:
                problems.append(f"{path}.{required}: Required value")
        for key, sub in properties.items():
            if key in value:
                _check(sub, value[key], f"{path}.{key}", problems)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in value:
                if key not in properties:
                    _check(additional, value[key], f"{path}.{key}", problems)


def validate(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Violations of the CRD version's openAPIV3Schema, one message per problem."""
    problems: list[str] = []
    properties: dict[str, Any] = schema.get("properties") or {}
    for required in schema.get("required") or []:
        if required not in obj:
            problems.append(f"{required}: Required value")
    for key, sub in properties.items():
        if key in _ROOT_KEEP or key not in obj:
            continue
        _check(sub, obj[key], key, problems)
    return problems
