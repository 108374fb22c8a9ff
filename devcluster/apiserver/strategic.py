"""Strategic merge patch of built-in kinds, as the API server applies it.

Strategic merge patch (``application/strategic-merge-patch+json``) as the API server
applies it to built-in kinds, driven by the schemas' ``x-kubernetes-patch-strategy`` and
``x-kubernetes-patch-merge-key`` (pure functions over JSON data).

Maps merge as in a merge patch (``null`` deletes); lists with the ``merge`` strategy merge:
by their merge key (``containers`` by ``name``, ``env`` by ``name``, ``conditions`` by
``type``...), or as a set for lists of scalars (``finalizers``: a patch listing some
finalizers adds them, it does not drop the others); other lists are replaced. Directives:
``$patch: replace|delete|merge`` (maps and list items), ``$retainKeys``,
``$deleteFromPrimitiveList/<field>``, ``$setElementOrder/<field>``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from devcluster.apiserver.errors import BadRequest

Schema = Mapping[str, Any]
Resolve = Callable[[Schema], Schema]  # follows a node's "$ref", if any

_DELETE_FROM = "$deleteFromPrimitiveList/"
_ORDER = "$setElementOrder/"


def strip_directives(value: Any) -> Any:
    """A patch value as data: directives dropped (what a replaced part becomes)."""
    if isinstance(value, dict):
        return {k: strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [
            strip_directives(item)
            for item in value
            if not (isinstance(item, dict) and "$patch" in item)
        ]
    return value


def _child(schema: Schema | None, key: str, resolve: Resolve) -> Schema | None:
    if schema is None:
        return None
    schema = resolve(schema)
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and key in properties:
        return resolve(properties[key])
    additional = schema.get("additionalProperties")
    return resolve(additional) if isinstance(additional, Mapping) else None


def _items(schema: Schema | None, resolve: Resolve) -> Schema | None:
    if schema is None or not isinstance(schema.get("items"), Mapping):
        return None
    return resolve(schema["items"])


def _ordered(values: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """``$setElementOrder``: the listed elements first, in that order; the rest after."""

    def identity(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [identity(item) for item in order]
    placed = sorted(
        (v for v in values if identity(v) in wanted), key=lambda v: wanted.index(identity(v))
    )
    return placed + [v for v in values if identity(v) not in wanted]


def merge_list(
    original: list[Any], patch: list[Any], schema: Schema | None, resolve: Resolve
) -> list[Any]:
    """A ``merge``-strategy list: by merge key, or as a set of scalars."""
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return strip_directives(patch)
    key = (schema or {}).get("x-kubernetes-patch-merge-key")
    items = _items(schema, resolve)
    result = copy.deepcopy(original)
    for item in patch:
        if key is None or not isinstance(item, dict):
            if item not in result:
                result.append(copy.deepcopy(item))
            continue
        if key not in item:
            raise BadRequest(f"map: {item} does not contain declared merge key: {key}")
        matches = (
            i for i, old in enumerate(result) if isinstance(old, dict) and old.get(key) == item[key]
        )
        index = next(matches, None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strip_directives(item))
        else:
            merged = merge_map(result[index], item, items, resolve)
            if merged is not None:
                result[index] = merged
    return result


def merge_map(
    original: Mapping[str, Any], patch: Mapping[str, Any], schema: Schema | None, resolve: Resolve
) -> dict[str, Any] | None:
    """Merge ``patch`` into ``original`` (copies); ``None`` when the patch deletes the map."""
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return None
    if directive == "replace":
        return strip_directives(patch)
    result = copy.deepcopy(dict(original))
    retain = patch.pop("$retainKeys", None)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain or k in patch}
    orders: dict[str, list[Any]] = {}
    for key in [k for k in patch if k.startswith(("$", _DELETE_FROM, _ORDER))]:
        value = patch.pop(key)
        if key.startswith(_DELETE_FROM):
            field = key[len(_DELETE_FROM) :]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
        elif key.startswith(_ORDER) and isinstance(value, list):
            orders[key[len(_ORDER) :]] = value
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
            continue
        sub = _child(schema, key, resolve)
        current = result.get(key)
        if isinstance(value, dict):
            merged = merge_map(current if isinstance(current, dict) else {}, value, sub, resolve)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            strategy = str((sub or {}).get("x-kubernetes-patch-strategy") or "")
            if "merge" in strategy.split(",") and isinstance(current, list):
                result[key] = merge_list(current, value, sub, resolve)
            else:
                result[key] = strip_directives(value)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            key = (_child(schema, field, resolve) or {}).get("x-kubernetes-patch-merge-key")
            result[field] = _ordered(result[field], order, key)
    return result


def apply(
    target: Mapping[str, Any], patch: Any, schema: Schema, resolve: Resolve
) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise BadRequest("a strategic merge patch must be a JSON object")
    merged = merge_map(target, patch, schema, resolve)
    return merged if merged is not None else {}
