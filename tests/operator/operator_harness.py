"""Integration-test helpers: the real operator in a subprocess against the devcluster.

`Kube` is a tiny JSON-over-HTTP client (the devcluster needs no auth) that returns
plain dicts; `OperatorProcess` (devcluster's stack, as the demo and the benches use it)
runs `python -m prunejob_operator` with the cluster's KUBECONFIG and keeps its log;
`JobController` plays the Job controller and kubelet for tests that must not run a
worker (it writes Pod and Job status the way Kubernetes does).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from devcluster.stack import OperatorProcess as OperatorProcess  # re-exported for the tests

T = TypeVar("T")

PJ = "/apis/prunejob.io/v1alpha1/namespaces/{ns}/prunejobs"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
PODS = "/api/v1/namespaces/{ns}/pods"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
EVENTS = "/api/v1/namespaces/{ns}/events"


class ApiError(Exception):
    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"HTTP {code}: {body[:300]}")
        self.code = code


class Kube:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace")) from None

    def create(self, collection: str, body: dict[str, Any], ns: str = "ml") -> dict[str, Any]:
        return self.request("POST", collection.format(ns=ns), body)

    def get(self, collection: str, name: str, ns: str = "ml") -> dict[str, Any]:
        return self.request("GET", f"{collection.format(ns=ns)}/{name}")

    def items(self, collection: str, ns: str = "ml", selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        return self.request("GET", collection.format(ns=ns) + query)["items"]

    def patch(
        self, collection: str, name: str, body: dict[str, Any], ns: str = "ml", sub: str = ""
    ) -> dict[str, Any]:
        path = f"{collection.format(ns=ns)}/{name}" + (f"/{sub}" if sub else "")
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def delete(self, collection: str, name: str, ns: str = "ml") -> None:
        self.request("DELETE", f"{collection.format(ns=ns)}/{name}")

    def namespace(self, name: str) -> None:
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    def prunejob(self, name: str, ns: str = "ml") -> dict[str, Any]:
        return self.get(PJ, name, ns)

    def status(self, name: str, ns: str = "ml") -> dict[str, Any]:
        return self.prunejob(name, ns).get("status") or {}


def prunejob(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "prunejob.io/v1alpha1",
        "kind": "PruneJob",
        "metadata": {"name": name},
        "spec": {"model": "s3://models/in.keras", "output": f"s3://models/{name}.keras", **spec},
    }


def wait_for(check: Callable[[], T | None], timeout: float = 30, what: str = "") -> T:
    """Poll `check` until it returns something truthy (tests only; the operator never polls)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiError as err:
            last = err
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


class JobController:
    """Plays the Job controller + kubelet by writing status, for tests without a worker."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def make_pod(self, job: dict[str, Any], *, status: dict[str, Any]) -> dict[str, Any]:
        ns = job["metadata"]["namespace"]
        template = job["spec"]["template"]
        pod = self.kube.create(
            PODS,
            {
                "metadata": {
                    "generateName": job["metadata"]["name"] + "-",
                    "labels": {
                        **template["metadata"]["labels"],
                        "job-name": job["metadata"]["name"],
                    },
                    "annotations": template["metadata"].get("annotations", {}),
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job["metadata"]["name"],
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": template["spec"],
            },
            ns,
        )
        return self.kube.patch(PODS, pod["metadata"]["name"], {"status": status}, ns, "status")

    def succeed(self, job: dict[str, Any], message: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {"exitCode": 0, "reason": "Completed", "message": message, "finishedAt": now}
        self.make_pod(
            job,
            status={
                "phase": "Succeeded",
                "startTime": now,
                "containerStatuses": [{"name": "prune", "state": {"terminated": terminated}}],
            },
        )
        self.finish(job, "Complete", "", now)

    def run(self, job: dict[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.make_pod(
            job,
            status={
                "phase": "Running",
                "startTime": now,
                "containerStatuses": [{"name": "prune", "state": {"running": {"startedAt": now}}}],
            },
        )
        self.kube.patch(
            JOBS, job["metadata"]["name"], {"status": {"active": 1, "startTime": now}},
            job["metadata"]["namespace"], "status",
        )  # fmt: skip

    def finish(self, job: dict[str, Any], kind: str, reason: str, now: str | None = None) -> None:
        now = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        condition = {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": now}
        status: dict[str, Any] = {"conditions": [condition], "active": 0}
        if kind == "Complete":
            status.update(succeeded=1, completionTime=now)
        else:
            status.update(failed=1)
        self.kube.patch(
            JOBS,
            job["metadata"]["name"],
            {"status": status},
            job["metadata"]["namespace"],
            "status",
        )
