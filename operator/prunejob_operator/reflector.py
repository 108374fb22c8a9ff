"""A reflector: list a collection, then watch it from the list's resourceVersion, forever.

As client-go's reflector does: a consistent list (paged), handed whole to the sink
(which files it and sees what disappeared meanwhile), then a watch from the list's
resourceVersion, rewatched from the last event's (or bookmark's) resourceVersion when
the server ends the stream. A 410 Gone, as an HTTP answer or as an ERROR event in the
stream, means that resourceVersion is gone: list again. A 429 waits for its
Retry-After; 5xx, refused or dropped connections, silent streams and timeouts back off
exponentially with jitter (`Backoff`) and retry. It never gives up; what it knows about
its own health (synced, the last contact with the server, counts of what went wrong)
is there for the probe. Talks to the API only through `kubeapi.ListWatch`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from prunejob_operator.kubeapi import ApiError, Gone, ListWatch
from prunejob_operator.tasks import cancel_and_wait

LOG = logging.getLogger("prunejob_operator.reflector")

PAGE_SIZE = 500  # items per list page, as client-go's reflector asks
WATCH_TIMEOUT = (120, 240)  # seconds: each watch asks a random timeoutSeconds in this range
MAX_RETRY_AFTER = 60.0
WATCH_RESTARTS = ("gone", "throttled", "error", "dropped", "ended")


class Sink(Protocol):
    """Where a reflector's objects go (`informer.Informer`)."""

    def replace(self, items: list[dict[str, Any]], scope: str | None) -> None:
        """A full list: these are all the objects (of namespace `scope`; None: all)."""
        ...

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        ...


class Backoff:
    """Exponential delays with jitter: initial * factor**n, capped, plus up to
    `jitter` times that at random (client-go's reflector: 0.8 s doubling to 30 s)."""

    def __init__(
        self,
        initial: float = 0.8,
        cap: float = 30.0,
        factor: float = 2.0,
        jitter: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self._rng = rng or random.Random()
        self._failures = 0

    def next(self) -> float:
        base = min(self.cap, self.initial * self.factor**self._failures)
        self._failures += 1
        return base * (1 + self.jitter * self._rng.random())

    def reset(self) -> None:
        self._failures = 0


class Reflector:
    """Keeps `sink` in step with one collection (`where`, e.g. /api/v1/pods); see the
    module docstring. `scope`: the namespace `where` is limited to (None: all)."""

    def __init__(
        self,
        name: str,
        source: ListWatch,
        where: str,
        sink: Sink,
        *,
        label_selector: str = "",
        scope: str | None = None,
        page_size: int = PAGE_SIZE,
        watch_timeout: tuple[int, int] = WATCH_TIMEOUT,
        backoff: Backoff | None = None,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """`on_change()` hears of every list completed (the supervisor's cue)."""
        self.name = name
        self.source = source
        self.where = where
        self.sink = sink
        self.label_selector = label_selector
        self.scope = scope
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self._rng = rng or random.Random()
        self.backoff = backoff or Backoff(rng=self._rng)
        self._on_change = on_change
        self._clock = clock
        self._sleep = sleep
        self.resource_version = ""
        self.synced = False  # a list has been handed to the sink
        self.listed_since: float | None = None  # when the last completed list began
        self.last_contact = clock()  # the last list page, event or watch end (start: now)
        self.counts: Counter[str] = Counter()  # lists, events, and the watch restarts by reason
        self._relist = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Reflector {self.name} {self.where}>"

    # -- what the supervisor asks ---------------------------------------------------

    def relist(self) -> None:
        """List again now (ends the current watch), e.g. after taking the lead."""
        self._relist.set()

    def silence(self) -> float:
        """Seconds since this reflector last heard from the server what it asked for (a
        list page, a watch event, a watch that ran its course); errors do not count."""
        return self._clock() - self.last_contact

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled; never returns otherwise."""
        while True:
            await self._list()
            await self._watch_until_relist()

    def _contact(self) -> None:
        self.last_contact = self._clock()

    async def _list(self) -> None:
        while True:
            self._relist.clear()
            started = self._clock()
            try:
                items, version = await self._read_all()
            except ApiError as err:
                await self._pause(err, "list")
                continue
            self._contact()
            self.sink.replace(items, self.scope)
            self.resource_version = version
            self.synced = True
            self.listed_since = started
            self.counts["lists"] += 1
            self.backoff.reset()
            LOG.debug("%s: listed %d at resourceVersion %s", self.name, len(items), version)
            self._on_change()
            return

    async def _read_all(self) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self.source.list_page(
                self.where,
                label_selector=self.label_selector,
                limit=self.page_size,
                continue_token=token,
            )
            self._contact()
            items.extend(page.items)
            if not page.continue_token:
                return items, page.resource_version
            token = page.continue_token

    async def _watch_until_relist(self) -> None:
        while not self._relist.is_set():
            timeout = self._rng.randint(*self.watch_timeout)
            delivered = self.counts["events"]
            try:
                ended = await self._watch_once(timeout)
            except Gone as err:
                self.counts["gone"] += 1
                LOG.info("%s: %s; listing again", self.name, err)
                return
            except ApiError as err:
                if self.counts["events"] > delivered:
                    self.backoff.reset()  # it worked for a while: start the backoff afresh
                reason = (
                    "throttled" if err.code == 429 else "dropped" if err.code is None else "error"
                )
                self.counts[reason] += 1
                await self._pause(err, "watch")
                continue
            if ended:
                self.counts["ended"] += 1
                self.backoff.reset()

    async def _watch_once(self, timeout: int) -> bool:
        """One watch request; True when the server ended it, False on a relist request."""
        watching = asyncio.ensure_future(
            self.source.watch(
                self.where,
                resource_version=self.resource_version,
                label_selector=self.label_selector,
                timeout_seconds=timeout,
                on_event=self._on_event,
            )
        )
        relisting = asyncio.ensure_future(self._relist.wait())
        try:
            await asyncio.wait({watching, relisting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((watching, relisting))
        if watching.cancelled():
            return False
        watching.result()  # raises what the watch raised
        self._contact()
        return True

    def _on_event(self, event: dict[str, Any]) -> None:
        self._contact()
        event_type = event.get("type")
        obj = event.get("object") or {}
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if event_type == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            LOG.warning("%s: ignoring a watch event of type %r", self.name, event_type)
            return
        self.counts["events"] += 1
        self.sink.apply(event_type, obj)
        if version:
            self.resource_version = version

    async def _pause(self, err: ApiError, what: str) -> None:
        asked = err.retry_after
        delay = min(asked, MAX_RETRY_AFTER) if asked is not None else self.backoff.next()
        LOG.warning("%s: %s failed: %s; retrying in %.1fs", self.name, what, err, delay)
        await self._sleep(delay)
