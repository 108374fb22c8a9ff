"""The fake node's kubelet: bound pods' containers run as local processes, reported as by a kubelet.

The kubelet of the fake node: runs each bound pod's containers as local processes and
reports them as a kubelet does (phase, conditions, container states, the termination
message, logs for ``kubectl logs``).

Per pod: wait for the scheduler, bind to the node, "pull" images (``ImagePolicy`` says
which cannot be pulled), materialise volumes and env (retried until referenced objects
exist), start every container, wait, report how each ended. The container states and the
process environment are built by the pure functions below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcluster.clock import utc_now
from devcluster.runner.client import ApiClient, ApiRefused, Handler, ObjectGone
from devcluster.runner.conditions import set_condition
from devcluster.runner.controller import Controller, Tasks
from devcluster.runner.scheduler import Scheduler
from devcluster.runner.volumes import (
    MissingReference,
    container_env,
    container_mounts,
    materialise_volumes,
    rewrite_path,
)

log = logging.getLogger("devcluster.podrunner")

TERMINATION_MESSAGE_LIMIT = 4096  # the kubelet reads at most this much of the file
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # Kubernetes' default
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # FallbackToLogsOnError's log tail
START_ERROR_EXIT_CODE = 128
KILL_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class ImagePolicy:
    """Which images "cannot be pulled": the local programs run instead of image contents."""

    unpullable_prefixes: tuple[str, ...] = ("invalid.example/",)

    def unpullable(self, image: str) -> bool:
        return image.startswith(self.unpullable_prefixes)


# --------------------------------------------------------------------------- pure helpers


def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {"waiting": state}


def start_error(message: str, started: str, finished: str) -> dict[str, Any]:
    """The state of a container whose process could not be started."""
    return {
        "terminated": {
            "exitCode": START_ERROR_EXIT_CODE,
            "reason": "StartError",
            "message": message,
            "startedAt": started,
            "finishedAt": finished,
        }
    }


def terminated(
    code: int, started: str, finished: str, container_id: str, message: str
) -> dict[str, Any]:
    """The state of a container whose process exited with ``code`` (negative: a signal)."""
    state: dict[str, Any] = {
        "exitCode": code if code >= 0 else 128 - code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started,
        "finishedAt": finished,
        "containerID": container_id,
    }
    if code < 0:
        state["signal"] = -code
    if message:
        state["message"] = message
    return {"terminated": state}


def container_id(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    return f"devcluster://{pod['metadata']['uid']}/{container.get('name', '')}"


def container_statuses(
    pod: Mapping[str, Any], containers: Sequence[Mapping[str, Any]], states: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``status.containerStatuses`` for one state per container."""
    return [
        {
            "name": c.get("name", ""),
            "image": c.get("image", ""),
            "imageID": "",
            "ready": "running" in s,
            "started": "running" in s,
            "restartCount": 0,
            "state": s,
            "lastState": {},
            **({"containerID": container_id(pod, c)} if "waiting" not in s else {}),
        }
        for c, s in zip(containers, states, strict=True)
    ]


def resolve_executable(name: str, search_path: str) -> str | None:
    """The program to run: on ``search_path``; an absolute path missing here by base name."""
    if os.path.isabs(name):
        if os.access(name, os.X_OK):
            return name
        name = os.path.basename(name)
    return shutil.which(name, path=search_path)


def search_path() -> str:
    """PATH for containers: the directory of this Python (the venv's bin) first."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


def process_environment(
    env: Mapping[str, str],
    mounts: Mapping[str, Path],
    *,
    path: str,
    home: Path,
    tmp: Path,
    hostname: str,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """A minimal environment, the runner's extra variables, then the container's own
    (paths below a mount rewritten to the local directories)."""
    return {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp),
        "HOSTNAME": hostname,
        **extra,
        **{key: rewrite_path(value, mounts) for key, value in env.items()},
    }


def container_argv(container: Mapping[str, Any], mounts: Mapping[str, Path]) -> list[str]:
    """``command`` + ``args`` (no command: the args are the command), paths rewritten."""
    argv = [str(a) for a in (container.get("command") or [])] + [
        str(a) for a in (container.get("args") or [])
    ]
    return [rewrite_path(arg, mounts) for arg in argv]


def termination_message(
    container: Mapping[str, Any], message_file: Path, log_file: Path, code: int
) -> str:
    """What becomes ``state.terminated.message``: the file (capped), or with
    ``FallbackToLogsOnError`` and a failure, the log's tail."""
    message = ""
    if message_file.exists():
        with message_file.open("rb") as handle:
            message = handle.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
    if (
        not message
        and code != 0
        and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        and log_file.exists()
    ):
        lines = log_file.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
        message = "\n".join(lines)[-FALLBACK_LOG_BYTES:]
    return message


# --------------------------------------------------------------------------- the kubelet


@dataclass
class RunningPod:
    task: asyncio.Task[None] | None = None
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    deleting: bool = False  # the pod got a deletionTimestamp: stop, report, confirm
    final_reported: bool = False  # its terminal status is written


@dataclass
class Started:
    """One container after its start: the process, or why there is none."""

    process: asyncio.subprocess.Process | None
    error: str
    message_file: Path


def unknown_state() -> dict[str, Any]:
    """The state of a container a deleted pod never ran (or that could not be found)."""
    return {
        "terminated": {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
        }
    }


async def kill(
    processes: list[asyncio.subprocess.Process], grace: float = KILL_GRACE_SECONDS
) -> None:
    """SIGTERM each process group, SIGKILL what is still alive after the grace period."""
    alive = [p for p in processes if p.returncode is None]
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in alive:
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


class Kubelet(Controller):
    """Runs the node's pods; each pod is one task from binding to its final status."""

    def __init__(
        self,
        client: ApiClient,
        tasks: Tasks,
        scheduler: Scheduler,
        *,
        workdir: Path,
        log_dir: Path,
        extra_env: Mapping[str, str] | None = None,
        retry_interval: float = 1.0,
        images: ImagePolicy | None = None,
    ) -> None:
        super().__init__(client, tasks)
        self.scheduler = scheduler
        self.node_name = scheduler.node_name
        self.workdir = workdir
        self.log_dir = log_dir
        self.extra_env = dict(extra_env or {})
        self.retry_interval = retry_interval
        self.images = images or ImagePolicy()
        self._running: dict[str, RunningPod] = {}  # pod uid -> its task and processes
        self._confirming: set[str] = set()  # uids of deleted pods being confirmed

    def watches(self) -> Mapping[str, Handler]:
        return {"/api/v1/pods": self.on_pod}

    async def stop(self) -> list[asyncio.Task[Any]]:
        running = [p.task for p in self._running.values() if p.task is not None]
        for task in running:
            task.cancel()
        self._running.clear()
        return list(running)

    async def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        node = (pod.get("spec") or {}).get("nodeName")
        if event_type == "DELETED":
            running = self._running.pop(uid, None)
            if running is not None and running.task is not None:
                running.task.cancel()
            return
        if meta.get("deletionTimestamp"):
            if node == self.node_name:
                self._stop_deleted(pod)
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if uid in self._running or phase != "Pending" or node not in (None, "", self.node_name):
            return
        running = RunningPod()
        running.task = asyncio.create_task(self._run_pod(pod, running), name=f"pod {meta['name']}")
        self._running[uid] = running

    def _stop_deleted(self, pod: dict[str, Any]) -> None:
        """A bound pod was deleted: stop its containers within the grace period (capped at
        ``KILL_GRACE_SECONDS``), report how they ended, then confirm with a grace-0 DELETE."""
        uid = pod["metadata"]["uid"]
        running = self._running.get(uid)
        if running is None:
            if uid not in self._confirming:
                self._confirming.add(uid)
                self.tasks.spawn(self._confirm_deletion(pod, final_reported=False))
            return
        if running.deleting:
            return
        running.deleting = True
        grace = min(
            float(pod["metadata"].get("deletionGracePeriodSeconds") or 0), KILL_GRACE_SECONDS
        )
        if running.processes:
            self.tasks.spawn(kill(running.processes, grace))  # its lifecycle reports the ends
        elif running.task is not None:
            running.task.cancel()  # nothing started yet

    async def _confirm_deletion(self, pod: dict[str, Any], *, final_reported: bool) -> None:
        """Write a terminal status if the pod has none, then delete it for good (grace 0,
        this uid only): it goes unless finalizers still hold it."""
        meta = pod["metadata"]
        try:
            phase = (pod.get("status") or {}).get("phase")
            if not final_reported and phase not in ("Succeeded", "Failed"):
                containers = (pod.get("spec") or {}).get("containers") or []
                states = [unknown_state() for _ in containers]
                status = {
                    "phase": "Failed",
                    "containerStatuses": container_statuses(pod, containers, states),
                }
                await self._report(pod, status)
            options = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
            await self.client.delete("Pod", meta["namespace"], meta["name"], options)
        except (ObjectGone, ApiRefused):
            pass  # gone already, or another pod of that name now
        finally:
            self._confirming.discard(meta["uid"])

    def log_file(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> Path:
        meta = pod["metadata"]
        return self.log_dir / meta["namespace"] / meta["name"] / f"{container.get('name', '')}.log"

    async def _run_pod(self, pod: dict[str, Any], running: RunningPod) -> None:
        uid = pod["metadata"]["uid"]
        workdir = self.workdir / "pods" / uid
        try:
            await self._lifecycle(pod, workdir, running)
        except (asyncio.CancelledError, ObjectGone):
            pass
        except Exception:
            log.exception("pod %s: the pod runner failed", pod["metadata"]["name"])
        finally:
            if self._running.get(uid) is running:
                del self._running[uid]
            await kill(running.processes)
            self.scheduler.release(uid)
            shutil.rmtree(workdir, ignore_errors=True)
            if running.deleting:
                self._confirming.add(uid)
                await self._confirm_deletion(pod, final_reported=running.final_reported)

    async def _report(self, pod: Mapping[str, Any], status: dict[str, Any]) -> None:
        await self.client.patch_status("Pod", pod, status)

    async def _warn(self, pod: Mapping[str, Any], reason: str, message: str) -> None:
        await self.client.event(pod, "Pod", reason, message, warning=True)

    async def _lifecycle(self, pod: dict[str, Any], workdir: Path, running: RunningPod) -> None:
        meta = pod["metadata"]
        containers: list[dict[str, Any]] = (pod.get("spec") or {}).get("containers") or []
        status: dict[str, Any] = {"phase": "Pending", "qosClass": "BestEffort", "conditions": []}

        async def unschedulable(status: dict[str, Any], reason: str) -> None:
            await self._report(pod, status)
            await self._warn(pod, "FailedScheduling", reason)

        await self.scheduler.admit(pod, status, unschedulable)
        await self.client.patch("Pod", pod, {"spec": {"nodeName": self.node_name}})
        status.update(hostIP="127.0.0.1", podIP="127.0.0.1", startTime=utc_now())
        status["conditions"] = set_condition(status["conditions"], "Initialized", "True")
        await self.client.event(
            pod,
            "Pod",
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node_name}",
        )
        await self._pull_images(pod, containers, status)
        mounts_by_volume, environments = await self._prepare(pod, containers, status, workdir)

        # Start all containers.
        started_at = utc_now()
        started: list[Started] = []
        for container, env in zip(containers, environments, strict=True):
            one = await self._start_container(pod, container, env, mounts_by_volume, workdir)
            started.append(one)
            if one.process is not None:
                running.processes.append(one.process)  # killed on every exit path from here
        if running.processes:
            states = [
                {"running": {"startedAt": started_at}}
                if s.process is not None
                else start_error(s.error, started_at, started_at)
                for s in started
            ]
            status["phase"] = "Running"
            for kind in ("ContainersReady", "Ready"):
                status["conditions"] = set_condition(status["conditions"], kind, "True")
            status["containerStatuses"] = container_statuses(pod, containers, states)
            await self._report(pod, status)
            await self.client.event(pod, "Pod", "Started", "Started container")

        # Wait for every process and report how each ended.
        finals: list[dict[str, Any]] = []
        for one, container in zip(started, containers, strict=True):
            if one.process is None:
                finals.append(start_error(one.error, started_at, utc_now()))
                continue
            code = await one.process.wait()
            message = termination_message(
                container, one.message_file, self.log_file(pod, container), code
            )
            finals.append(
                terminated(code, started_at, utc_now(), container_id(pod, container), message)
            )
        succeeded = all(s["terminated"]["exitCode"] == 0 for s in finals)
        status["phase"] = "Succeeded" if succeeded else "Failed"
        for kind in ("ContainersReady", "Ready"):
            status["conditions"] = set_condition(
                status["conditions"], kind, "False", "PodCompleted"
            )
        status["containerStatuses"] = container_statuses(pod, containers, finals)
        await self._report(pod, status)
        running.final_reported = True

    async def _pull_images(
        self, pod: dict[str, Any], containers: list[dict[str, Any]], status: dict[str, Any]
    ) -> None:
        """Return if every image "pulls"; otherwise report ErrImagePull, then
        ImagePullBackOff, and wait until the pod is deleted."""
        bad = [c for c in containers if self.images.unpullable(str(c.get("image", "")))]
        if not bad:
            return
        image = bad[0]["image"]
        pull_error = f'Failed to pull image "{image}": {image.split("/")[0]}: no such host'
        steps = [  # (waiting reason, message, Event reason)
            ("ErrImagePull", pull_error, "Failed"),
            ("ImagePullBackOff", f'Back-off pulling image "{image}"', "BackOff"),
        ]
        for index, (reason, message, event) in enumerate(steps):
            if index:
                await asyncio.sleep(self.retry_interval)
            states = [
                waiting(reason, message) if c in bad else waiting("ContainerCreating")
                for c in containers
            ]
            status["containerStatuses"] = container_statuses(pod, containers, states)
            await self._report(pod, status)
            await self._warn(pod, event, message)
        await asyncio.Event().wait()  # stays until the pod is deleted

    async def _prepare(
        self,
        pod: dict[str, Any],
        containers: list[dict[str, Any]],
        status: dict[str, Any],
        workdir: Path,
    ) -> tuple[dict[str, Path], list[dict[str, str]]]:
        """Volumes, then each container's env: retried until the referenced objects exist."""
        reported: str | None = None
        while True:
            try:
                mounts_by_volume = await materialise_volumes(self.client.read, pod, workdir)
                environments = [
                    await container_env(self.client.read, pod, c, self.node_name)
                    for c in containers
                ]
                return mounts_by_volume, environments
            except MissingReference as missing:
                if missing.message != reported:
                    reported = missing.message
                    if missing.volume is not None:
                        states = [waiting("ContainerCreating") for _ in containers]
                        event = (
                            f'MountVolume.SetUp failed for volume "{missing.volume}" : '
                            f"{missing.message}"
                        )
                        reason = "FailedMount"
                    else:
                        states = [
                            waiting("CreateContainerConfigError", missing.message)
                            for _ in containers
                        ]
                        event = f"Error: {missing.message}"
                        reason = "Failed"
                    status["containerStatuses"] = container_statuses(pod, containers, states)
                    await self._report(pod, status)
                    await self._warn(pod, reason, event)
                await asyncio.sleep(self.retry_interval)

    async def _start_container(
        self,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        env: dict[str, str],
        mounts_by_volume: Mapping[str, Path],
        workdir: Path,
    ) -> Started:
        mounts = container_mounts(container, mounts_by_volume)
        message_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        message_file = workdir / "termination" / container.get("name", "")
        message_file.parent.mkdir(parents=True, exist_ok=True)
        mounts[message_path] = message_file

        argv = container_argv(container, mounts)
        home, tmp = workdir / "home", workdir / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        path = search_path()
        process_env = process_environment(
            env,
            mounts,
            path=path,
            home=home,
            tmp=tmp,
            hostname=pod["metadata"]["name"],
            extra=self.extra_env,
        )
        if not argv:
            return Started(
                None, "devcluster: the container has no command or args to run", message_file
            )
        executable = resolve_executable(argv[0], path)
        if executable is None:
            error = f'exec: "{argv[0]}": executable file not found in $PATH'
            return Started(None, error, message_file)
        working_dir = container.get("workingDir")
        cwd = Path(rewrite_path(working_dir, mounts)) if working_dir else home
        if not cwd.is_dir():
            cwd = home
        log_file = self.log_file(pod, container)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                executable,
                *argv[1:],
                env=process_env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, so we can kill its children
            )
        return Started(process, "", message_file)
