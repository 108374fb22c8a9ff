"""Unknown-field pruning and ``fieldValidation`` (Strict, Warn, Ignore) of request bodies.

Unknown fields, as decoding a request body drops them, and ``fieldValidation``: the paths
of fields a built-in kind's schema (or ``ObjectMeta``, for custom resources) does not know
are pruned and reported, then ``Strict`` refuses the request (400 "strict decoding error"),
``Warn`` (the default) answers with ``Warning`` headers, ``Ignore`` says nothing.
Pure functions over JSON data and the generated built-in schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devcluster.apiserver import builtin_schemas
from devcluster.apiserver.errors import BadRequest
from devcluster.apiserver.resources import ResourceType

DIRECTIVES = ("Strict", "Warn", "Ignore")
Schema = Mapping[str, Any]


def resolve(schema: Schema) -> Schema:
    """Follow ``$ref`` into the built-in schemas."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    schemas = builtin_schemas.load()["schemas"]
    for _ in range(20):
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return schema
    return schema


def kind_root(resource: ResourceType, version: str) -> Schema | None:
    """A built-in kind's schema, if it has one."""
    name = builtin_schemas.kind_schema(resource.group, version, resource.kind)
    return None if name is None else resolve({"$ref": name})


def _prune(schema: Schema, value: Any, path: str, found: list[str]) -> None:
    """Drop ``value``'s fields that ``schema`` does not know (scalars have none)."""
    if isinstance(value, dict):
        schema = resolve(schema)
        properties = schema.get("properties")
        if isinstance(properties, Mapping):
            for key in list(value):
                where = f"{path}.{key}" if path else key
                if key not in properties:
                    found.append(where)
                    del value[key]
                elif isinstance(value[key], (dict, list)):
                    _prune(properties[key], value[key], where, found)
        elif isinstance(schema.get("additionalProperties"), Mapping):
            for key, item in value.items():
                if isinstance(item, (dict, list)):
                    _prune(schema["additionalProperties"], item, f"{path}.{key}", found)
    elif isinstance(value, list):
        items = resolve(schema).get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    _prune(items, item, f"{path}[{index}]", found)


def prune_unknown(resource: ResourceType, version: str, obj: dict[str, Any]) -> list[str]:
    """Drop what the kind does not know (custom resources: in ``metadata`` only; their
    schema's own pruning covers the rest); returns the dropped fields' paths."""
    found: list[str] = []
    root = kind_root(resource, version)
    if root is not None:
        _prune(root, obj, "", found)
    elif resource.schemas and isinstance(obj.get("metadata"), dict):
        _prune({"$ref": "V1ObjectMeta"}, obj["metadata"], "metadata", found)
    return found


def directive(query: Mapping[str, str]) -> str:
    value = query.get("fieldValidation") or "Warn"
    if value not in DIRECTIVES:
        raise BadRequest(
            f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", '
            '"Strict", "Warn"'
        )
    return value


def report(
    resource: ResourceType,
    version: str,
    unknown: list[str],
    field_validation: str,
    warnings: list[str] | None,
) -> None:
    """Refuse (Strict), warn (Warn) or say nothing (Ignore) about unknown fields."""
    if not unknown or field_validation == "Ignore":
        return
    messages = [f'unknown field "{path}"' for path in unknown]
    if field_validation == "Strict":
        raise BadRequest(
            f'{resource.kind} in version "{version}" cannot be handled as a {resource.kind}: '
            "strict decoding error: " + ", ".join(messages)
        )
    if warnings is not None:
        warnings.extend(messages)
