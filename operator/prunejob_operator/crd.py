"""Generate the PruneJob CRD (`crds/prunejob.yaml`) from the pydantic models.

    python -m prunejob_operator.crd                # print the CRD
    python -m prunejob_operator.crd --write [PATH] # write it (default crds/prunejob.yaml)
    python -m prunejob_operator.crd --check [PATH] # exit 1 when that file is stale
    python -m prunejob_operator.crd --reference    # print the spec/status field reference

Pydantic emits JSON Schema (draft 2020-12); a CRD needs a *structural* OpenAPI v3
schema: no $ref, no titles, no `anyOf` with null, `exclusiveMinimum` as a boolean,
no `additionalProperties: false` next to `properties` (the API server prunes
unknown fields instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from prunejob_operator import models

# The default PATH: the committed CRD of the source checkout this module lives in.
CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "prunejob.yaml"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ratio", "type": "number", "jsonPath": ".status.pruningRatio"},
    {"name": "Filters", "type": "string", "jsonPath": ".status.filtersSummary"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
    {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema rewritten as a Kubernetes structural schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _convert(raw, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, definitions)

    node = dict(node)
    if "anyOf" in node:
        options = [option for option in node.pop("anyOf") if option.get("type") != "null"]
        if node.get("x-kubernetes-int-or-string"):
            options = []  # the flag alone says "int or string"
        elif len(options) == 1:
            node = {**options[0], **node}
        elif options:
            raise ValueError(f"cannot express anyOf {options} in a structural schema")
        if node.get("default", ...) is None:
            del node["default"]
        if "$ref" in node:
            return _convert(node, definitions)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "additionalProperties" and value is False):
            continue
        if key == "default" and value is None:
            continue
        if key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "properties":
            out["properties"] = {name: _convert(sub, definitions) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, definitions)
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
        out.pop("additionalProperties", None)
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


def build_crd() -> dict[str, Any]:
    spec_schema = structural_schema(models.PruneJobSpec)
    status_schema = structural_schema(models.PruneJobStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{models.PLURAL}.{models.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "prunejob"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": list(models.CATEGORIES),
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Prune a Keras model from S3 with TAO tlt-prune "
                            "semantics in a GPU Job.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated from prunejob_operator/models.py: python -m prunejob_operator.crd --write\n"


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: anchors make a CRD hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd() -> str:
    return HEADER + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


def render_reference() -> str:
    """A Markdown field reference of spec and status, from the same schema."""
    lines = ["| Field | Type | Default | Description |", "|---|---|---|---|"]

    def walk(prefix: str, schema: dict[str, Any], required: set[str]) -> None:
        for name, sub in schema.get("properties", {}).items():
            path = f"{prefix}.{name}"
            kind = sub.get("type", "int-or-string" if sub.get("x-kubernetes-int-or-string") else "")
            if kind == "array" and sub.get("items", {}).get("type"):
                kind = f"[]{sub['items']['type']}"
            facts = []
            if "enum" in sub:
                facts.append(" \\| ".join(str(item) for item in sub["enum"]))
            for bound, symbol in (("minimum", ">="), ("maximum", "<=")):
                if bound in sub:
                    exclusive = sub.get(f"exclusive{bound.title()}") is True
                    facts.append(f"{symbol.rstrip('=') if exclusive else symbol} {sub[bound]}")
            if name in required:
                facts.append("required")
            description = " ".join([sub.get("description", ""), *(f"({f})" for f in facts)])
            default_text = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
            lines.append(f"| `{path}` | {kind} | {default_text} | {description.strip()} |")
            item_schema = sub.get("items", {})
            if sub.get("properties"):
                walk(path, sub, set(sub.get("required", [])))
            elif item_schema.get("properties"):
                walk(f"{path}[]", item_schema, set(item_schema.get("required", [])))

    for section, model in (("spec", models.PruneJobSpec), ("status", models.PruneJobStatus)):
        schema = structural_schema(model)
        walk(section, schema, set(schema.get("required", [])))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prunejob_operator.crd", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--write", nargs="?", const="", metavar="PATH", help=f"write the CRD (default {CRD_PATH})"
    )
    mode.add_argument(
        "--check", nargs="?", const="", metavar="PATH", help="exit 1 when the file is stale"
    )
    mode.add_argument("--reference", action="store_true", help="print a Markdown reference")
    args = parser.parse_args(argv)
    if args.reference:
        sys.stdout.write(render_reference())
        return 0
    text = render_crd()
    if args.write is not None:
        target = Path(args.write) if args.write else CRD_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}", file=sys.stderr)
    elif args.check is not None:
        target = Path(args.check) if args.check else CRD_PATH
        current = target.read_text() if target.exists() else ""
        if current != text:
            print(
                f"prunejob: error: {target} is stale; run "
                f"`python -m prunejob_operator.crd --write {target}`",
                file=sys.stderr,
            )
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
