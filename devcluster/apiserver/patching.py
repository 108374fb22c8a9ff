"""PATCH bodies as the API server applies them (pure functions over JSON-like data).

- ``application/merge-patch+json``: RFC 7386 (``null`` deletes a key, lists replace).
- ``application/strategic-merge-patch+json``: treated as a merge patch after dropping the
  ``$patch``/``$setElementOrder``/``$retainKeys``/``$deleteFromPrimaryKeys`` directives, so
  lists are replaced, not merged by key. Enough for client-side ``kubectl apply``.
- ``application/json-patch+json``: RFC 6902 (add, remove, replace, move, copy, test);
  a failed ``test`` is 422, as in the real API (kopf treats it as "retry later").
"""

from __future__ import annotations

import copy
from typing import Any

from devcluster.apiserver.errors import BadRequest, Invalid, UnsupportedMediaType

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: returns a new value; neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strip_strategic_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {
            key: strip_strategic_directives(value)
            for key, value in patch.items()
            if not key.startswith("$")
        }
    if isinstance(patch, list):
        return [
            strip_strategic_directives(item)
            for item in patch
            if not (isinstance(item, dict) and "$patch" in item)
        ]
    return patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise BadRequest(f"json patch path {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _child(node: Any, part: str, path: str) -> Any:
    """One step down a JSON pointer; `path` is the whole pointer, for the error."""
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise Invalid(f"json patch: path {path!r} does not exist")


def _resolve_parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, path)
    return node, parts[-1]


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in _pointer(path):
        node = _child(node, part, path)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _resolve_parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise Invalid(f"json patch: index in {path!r} is out of range")
    else:
        raise Invalid(f"json patch: path {path!r} does not point into an object or a list")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise Invalid("json patch: cannot remove the whole document")
    parent, last = _resolve_parent(doc, parts, path)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise Invalid(f"json patch: path {path!r} does not exist")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 on a deep copy of ``target``."""
    if not isinstance(operations, list):
        raise BadRequest("json patch body must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise BadRequest(f"json patch operation {operation!r} needs 'op' and 'path'")
        op, path = operation["op"], operation["path"]
        if op == "test":
            try:
                actual = _get(doc, path)
            except Invalid:
                actual = None
            if actual != operation.get("value"):
                raise Invalid(
                    f"the server rejected our request due to an error in our request: "
                    f"json patch test operation on {path!r} failed"
                )
        elif op == "add":
            doc = _add(doc, path, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            doc = _remove(doc, path)
        elif op == "replace":
            _get(doc, path)  # must exist
            doc = _add(_remove(doc, path), path, copy.deepcopy(operation.get("value")))
        elif op in ("move", "copy"):
            source = operation.get("from", "")
            value = copy.deepcopy(_get(doc, source))
            if op == "move":
                doc = _remove(doc, source)
            doc = _add(doc, path, value)
        else:
            raise BadRequest(f"json patch operation {op!r} is not supported")
    return doc


def apply_patch(target: dict[str, Any], content_type: str, body: Any) -> dict[str, Any]:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == MERGE:
        result = merge_patch(target, body)
    elif kind == STRATEGIC:
        result = merge_patch(target, strip_strategic_directives(body))
    elif kind == JSON_PATCH:
        result = json_patch(target, body)
    elif kind == APPLY:
        raise UnsupportedMediaType(
            "server-side apply is not supported by devcluster: use client-side kubectl apply"
        )
    else:
        raise UnsupportedMediaType(f"the body of the request was in an unknown format: {kind!r}")
    if not isinstance(result, dict):
        raise Invalid("the patched object must be a JSON object")
    return result
