"""Tests of the Argo CD health check (Lua) on the statuses the operator writes.

The Argo CD health check (Lua) on statuses the operator really writes, run by a Lua
5.4 interpreter (`apt-get install lua5.4`; skipped without one), and the argocd-cm
patch carrying the same script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_samples import report

from prunejob_contract.termination import success_message
from prunejob_operator import models
from prunejob_operator.records import summarize_job, summarize_pod
from prunejob_operator.status import build_status, derive, invalid_spec

ARGOCD = Path(__file__).resolve().parents[2] / "deploy" / "argocd"
SCRIPT = ARGOCD / "health-prunejob.lua"
LUA = shutil.which("lua5.4") or shutil.which("lua")
RUN = models.RunRef(key="k", job_name="pj-g1", generation=1)


def lua_value(value: Any) -> str:
    """A Python JSON value as a Lua literal (lists become sequences, as Argo CD's do)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string here (no \u escapes)
    if isinstance(value, list):
        return "{" + ", ".join(lua_value(item) for item in value) + "}"
    items = ", ".join(f"[{json.dumps(k)}] = {lua_value(v)}" for k, v in value.items())
    return "{" + items + "}"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    program = (
        f"local obj = {lua_value(obj)}\n"
        f"local function check()\n{SCRIPT.read_text()}\nend\n"
        "local hs = check()\nio.write(hs.status, '\\n', hs.message)\n"
    )
    done = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, check=True)
    status, message = done.stdout.split("\n", 1)
    return status, message


def prunejob(status: models.PruneJobStatus | None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "pj", "generation": generation}}
    if status is not None:
        body["status"] = status.to_patch()
    return body


def observed(
    *,
    conditions: list[dict[str, str]] | None = None,
    suspend: bool = False,
    pods: list[dict[str, Any]] | None = None,
    suspended: bool = False,
) -> models.PruneJobStatus:
    job = {
        "metadata": {
            "name": "pj-g1",
            "labels": {"prunejob.io/generation": "1"},
            "annotations": {"prunejob.io/prunejob": "pj"},
        },
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions or []},
    }
    seen = derive(
        generation=1,
        job_name="pj-g1",
        job=summarize_job(job),
        pods=[summarize_pod(pod) for pod in pods or []],
        suspended=suspended,
        run=RUN,
    )
    return build_status(models.PruneJobStatus(), seen, "2025-01-01T00:00:00Z")


def pod(phase: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "pj-g1-abcde", "creationTimestamp": "T"},
        "status": {"phase": phase, "containerStatuses": [{"name": "prune", "state": state}]},
    }


REPORT = report([], params=(10, 5), filters=(4, 2), flops=(8, 4), pruning_ratio=0.5)
SUCCEEDED = pod("Succeeded", {"terminated": {"exitCode": 0, "message": success_message(REPORT)}})
MISSING_SECRET = pod(
    "Pending",
    {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "key" not found'}},
)
CASES = {
    "no status yet": (prunejob(None), "Progressing"),
    "queued": (prunejob(observed(suspend=True)), "Progressing"),
    "running": (prunejob(observed(pods=[pod("Running", {"running": {}})])), "Progressing"),
    "succeeded": (prunejob(observed(conditions=[], pods=[SUCCEEDED])), "Healthy"),
    "failed": (
        prunejob(observed(conditions=[{"type": "Failed", "status": "True", "reason": "X"}])),
        "Degraded",
    ),
    "invalid spec": (
        prunejob(build_status(models.PruneJobStatus(), invalid_spec(1, "spec.gpus"), "t")),
        "Degraded",
    ),
    "suspended": (prunejob(observed(suspended=True)), "Suspended"),
    "missing secret": (prunejob(observed(pods=[MISSING_SECRET])), "Degraded"),
    "spec not yet seen": (prunejob(observed(pods=[SUCCEEDED]), generation=2), "Progressing"),
    "a status from before the conditions": (
        {"metadata": {"generation": 1}, "status": {"phase": "Succeeded", "observedGeneration": 1}},
        "Healthy",
    ),
}


@pytest.mark.skipif(LUA is None, reason="no Lua interpreter (apt-get install lua5.4)")
@pytest.mark.parametrize("case", list(CASES))
def test_health_of_the_statuses_the_operator_writes(case: str) -> None:
    obj, expected = CASES[case]
    status, message = health(obj)
    assert status == expected, message
    if "status" in obj and status != "Progressing":
        assert message.startswith(obj["status"].get("reason") or "")


def test_the_argocd_cm_patch_carries_the_script() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    embedded = patch["data"]["resource.customizations.health.prunejob.io_PruneJob"]
    code = [line for line in SCRIPT.read_text().splitlines() if not line.startswith("--")]
    assert embedded.strip() == "\n".join(code).strip()
