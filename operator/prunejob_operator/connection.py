"""Where the API server is and how to authenticate, from the `kubernetes` package.

The in-cluster service account first, then the kubeconfig (`KUBECONFIG` or
~/.kube/config) — the order kopf's own login uses, so both talk to the same
cluster. The `kubernetes` package does the reading (contexts, client certificates,
exec plugins, auth providers); this module turns its `Configuration` into what an
aiohttp session needs: the server URL, an SSL context and the Authorization header.
Tokens that rotate (projected service-account tokens, exec plugins) are refreshed
through the package's `refresh_api_key_hook`, in a thread, in the background at most
every `REFRESH_SECONDS`, and at once after a 401.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("prunejob_operator.connection")
REFRESH_SECONDS = 10.0


class Connection:
    """One API server and its credentials."""

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        proxy: str | None = None,
        authorization: Callable[[], str | None] = lambda: None,
        rotates: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`authorization()` returns the header value (it may block: it can run an exec
        plugin); `rotates`: it can change over time, so ask it again now and then."""
        self.server = server.rstrip("/")
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.proxy = proxy
        self._authorization = authorization
        self._rotates = rotates
        self._clock = clock
        self._header: str | None = None
        self._fetched_at: float | None = None
        self._fetching: asyncio.Task[None] | None = None

    async def authorization(self, *, force: bool = False) -> str | None:
        """The Authorization header value (None: no token, e.g. client certificates).

        The first call and `force` (after a 401) wait for the credentials; a rotating
        token that is merely due is re-read in the background while the current one
        is used. Concurrent callers share one read."""
        if force or self._fetched_at is None:
            await asyncio.shield(self._fetch())
        elif self._due() and (self._fetching is None or self._fetching.done()):
            self._fetch().add_done_callback(_log_failure)
        return self._header

    def _due(self) -> bool:
        """A rotating token read more than REFRESH_SECONDS ago."""
        last = self._fetched_at
        return self._rotates and last is not None and self._clock() - last > REFRESH_SECONDS

    def _fetch(self) -> asyncio.Task[None]:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.get_running_loop().create_task(self._read())
        return self._fetching

    async def _read(self) -> None:
        try:
            header = await asyncio.to_thread(self._authorization)
        except Exception:
            if self._fetched_at is not None:  # keep the current token; try again later
                self._fetched_at = self._clock()
            raise
        self._header, self._fetched_at = header, self._clock()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        LOG.warning("cannot refresh the Kubernetes credentials: %s", task.exception())


def _ssl_context(configuration: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def from_configuration(configuration: Any) -> Connection:
    """A `Connection` from a loaded `kubernetes.client.Configuration`."""
    server = str(configuration.host)
    return Connection(
        server,
        ssl_context=_ssl_context(configuration) if server.startswith("https:") else None,
        server_hostname=getattr(configuration, "tls_server_name", None) or None,
        proxy=configuration.proxy or None,
        authorization=lambda: configuration.get_api_key_with_prefix("BearerToken"),
        rotates=configuration.refresh_api_key_hook is not None,
    )


def load() -> Connection:
    """In-cluster config, else the kubeconfig; raises what the `kubernetes` package raises."""
    # Lazy: the `kubernetes` package imports its thousand generated model modules.
    import kubernetes

    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return from_configuration(configuration)
