"""Start and stop the local development cluster: API server, kubeconfig, pod runner.

The API server runs in a background thread with its own event loop (cheapest on a small
machine: no extra interpreter), or in the foreground with ``python -m devcluster serve``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import aiohttp.web

from devcluster.apiserver.server import ApiServer, new_api_server, start_http, stop_http
from devcluster.kubeconfig import api_client, write_kubeconfig
from devcluster.loop import BackgroundLoop
from devcluster.runner.podrunner import PodRunner

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger("devcluster")
T = TypeVar("T")


class LocalCluster:
    """The local development cluster as a context manager.

    >>> with LocalCluster(crd_paths=["crds/"], run_pods=False) as cluster:
    ...     client = cluster.api_client()

    ``url``, ``kubeconfig_path`` and ``api_client()`` are valid inside the ``with`` block;
    ``env()`` gives the environment for a child process (``KUBECONFIG``) such as
    ``prunejob operator``.
    """

    def __init__(
        self,
        crd_paths: Iterable[str | Path] = (),
        *,
        gpus: int = 8,
        run_pods: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        kubeconfig_path: str | Path | None = None,
        node_labels: Mapping[str, str] | None = None,
        pod_env: Mapping[str, str] | None = None,
        pod_retry_interval: float = 1.0,
    ) -> None:
        self._crd_paths = list(crd_paths)
        self._gpus = gpus
        self._run_pods = run_pods
        self._host = host
        self._port = port
        self._requested_kubeconfig = Path(kubeconfig_path) if kubeconfig_path else None
        self._node_labels = dict(node_labels or {})
        self._pod_env = dict(pod_env or {})
        self._pod_retry_interval = pod_retry_interval
        self._workdir: Path | None = None
        self._loop: BackgroundLoop | None = None
        self._runner: aiohttp.web.BaseRunner | None = None
        self._pod_runner: PodRunner | None = None
        self.server: ApiServer | None = None
        self.url = ""
        self.kubeconfig_path = Path()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="devcluster-"))
        try:
            self._loop = BackgroundLoop("devcluster-apiserver")
            log_dir = self._workdir / "logs"
            self.server = self._loop.call(lambda: self._async_new_server(log_dir))
            server = self.server
            self._runner, self.url = self._loop.call(
                lambda: start_http(server, self._host, self._port)
            )
            self.kubeconfig_path = write_kubeconfig(
                self._requested_kubeconfig or self._workdir / "kubeconfig", self.url
            )
            if self._run_pods:
                self._pod_runner = PodRunner(
                    self.url,
                    gpus=self._gpus,
                    node_labels=self._node_labels,
                    log_dir=log_dir,
                    extra_env=self._pod_env,
                    retry_interval=self._pod_retry_interval,
                )
                self._pod_runner.start_in_thread()
        except BaseException:
            self.stop()
            raise

    async def _async_new_server(self, log_dir: Path) -> ApiServer:
        return new_api_server(self._crd_paths, log_dir=log_dir)

    def stop(self) -> None:
        if self._pod_runner is not None:
            self._pod_runner.stop_thread()
            self._pod_runner = None
        if self._loop is not None:
            if self._runner is not None and self.server is not None:
                server, runner = self.server, self._runner
                try:
                    self._loop.call(lambda: stop_http(server, runner), timeout=15)
                except Exception:  # still tear everything else down
                    log.exception("devcluster: stopping the API server failed")
                self._runner = None
            self._loop.close()
            self._loop = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def api_client(self) -> kubernetes.client.ApiClient:
        """A configured ``kubernetes`` client for this cluster (not the process-wide default)."""
        return api_client(self.kubeconfig_path)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        return env

    def call_in_server(self, function: Callable[[ApiServer], T]) -> T:
        """Run ``function(server)`` inside the server's loop (thread-safe inspection)."""
        assert self._loop is not None and self.server is not None, "cluster is not running"
        server = self.server

        async def run() -> T:
            return function(server)

        return self._loop.call(run)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"LocalCluster(url={self.url!r}, kubeconfig={str(self.kubeconfig_path)!r})"
