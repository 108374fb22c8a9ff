"""`PodRunner`: the fake node's controllers and kubelet together on one API client.

The pod runner: the fake node's controllers (Job controller, TTL-after-finished
controller, scheduler, kubelet) on one API client, watching Pods and Jobs over HTTP as real
controllers do.

Ignored pod fields (documented, logged at start): image contents (the local machine's
programs run instead), securityContext, affinity, tolerations, priority, resources other
than the ``nvidia.com/gpu`` count, probes, lifecycle hooks, ports, service accounts,
imagePullSecrets, container restarts (``restartPolicy`` is treated as Never), volume types
other than secret/configMap/emptyDir (they become empty directories), readOnly mounts.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devcluster.loop import BackgroundLoop
from devcluster.runner.client import ApiClient, Handler
from devcluster.runner.controller import Controller, Tasks
from devcluster.runner.jobs import JobController
from devcluster.runner.kubelet import ImagePolicy, Kubelet
from devcluster.runner.scheduler import GPU, NODE_NAME, Scheduler
from devcluster.runner.ttl import TtlController

log = logging.getLogger("devcluster.podrunner")

IGNORED_FIELDS = (
    "image contents, securityContext, affinity, tolerations, priority, resources except "
    f"{GPU}, probes, lifecycle, ports, serviceAccountName, imagePullSecrets, container "
    "restarts (restartPolicy=Never), volume types other than secret/configMap/emptyDir"
)
# What is watched, in this order: a Job's pods are known before the Job is reconciled
# (no duplicate pods after a restart).
WATCH_ORDER = ("/api/v1/pods", "/apis/batch/v1/jobs")


class PodRunner:
    """The node's controllers together. ``start()``/``stop()`` inside a loop, or the
    thread helpers ``start_in_thread()``/``stop_thread()``."""

    def __init__(
        self,
        url: str,
        *,
        gpus: int = 8,
        node_labels: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        node_name: str = NODE_NAME,
        retry_interval: float = 1.0,
        images: ImagePolicy | None = None,
    ) -> None:
        self._own_workdir = Path(tempfile.mkdtemp(prefix="devcluster-pods-"))
        self.log_dir = log_dir or self._own_workdir / "logs"
        self.client = ApiClient(url, retry_interval=retry_interval)
        self.scheduler = Scheduler(
            node_name=node_name, node_labels=node_labels, gpus=gpus, retry_interval=retry_interval
        )
        self._tasks = Tasks()
        self.jobs = JobController(self.client, self._tasks)
        self.kubelet = Kubelet(
            self.client,
            self._tasks,
            self.scheduler,
            workdir=self._own_workdir,
            log_dir=self.log_dir,
            extra_env=extra_env,
            retry_interval=retry_interval,
            images=images,
        )
        self.ttl = TtlController(self.client, self._tasks)
        # Each path's events go to its controllers in this order (job state before kubelet).
        self.controllers: tuple[Controller, ...] = (self.jobs, self.kubelet, self.ttl)
        self._loop_thread: BackgroundLoop | None = None

    @property
    def node_name(self) -> str:
        return self.scheduler.node_name

    def _handler(self, path: str) -> Handler:
        handlers = [c.watches()[path] for c in self.controllers if path in c.watches()]

        async def handle(event_type: str, obj: dict[str, Any]) -> None:
            for handler in handlers:
                await handler(event_type, obj)

        return handle

    async def start(self) -> None:
        log.info(
            "devcluster pod runner on node %s (%d GPUs); ignored pod fields: %s",
            self.scheduler.node_name,
            self.scheduler.gpus,
            IGNORED_FIELDS,
        )
        await self.client.open()
        await self.client.request("POST", "/api/v1/nodes", self.scheduler.node())
        for path in WATCH_ORDER:
            ready = asyncio.Event()
            self._tasks.spawn(self.client.watch(path, self._handler(path), ready))
            await ready.wait()
        self.jobs.synced()

    async def stop(self) -> None:
        pending = self._tasks.cancel()
        for controller in self.controllers:
            pending += await controller.stop()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.client.close()
        shutil.rmtree(self._own_workdir, ignore_errors=True)

    def start_in_thread(self) -> None:
        self._loop_thread = BackgroundLoop("devcluster-podrunner")
        self._loop_thread.call(self.start)

    def stop_thread(self) -> None:
        if self._loop_thread is None:
            return
        try:
            self._loop_thread.call(self.stop, timeout=30)
        finally:
            self._loop_thread.close()
            self._loop_thread = None
