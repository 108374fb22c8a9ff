"""Integration-test helpers: the real operator in a subprocess against the devcluster.

`Kube` is a tiny JSON-over-HTTP client (the devcluster needs no auth) that returns
plain dicts; `OperatorProcess` runs the operator as the shipped Deployment does
(`deploy/base/deployment.yaml`: the image's `prunejob` entrypoint with the container's
args and env, POD_NAME/POD_NAMESPACE as the downward API sets them, a kubeconfig
instead of the in-cluster service account, free ports instead of the pod's own 8080
and 9090) with the cluster's KUBECONFIG, and keeps its log; `Deployment` keeps N such
replicas running, restarting a replica's container when it exits, as the kubelet
does; `JobController` plays the Job controller and kubelet for tests that must not run
a worker (it writes Pod and Job status the way Kubernetes does).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from devcluster import stack
from devcluster.stack import free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "deploy" / "base" / "deployment.yaml"
ENTRYPOINT = (sys.executable, "-m", "prunejob")  # the operator image's ENTRYPOINT ["prunejob"]
OPERATOR_NAMESPACE = "prunejob-system"  # deploy/kustomization.yaml's namespace
LEASE_NAME = "prunejob-operator"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"

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


@dataclass(frozen=True)
class DeploymentSpec:
    """What deploy/base/deployment.yaml says the operator container runs with."""

    replicas: int
    args: tuple[str, ...]
    env: Mapping[str, str]  # plain `value` entries
    field_env: Mapping[str, str]  # env name -> downward API fieldPath

    @classmethod
    def load(cls, path: Path = DEPLOYMENT) -> DeploymentSpec:
        return cls.from_document(yaml.safe_load(path.read_text()))

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> DeploymentSpec:
        """From a Deployment object: the file, or the one an API server stores."""
        (container,) = document["spec"]["template"]["spec"]["containers"]
        env: dict[str, str] = {}
        field_env: dict[str, str] = {}
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                field_env[item["name"]] = source["fieldRef"]["fieldPath"]
            elif "value" in item:
                env[item["name"]] = str(item["value"])
            else:
                raise AssertionError(f"the harness cannot supply env {item!r}")
        return cls(document["spec"]["replicas"], tuple(container["args"]), env, field_env)

    def container_env(self, pod_name: str, namespace: str) -> dict[str, str]:
        """The env vars, with the downward API's fields filled in as the kubelet would."""
        fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
        resolved = {name: fields[path] for name, path in self.field_env.items()}
        return {**self.env, **resolved}

    def container_args(
        self, liveness_port: int, metrics_port: int, extra: Sequence[str]
    ) -> list[str]:
        """The args with this machine's free ports for the pod's own ones, then `extra`
        (argparse: later flags win; a namespace list replaces --all-namespaces)."""
        args: list[str] = []
        scoped = any(
            arg in ("-n", "--namespace") or arg.startswith("--namespace=") for arg in extra
        )
        for arg in self.args:
            if arg.startswith("--liveness="):
                arg = f"--liveness=127.0.0.1:{liveness_port}"
            elif arg.startswith("--metrics-port="):
                arg = f"--metrics-port={metrics_port}"
            elif arg in ("-A", "--all-namespaces") and scoped:
                continue
            args.append(arg)
        return [*args, *extra]


def server_of(kubeconfig: Path) -> str:
    document = yaml.safe_load(kubeconfig.read_text())
    return str(document["clusters"][0]["cluster"]["server"])


class OperatorProcess(stack.OperatorProcess):
    """One replica of the shipped Deployment (see the module docstring): `start` after
    `kill` is its container restarting in the same pod (same POD_NAME)."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *args: str,
        pod_name: str | None = None,
        namespace: str = OPERATOR_NAMESPACE,
        env: Mapping[str, str] | None = None,
        deployment: DeploymentSpec | None = None,
        setup_url: str | None = None,
    ) -> None:
        """`setup_url`: where the harness itself creates the operator's namespace (default:
        the kubeconfig's server)."""
        spec = deployment or DeploymentSpec.load()
        self.setup_url = setup_url
        self.pod_name = pod_name or f"prunejob-operator-{secrets.token_hex(3)}"
        self.namespace = namespace
        self.liveness_port, self.metrics_port = free_port(), free_port()
        container_env = {
            **os.environ,
            **spec.container_env(self.pod_name, namespace),
            **(env or {}),
        }
        super().__init__(
            kubeconfig,
            log_path,
            *spec.container_args(self.liveness_port, self.metrics_port, args),
            command=ENTRYPOINT,
            env=container_env,
        )

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    def start(self) -> OperatorProcess:
        # `kubectl apply -k deploy/` creates the operator's namespace (its Lease lives there).
        kube = Kube(self.setup_url or server_of(self.kubeconfig))
        try:
            kube.namespace(self.namespace)
        except ApiError as err:
            if err.code != 409:
                raise
        super().start()
        return self

    def health(self) -> tuple[int, dict[str, Any]]:
        """The liveness endpoint's status code and JSON (0, {} when nothing answers)."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=5) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, {}
        except (urllib.error.URLError, OSError, ValueError):
            return 0, {}


class Deployment:
    """N replicas of the operator, each restarted after `restart_delay` seconds when its
    process exits (as the kubelet restarts a container; `replace` is a new pod)."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        replicas: int | None = None,
        *args: str,
        restart_delay: float = 1.0,
        setup_url: str | None = None,
        spec: DeploymentSpec | None = None,
    ) -> None:
        """`setup_url`: where the harness creates the operator's namespace (see
        `OperatorProcess`); `spec`: what the replicas run (default: deploy/'s file)."""
        self.kubeconfig = kubeconfig
        self.setup_url = setup_url
        self.workdir = workdir
        self.args = args
        self.restart_delay = restart_delay
        self.spec = spec or DeploymentSpec.load()
        count = self.spec.replicas if replicas is None else replicas
        self.replicas = [self._new_replica(i) for i in range(count)]
        self.restarts = 0  # containers restarted after exiting by themselves or a kill
        self.exit_codes: list[int] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._keep_running, daemon=True)

    def _new_replica(self, index: int) -> OperatorProcess:
        name = f"prunejob-operator-{secrets.token_hex(3)}-{index}"
        return OperatorProcess(
            self.kubeconfig, self.workdir / f"{name}.log", *self.args, pod_name=name,
            deployment=self.spec, setup_url=self.setup_url,
        )  # fmt: skip

    def __enter__(self) -> Deployment:
        for replica in self.replicas:
            replica.start()
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._watcher.join(timeout=10)
        with self._lock:
            for replica in self.replicas:
                replica.stop()

    def _keep_running(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                for replica in self.replicas:
                    code = replica.exited()
                    if code is None:
                        continue
                    self.exit_codes.append(code)
                    replica.process = None
                    time.sleep(self.restart_delay)
                    replica.start()
                    self.restarts += 1

    def kill(self, pod_name: str) -> bool:
        """SIGKILL the replica's container; it is restarted (same pod) like any exit.
        False when it was not running."""
        return self._signal(pod_name, signal.SIGKILL)

    def terminate(self, pod_name: str) -> bool:
        """SIGTERM (what the kubelet sends first); it is restarted (same pod) once it exits."""
        return self._signal(pod_name, signal.SIGTERM)

    def _signal(self, pod_name: str, signum: int) -> bool:
        """False when the container is not running (it is being restarted)."""
        with self._lock:
            replica = self.replica(pod_name)
            if replica.process is None or replica.process.poll() is not None:
                return False
            replica.process.send_signal(signum)  # the watcher sees the exit, restarts it
            return True

    def replace(self, pod_name: str) -> OperatorProcess:
        """The pod is lost (SIGKILL, never restarted) and a new pod takes its place."""
        with self._lock:
            index = next(i for i, r in enumerate(self.replicas) if r.pod_name == pod_name)
            self.replicas[index].kill()
            fresh = self._new_replica(len(self.replicas) + index)
            self.replicas[index] = fresh
            fresh.start()
            return fresh

    def replica(self, pod_name: str) -> OperatorProcess:
        return next(r for r in self.replicas if r.pod_name == pod_name)

    def logs(self) -> str:
        return "\n".join(f"--- {r.pod_name}\n{r.log()}" for r in self.replicas)


def lease(
    kube: Kube, namespace: str = OPERATOR_NAMESPACE, name: str = LEASE_NAME
) -> dict[str, Any]:
    """The leader Lease's spec ({} while there is none)."""
    try:
        return kube.get(LEASES, name, namespace).get("spec") or {}
    except ApiError as err:
        if err.code == 404:
            return {}
        raise


def pod_of(holder: str) -> str:
    """The pod name in a Lease holderIdentity (`<pod>_<random>`)."""
    return holder.rsplit("_", 1)[0]


class JobController:
    """Plays the Job controller + kubelet by writing status, for tests without a worker
    (pods from the Job's template, finalizers included, as Kubernetes' Job controller
    makes them)."""

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
                    "finalizers": template["metadata"].get("finalizers", []),
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job["metadata"]["name"],
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
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
        self.terminate(job, terminated, "Complete", "", now)

    def fail(self, job: dict[str, Any], message: str, exit_code: int) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {"exitCode": exit_code, "reason": "Error", "message": message}
        self.terminate(job, terminated, "Failed", "PodFailurePolicy", now)

    def terminate(
        self, job: dict[str, Any], terminated: dict[str, Any], kind: str, reason: str, now: str
    ) -> None:
        """A pod whose container ended as `terminated`, then the Job's `kind` condition."""
        self.make_pod(
            job,
            status={
                "phase": "Succeeded" if kind == "Complete" else "Failed",
                "startTime": now,
                "containerStatuses": [{"name": "prune", "state": {"terminated": terminated}}],
            },
        )
        self.finish(job, kind, reason, now)

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
