"""Run identity: which spec fields define a run's result, and the run key. Pure.

A *run* is one execution of the worker for a set of result-defining fields (what is
pruned, how, with which key and worker, to where). Every other field is operational:
how, where and with which identity the run executes, not what it produces. The run
key is a short hash of the result-defining fields' canonical JSON, with defaults
applied (a field left out and the same field set to its default give one key, and a
field added to the API later with a default changes no existing key). Editing only
operational fields keeps the key: a finished run stays finished, a running one keeps
running. Any result-defining edit, `runId` included, gives a new key: a new run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from prunejob_operator.models import PruneJobSpec

Role = Literal["result", "operational"]
KEY_LENGTH = 16  # hex digits: 64 bits, a label value


@dataclass(frozen=True)
class FieldRole:
    path: str  # spec field as written in YAML, dotted below spec ("s3.endpoint")
    role: Role
    why: str


IMAGE_WHY = (
    "the worker version that computes the result (left empty: the operator's default, "
    "so an operator upgrade reruns nothing)"
)
OVERWRITE_WHY = (
    "may replace an output written by someone else; the PruneJob's own earlier output "
    "is replaced without it"
)
FIELDS: tuple[FieldRole, ...] = (
    FieldRole("model", "result", "the model that is pruned"),
    FieldRole("output", "result", "where the pruned model is written"),
    FieldRole("pruning", "result", "every pruning setting shapes the pruned model"),
    FieldRole("keySecretRef", "result", "the key decrypts the model and encrypts the output"),
    FieldRole("s3.endpoint", "result", "which store `model` and `output` name"),
    FieldRole("s3.region", "result", "which store `model` and `output` name"),
    FieldRole("image", "result", IMAGE_WHY),
    FieldRole("runId", "result", "change it to run again with nothing else changed"),
    FieldRole("s3.credentialsSecretRef", "operational", "which identity reaches the store"),
    FieldRole("overwrite", "operational", OVERWRITE_WHY),
    FieldRole("gpus", "operational", "resources of the pod"),
    FieldRole("resources", "operational", "resources of the pod"),
    FieldRole("nodeSelector", "operational", "where the pod runs"),
    FieldRole("tolerations", "operational", "where the pod runs"),
    FieldRole("affinity", "operational", "where the pod runs"),
    FieldRole("priorityClassName", "operational", "when the pod runs"),
    FieldRole("queueName", "operational", "when the pod runs (Kueue)"),
    FieldRole("serviceAccountName", "operational", "with which identity the pod runs"),
    FieldRole("imagePullSecrets", "operational", "how the worker image is pulled"),
    FieldRole("backoffLimit", "operational", "how often a failed pod is retried"),
    FieldRole("activeDeadlineSeconds", "operational", "how long the run may take"),
    FieldRole("ttlSecondsAfterFinished", "operational", "how long the finished Job is kept"),
    FieldRole("suspend", "operational", "holds and resumes the run (acts on its Job)"),
)
RESULT_FIELDS: tuple[str, ...] = tuple(f.path for f in FIELDS if f.role == "result")


def role_of(path: str) -> Role | None:
    """The role of a spec field path, or of the classified field that contains it."""
    for item in FIELDS:
        if path == item.path or path.startswith(item.path + "."):
            return item.role
    return None


def _pick(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def canonical(spec: PruneJobSpec) -> dict[str, Any]:
    """The result-defining fields that differ from their defaults, as JSON values."""
    dumped = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    layers = _pick(dumped, "pruning.excludedLayers")
    if layers is not None:  # a set of names: order and repeats do not change the result
        dumped["pruning"]["excludedLayers"] = sorted(set(layers))
    picked = {path: _pick(dumped, path) for path in RESULT_FIELDS}
    # An empty string (`runId: ""`, `image: ""`) means the same as leaving it out.
    return {path: value for path, value in picked.items() if value not in (None, "")}


def run_key(spec: PruneJobSpec) -> str:
    """The run key of a spec: equal for specs that differ only in operational fields."""
    text = json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def render_table() -> str:
    """The Markdown table of the fields and their roles (README "Which edits start a
    new run")."""
    lines = ["| Field | Editing it | Why |", "|---|---|---|"]
    for item in FIELDS:
        effect = "starts a new run" if item.role == "result" else "keeps the run"
        lines.append(f"| `spec.{item.path}` | {effect} | {item.why} |")
    return "\n".join(lines) + "\n"
