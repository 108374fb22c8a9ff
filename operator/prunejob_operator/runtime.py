"""The operator's moving parts wired together: client, leader elector, informers, reconciler.

Every replica runs the reflectors (PruneJobs, managed Jobs and Pods by label selector,
PriorityClasses when the built-in queue is on), so a standby's caches are warm. The
reconciler is fed only while this replica leads and its caches are fresh: after taking
the Lease every reflector lists once more (a list begun after the acquisition, so the
cache holds everything the previous leader wrote), then every PruneJob is reconciled,
and from then on every change triggers its PruneJob's reconcile (a relist: all of
them). Only the leader writes: the client's fence refuses every write the moment the
elector stops leading. A lost lead, a reflector or the elector ending, or a reflector
that has not heard from the API server for `watch_stale_seconds` (300) make the process stop
with exit code 1 (`Outcome.fail`); the probe reports the same as unhealthy meanwhile.
A graceful stop posts the queued Events and releases the Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from prunejob_operator import cache, leader, manifests, models
from prunejob_operator.cache import Index, IndexedCache
from prunejob_operator.client import HttpKubeApi
from prunejob_operator.connection import Connection
from prunejob_operator.informer import SYNC, Body, Change, Informer
from prunejob_operator.kubeapi import ApiError
from prunejob_operator.leader import LeaderElector
from prunejob_operator.metrics import Metrics
from prunejob_operator.reconciler import Reconciler
from prunejob_operator.records import (
    job_of_pod,
    owner_of,
    record_of,
    summarize_job,
    summarize_pod,
    summarize_priority_class,
)
from prunejob_operator.reflector import Reflector
from prunejob_operator.settings import OperatorConfig
from prunejob_operator.tasks import cancel_and_wait

LOG = logging.getLogger("prunejob_operator")
COMPONENT = "prunejob-operator"
MANAGED_SELECTOR = f"{manifests.LABEL_MANAGED_BY}={manifests.MANAGED_BY}"
SUPERVISE_PERIOD = 5.0  # seconds between the supervisor's health checks
HARD_EXIT_AFTER = 30.0  # seconds a failed process gets to stop gracefully before _exit(1)


class Unhealthy(Exception):
    """What the probe reports when the process must not be trusted any more."""


class Outcome:
    """How the process ends: `stop` is kopf's stop flag, `exit_code` what `main` returns."""

    def __init__(self, *, hard_exit_after: float = HARD_EXIT_AFTER) -> None:
        self.stop = asyncio.Event()  # bound to kopf's loop on first use
        self.exit_code = 0
        self.reason = ""
        self._hard_exit_after = hard_exit_after
        self._hard_exit: threading.Timer | None = None

    @property
    def failed(self) -> bool:
        return self.exit_code != 0

    def fail(self, reason: str) -> None:
        """Stop the operator with exit code 1 (once); if the graceful stop hangs, the
        process ends anyway after `hard_exit_after` seconds."""
        if self.failed:
            return
        LOG.error("stopping with exit code 1: %s", reason)
        self.exit_code, self.reason = 1, reason
        self.stop.set()
        self._hard_exit = threading.Timer(self._hard_exit_after, os._exit, args=(1,))
        self._hard_exit.daemon = True
        self._hard_exit.start()

    def disarm(self) -> None:
        """Cancel a pending hard exit: for a caller that hosts the operator in a process
        that must live on after the operator stopped (the tests)."""
        if self._hard_exit is not None:
            self._hard_exit.cancel()


class ElectionThread:
    """The `LeaderElector` on a thread and event loop of its own, with an API client of
    its own (as client-go's elector runs in its own goroutine): a main loop busy with
    thousands of reconciles after a relist never delays a renewal, and the write fence
    (`leading`) stays true to the Lease. Its callbacks run on the main loop."""

    def __init__(
        self,
        config: OperatorConfig,
        connection: Connection,
        identity: str,
        *,
        on_started: Callable[[], None],
        on_stopped: Callable[[str], None],
    ) -> None:
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._api = HttpKubeApi(connection.clone(), component=COMPONENT, instance=identity)
        self.elector = LeaderElector(
            self._api,
            namespace=config.lease_namespace_or_default,
            name=config.lease_name,
            identity=identity,
            pod_name=config.pod_name,
            on_started=self._started,
            on_stopped=self._stopped,
        )
        self.first_attempt = threading.Event()
        self.failure: str | None = None  # why the election ended, if not by losing the lead
        self._main: asyncio.AbstractEventLoop | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="leader-election", daemon=True)
        self._election: asyncio.Task[None] | None = None

    def start(self, main: asyncio.AbstractEventLoop) -> None:
        self._main = main
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive() and self.failure is None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._election = self._loop.create_task(self._elect())
        self._loop.run_forever()
        self._loop.close()

    async def _elect(self) -> None:
        first = asyncio.ensure_future(self.elector.first_attempt.wait())
        first.add_done_callback(lambda _: self.first_attempt.set())
        try:
            await self.elector.run()
        except Exception as err:  # a bug: the supervisor stops the process
            self.failure = f"the leader elector failed: {err!r}"
            LOG.exception("the leader elector failed")
        finally:
            first.cancel()
            self.first_attempt.set()

    def _started(self) -> None:
        assert self._main is not None
        self._main.call_soon_threadsafe(self._on_started)

    def _stopped(self, reason: str) -> None:
        assert self._main is not None
        self._main.call_soon_threadsafe(self._on_stopped, reason)

    async def _shutdown(self, timeout: float) -> bool:
        if self._election is not None:
            for error in await cancel_and_wait([self._election]):
                LOG.error("the election had failed: %r", error)
        try:
            return await self.elector.release(timeout=timeout)
        finally:
            await self._api.aclose()

    async def stop(self, timeout: float) -> bool:
        """Stop electing and release the Lease if held (from the main loop); True when
        released."""
        if not self._thread.is_alive():
            return False
        future = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), self._loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout + 2)
        except (TimeoutError, ApiError):
            return False
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 2)


def _is_pattern(namespace: str) -> bool:
    return namespace.startswith("!") or any(char in namespace for char in "*?[")


def namespace_filter(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """kopf's namespace patterns: globs to include, `!glob` to exclude."""
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]

    def wanted(namespace: str) -> bool:
        if any(fnmatch.fnmatchcase(namespace, p) for p in exclude):
            return False
        return not include or any(fnmatch.fnmatchcase(namespace, p) for p in include)

    return wanted


def collection(prefix: str, plural: str, namespace: str | None) -> str:
    """A collection path: cluster-wide, or within `namespace`."""
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


class Operator:
    """One operator process's parts (see the module docstring)."""

    def __init__(
        self,
        config: OperatorConfig,
        connection: Connection,
        outcome: Outcome,
    ) -> None:
        self.config = config
        self.outcome = outcome
        self.stale_after = float(config.watch_stale_seconds)
        self.identity = leader.identity(config.pod_name)
        self.metrics = Metrics()
        self.api = HttpKubeApi(
            connection,
            timeout=60,
            component=COMPONENT,
            event_name_prefix="prunejob-",
            instance=config.pod_name or self.identity,
            may_write=self.may_write,
        )
        self.indices = {kind: Index() for kind in ("prunejobs", "jobs", "pods", "priorityclasses")}
        self.cache = IndexedCache(*self.indices.values())
        self.reconciler = Reconciler(config, self.api, self.cache, metrics=self.metrics)
        self.election: ElectionThread | None = None
        if config.leader_election:
            self.election = ElectionThread(
                config, connection, self.identity, on_started=self._poke, on_stopped=self._lost
            )
        self.reflectors = self._reflectors()
        self.metrics.watch_counts(lambda: [(r.name, r.counts) for r in self.reflectors])
        self.active = False  # reconciling
        self._writes_closed = False
        self._changed = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dispatched: set[asyncio.Task[None]] = set()

    # -- wiring ---------------------------------------------------------------------

    def _reflectors(self) -> list[Reflector]:
        config = self.config
        patterns = tuple(ns for ns in config.namespaces if _is_pattern(ns))
        scopes: list[str | None] = (
            [None] if config.clusterwide or patterns else list(config.namespaces)
        )
        wanted = namespace_filter(config.namespaces) if patterns else (lambda ns: True)
        prunejobs = f"/apis/{models.GROUP}/{models.VERSION}"
        kinds: list[tuple[str, str, str, str, Informer]] = [
            (
                "prunejobs", prunejobs, models.PLURAL, "",
                self._informer("prunejobs", _file_prunejob, self._on_prunejob, wanted),
            ),
            (
                "jobs", "/apis/batch/v1", "jobs", MANAGED_SELECTOR,
                self._informer("jobs", _file_job, self._on_job, wanted, owner_of),
            ),
            (
                "pods", "/api/v1", "pods", MANAGED_SELECTOR,
                self._informer("pods", _file_pod, self._on_pod, wanted, owner_of),
            ),
        ]  # fmt: skip
        reflectors = [
            Reflector(
                name if scope is None else f"{name}@{scope}",
                self.api,
                collection(prefix, plural, scope),
                informer,
                label_selector=selector,
                scope=scope,
                on_change=self._poke,
            )
            for name, prefix, plural, selector, informer in kinds
            for scope in scopes
        ]
        if config.max_running_jobs > 0:  # only the built-in queue orders by priority
            informer = self._informer(
                "priorityclasses", _file_priority_class, self._on_priority_class
            )
            where = "/apis/scheduling.k8s.io/v1/priorityclasses"
            reflectors.append(
                Reflector("priorityclasses", self.api, where, informer, on_change=self._poke)
            )
        return reflectors

    def _informer(
        self,
        kind: str,
        file: Callable[[Body], Mapping[Hashable, Any] | None],
        notify: Callable[[Change], None],
        wanted: Callable[[str], bool] = lambda ns: True,
        owner: Callable[[Body], str | None] = lambda body: None,
    ) -> Informer:
        return Informer(kind, self.indices[kind], file, notify, owner=owner, wanted=wanted)

    # -- changes -> reconciles ------------------------------------------------------

    def _on_prunejob(self, change: Change) -> None:
        key = (change.namespace, change.name)
        record = change.value()
        if change.type == "DELETED":
            self.metrics.forget(key)
        elif record is not None:
            self.metrics.set_phase(key, record.status.phase)
        if record is not None:
            self._dispatch(self.reconciler.prunejob_event, _event_type(change), record)

    def _on_job(self, change: Change) -> None:
        self._dispatch(
            self.reconciler.job_event,
            _event_type(change),
            change.namespace,
            change.owner,
            change.value(),
        )

    def _on_pod(self, change: Change) -> None:
        self._dispatch(
            self.reconciler.owned_event, _event_type(change), change.namespace, change.owner
        )

    def _on_priority_class(self, change: Change) -> None:
        self._dispatch(self.reconciler.trigger_admission)

    def _dispatch(self, handler: Callable[..., Awaitable[None]], *args: Any) -> None:
        if not self.active:
            return  # a standby, or not fresh yet: the cache is kept, nothing reconciled
        task = asyncio.get_running_loop().create_task(handler(*args))
        self._dispatched.add(task)
        task.add_done_callback(self._dispatch_done)

    def _dispatch_done(self, task: asyncio.Task[None]) -> None:
        self._dispatched.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("a reconcile trigger failed", exc_info=task.exception())

    # -- leading --------------------------------------------------------------------

    @property
    def elector(self) -> LeaderElector | None:
        return None if self.election is None else self.election.elector

    def may_write(self) -> bool:
        """The write fence: only while this replica leads (or elects no leader)."""
        if self._writes_closed:
            return False
        return self.elector is None or self.elector.leading

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.leading

    def _poke(self) -> None:
        self._changed.set()

    def _lost(self, reason: str) -> None:
        self._deactivate()
        self.outcome.fail(f"lost the lead: {reason}")

    def _deactivate(self) -> None:
        self.active = False
        self.metrics.leader.set(0)
        for task in list(self._dispatched):
            task.cancel()

    def _fresh(self) -> bool:
        """Whether every reflector has completed a list begun after taking the lead
        (asking the others to list again)."""
        since = self.elector.acquired_at if self.elector is not None else None
        fresh = True
        for reflector in self.reflectors:
            listed = reflector.listed_since
            if listed is None:
                fresh = False
            elif since is not None and listed < since:
                fresh = False
                reflector.relist()
        return fresh

    def _activate(self) -> None:
        self.active = True
        self.metrics.leader.set(1)
        records = list(self.cache.prunejobs())
        LOG.info(
            "reconciling as %s: %d PruneJobs, %d Jobs, %d Pods cached",
            "leader" if self.elector is not None else "the only replica",
            len(records),
            len(self.indices["jobs"].objects()),
            len(self.indices["pods"].objects()),
        )
        for record in records:
            self._dispatch(self.reconciler.prunejob_event, None, record)
        if self.config.max_running_jobs > 0:
            self._dispatch(self.reconciler.trigger_admission)

    # -- the process ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the elector, then (after its first attempt) the reflectors and the
        supervisor; returns at once after that, everything runs in the background."""
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port)
            LOG.info("Prometheus metrics on :%d/metrics", self.config.metrics_port)
        if self.election is not None:
            elector = self.election.elector
            LOG.info(
                "leader election on Lease %s/%s as %s",
                elector.namespace,
                elector.name,
                elector.identity,
            )
            self.election.start(asyncio.get_running_loop())
            # A first win before listing spares a second list at start-up.
            await asyncio.to_thread(self.election.first_attempt.wait, elector.retry_period * 3)
        for reflector in self.reflectors:
            self._spawn(f"reflector {reflector.name}", reflector.run())
        self._spawn("the supervisor", self._supervise())

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._ended(name, done))

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._writes_closed or task.cancelled():
            return
        error = task.exception()
        self._deactivate()
        self.outcome.fail(f"{name} ended: {error!r}" if error else f"{name} ended")

    async def _supervise(self) -> None:
        while not self.outcome.failed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), SUPERVISE_PERIOD)
            self._changed.clear()
            problem = self.problem()
            if problem is not None:
                self._deactivate()
                self.outcome.fail(problem)
                return
            if not self.active and self.leading and self._fresh():
                self._activate()

    def problem(self) -> str | None:
        """Why this process must not be trusted any more, or None."""
        if self.outcome.failed:
            return self.outcome.reason
        for name, task in self._tasks.items():
            if task.done():
                return f"{name} has ended"
        if self.election is not None and not self.election.alive():
            return self.election.failure or "the leader elector has ended"
        for reflector in self.reflectors:
            if reflector.silence() > self.stale_after:
                return (
                    f"reflector {reflector.name} has not heard from the API server "
                    f"for {reflector.silence():.0f}s"
                )
        return None

    def health(self) -> dict[str, Any]:
        """What the probe shows; raises `Unhealthy` instead when there is a `problem()`."""
        problem = self.problem()
        if problem is not None:
            raise Unhealthy(problem)
        elector = self.elector
        return {
            "role": "leader" if elector is None or elector.leading else "standby",
            "reconciling": self.active,
            "identity": self.identity,
            "lease": None if elector is None else f"{elector.namespace}/{elector.name}",
            "holder": None if elector is None else elector.holder,
            "reflectors": {
                r.name: {
                    "synced": r.synced,
                    "silenceSeconds": round(r.silence(), 1),
                    "resourceVersion": r.resource_version,
                    **dict(r.counts),
                }
                for r in self.reflectors
            },
        }

    async def stop(self) -> None:
        """Stop reconciling and watching; post the queued Events while still leading,
        then release the Lease and close the client."""
        self._deactivate()
        stopping = [task for task in self._tasks.values() if not task.done()]
        for task in stopping:
            task.cancel()
        for task in [*stopping, *self._dispatched]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        started = time.monotonic()
        await self.reconciler.aclose(timeout=5.0)
        self._writes_closed = True
        if self.election is not None:
            await self.election.stop(timeout=max(1.0, 8.0 - (time.monotonic() - started)))
        await self.api.aclose()


def _event_type(change: Change) -> str | None:
    """The reconciler's event type: a relist's unchanged object is like kopf's listing."""
    return None if change.type == SYNC else change.type


def _file_prunejob(body: Body) -> Mapping[Hashable, Any]:
    return cache.prunejob_entries(record_of(body))


def _file_job(body: Body) -> Mapping[Hashable, Any] | None:
    summary = summarize_job(body)
    return None if summary is None else cache.job_entries(summary)


def _file_pod(body: Body) -> Mapping[Hashable, Any] | None:
    job_name = job_of_pod(body)
    if job_name is None:
        return None
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    return cache.pod_entries(namespace, job_name, summarize_pod(body))


def _file_priority_class(body: Body) -> Mapping[Hashable, Any]:
    return cache.priority_class_entries(summarize_priority_class(body))
