"""Label and field selectors as the Kubernetes API parses them (pure functions).

Supported label syntax: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (exists) and ``!k`` (does not exist), comma-separated (all must hold).
Field selectors: ``path=v``, ``path==v``, ``path!=v`` on any dotted path of the object
(``metadata.name``, ``metadata.namespace``, ``status.phase``, ``involvedObject.name``...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from devcluster.apiserver.errors import BadRequest

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s,]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [term for term in terms if term.strip()]


def _label_term(term: str) -> Predicate:
    if match := _SET_TERM.match(term):
        key, operator, raw_values = match.groups()
        values = {value.strip() for value in raw_values.split(",") if value.strip()}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ_TERM.match(term):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS_TERM.match(term):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise BadRequest(f"unable to parse requirement: invalid label selector term {term.strip()!r}")


def parse_label_selector(selector: str | None) -> Predicate:
    """Return a predicate over a whole object that checks ``metadata.labels``."""
    if not selector or not selector.strip():
        return lambda obj: True
    predicates = [_label_term(term) for term in split_terms(selector)]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(predicate(labels) for predicate in predicates)

    return matches


def field_value(obj: Mapping[str, Any], path: str) -> str | None:
    """The string form of a dotted field, as field selectors compare it."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_term(term: str) -> Predicate:
    match = _EQ_TERM.match(term)
    if not match:
        raise BadRequest(
            f"invalid field selector term {term.strip()!r}: use path=value or path!=value"
        )
    path, operator, value = match.groups()
    if operator == "!=":
        return lambda obj: (field_value(obj, path) or "") != value
    return lambda obj: (field_value(obj, path) or "") == value


def parse_field_selector(selector: str | None) -> Predicate:
    if not selector or not selector.strip():
        return lambda obj: True
    predicates = [_field_term(term) for term in split_terms(selector)]
    return lambda obj: all(predicate(obj) for predicate in predicates)


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy a LabelSelector object (matchLabels and matchExpressions,
    operators In, NotIn, Exists, DoesNotExist); an empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or ())
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }
        if not held.get(str(operator), False):
            return False
    return True
