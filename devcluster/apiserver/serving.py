"""The API server on TCP: a faultable main listener, an exempt one, and simulated restarts.

The API server on TCP: the main listener (where injected faults and restarts happen) and
an exempt listener on its own port (never faulted, up during restarts: for a test's own
bookkeeping and the cluster's own components).

A restart is what a crashed or upgraded API server looks like to clients: every open
connection on the main port is cut (RST), every new one is reset at once for the
downtime, then the same server (the same store: state is kept, as etcd keeps it) answers
on the same port again with its watch history compacted to "now" (a fresh watch cache:
older resourceVersions get 410 Gone). The listening socket stays open throughout: closing
and reopening it can leave connections queued at that moment unanswered instead of reset.
``restart_every`` in the fault config schedules restarts (seeded).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp.web

from devcluster.apiserver.server import ApiServer, listen

log = logging.getLogger("devcluster.apiserver")
# How long a stop waits for requests in flight: short, since watches are ended first and
# everything else is answered at once.
SHUTDOWN_TIMEOUT = 0.25

Handler = Callable[[aiohttp.web.BaseRequest], Awaitable[aiohttp.web.StreamResponse]]


class _TrackingServer(aiohttp.web.Server):
    """An aiohttp server that knows its open transports and can be "down": then every
    connection is reset as soon as it is made."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(handler, handler_cancellation=True)
        self.transports: set[asyncio.Transport] = set()
        self.down = False

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.transports.add(transport)
        if self.down:
            transport.abort()

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        transport = handler.transport
        super().connection_lost(handler, exc)
        self.transports.discard(transport)

    def cut_connections(self) -> None:
        for transport in list(self.transports):
            transport.abort()


class Listener:
    """One aiohttp server on one port; ``crash``/``recover`` model a restart on it."""

    def __init__(self, handler: Handler, host: str, port: int) -> None:
        self.web_server: _TrackingServer | None = None
        self.handler = handler
        self.host = host
        self.port = port
        self.runner: aiohttp.web.ServerRunner | None = None

    async def start(self) -> str:
        self.web_server = _TrackingServer(self.handler)
        runner = await listen(
            self.web_server,
            self.host,
            self.port,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            reuse_address=True,
        )
        self.runner = runner
        self.host, self.port = runner.addresses[0][:2]
        return f"http://{self.host}:{self.port}"

    def crash(self) -> None:
        """Cut every connection and reset new ones until ``recover``."""
        assert self.web_server is not None
        self.web_server.down = True
        self.web_server.cut_connections()

    def recover(self) -> None:
        assert self.web_server is not None
        self.web_server.cut_connections()  # any that slipped in while going down
        self.web_server.down = False

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
        if self.web_server is not None:
            self.web_server.cut_connections()


class Serving:
    """An ``ApiServer`` on its main and exempt listeners, with scheduled restarts."""

    def __init__(self, server: ApiServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self.main = Listener(server, host, port)
        self.exempt = Listener(server.serve_exempt, host, 0)
        self.url = ""
        self.exempt_url = ""
        self._restarts: asyncio.Task[None] | None = None
        self._restarting = asyncio.Lock()

    async def start(self) -> str:
        self.url = await self.main.start()
        try:
            self.exempt_url = await self.exempt.start()
        except BaseException:
            await self.main.stop()
            raise
        self._restarts = asyncio.create_task(self._restart_loop(), name="devcluster restarts")
        return self.url

    async def restart(self, downtime: float = 1.0) -> None:
        """Crash and restart the main listener: connections cut, new ones reset for
        ``downtime`` seconds, the watch history compacted (unless the config says not)."""
        async with self._restarting:
            log.info("devcluster: API server restart (down %.1fs)", downtime)
            self.main.crash()
            faults = self.server.faults
            if faults is not None:
                faults.restarts += 1
            try:
                await asyncio.sleep(downtime)
            finally:
                if faults is None or faults.config.compact_on_restart:
                    self.server.compact_all()
                self.main.recover()

    async def _restart_loop(self) -> None:
        rng = random.Random()
        seeded_with: int | None = None
        while True:
            faults = self.server.faults
            every = None if faults is None else faults.config.restart_every
            if faults is None or every is None:
                await asyncio.sleep(0.5)  # wait for restarts to be configured
                continue
            if seeded_with != faults.config.seed:
                seeded_with = faults.config.seed
                rng.seed(seeded_with * 7919 + 1)  # its own stream, apart from requests'
            await asyncio.sleep(rng.uniform(0.5, 1.5) * every)
            current = self.server.faults
            if current is not None and current.config.restart_every is not None:
                await self.restart(current.config.restart_downtime)

    async def stop(self) -> None:
        if self._restarts is not None:
            self._restarts.cancel()
            # wait() never raises what it raised, only a cancel of this stop itself
            # (an `await` under suppress(CancelledError) would swallow that one too).
            await asyncio.wait([self._restarts])
            self._restarts = None
        async with self._restarting:
            self.server.stop_watches()
            await self.main.stop()
            await self.exempt.stop()
