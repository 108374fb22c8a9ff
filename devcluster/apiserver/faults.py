"""Seeded fault injection for the API server: HTTP errors, throttling, slow and broken watches.

Fault injection: a seeded switch in the API server that makes it misbehave as real ones
do under load, upgrades and network trouble, so clients can be tested against it.

Per request, one seeded draw picks at most one fault among those that apply to it:

- ``gone``: a watch request is answered HTTP 410 ``Status`` (``Expired``), as an API
  server whose watch cache no longer has the requested resourceVersion;
- ``expire``: a watch stream ends with an ``ERROR`` event carrying a 410 ``Status``, after
  a random time up to ``stream_seconds``;
- ``drop``: a watch stream's connection is cut after a random time; any other request is
  processed and then its connection is cut before the response (a write may have happened);
- ``throttle``: 429 ``TooManyRequests`` with ``Retry-After: retry_after`` (API priority
  and fairness), nothing processed;
- ``error500`` / ``error503``: ``InternalError`` / ``ServiceUnavailable``, nothing processed;
- ``timeout``: the request is processed, then answered 504 ``Timeout`` (it may have
  happened, as the real server's "request did not complete within the allotted timeout");

and, from an independent draw, ``slow``: the response is delayed up to ``slow_seconds``.
API-server restarts (``restart_every``) are the serving layer's part. Requests carrying
``EXEMPT_HEADER``, ``/devcluster/...`` and health checks are never faulted. The injector
counts requests, faults by kind and restarts; ``stats()`` is what ``GET /devcluster/faults``
answers. With a given seed the sequence of decisions is always the same.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import aiohttp.web

EXEMPT_HEADER = "X-Devcluster-No-Faults"  # any value: this request is never faulted
FAULTS_PATH = "/devcluster/faults"
# The faults in the order a draw considers them; the first two apply to watches only.
KINDS = ("gone", "expire", "drop", "throttle", "error500", "error503", "timeout")
WATCH_ONLY = ("gone", "expire")
NOT_FOR_WATCHES = ("timeout",)
ALL_KINDS = (*KINDS, "slow")


class FaultConfigError(ValueError):
    """A fault specification that cannot be used; the message names the bad part."""


@dataclass(frozen=True)
class FaultConfig:
    """What to inject. ``rates`` maps a kind (``ALL_KINDS``) to its probability per request."""

    seed: int = 0
    rates: Mapping[str, float] = field(default_factory=dict)
    slow_seconds: float = 2.0  # a slow response waits uniform(0, slow_seconds)
    retry_after: int = 1  # Retry-After of a 429, in seconds
    stream_seconds: float = 5.0  # expire/drop cut a watch after uniform(0, stream_seconds)
    restart_every: float | None = None  # mean seconds between API-server restarts
    restart_downtime: float = 1.0  # seconds the port stays closed at each restart
    compact_on_restart: bool = True  # a restarted server's watch cache starts at "now"

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in ALL_KINDS:
                raise FaultConfigError(f"unknown fault {kind!r}: use one of {', '.join(ALL_KINDS)}")
            if not 0.0 <= rate <= 1.0:
                raise FaultConfigError(f"fault rate {kind}={rate} must be between 0 and 1")
        if sum(self.rates.get(kind, 0.0) for kind in KINDS) > 1.0:
            raise FaultConfigError("the rates of the faults other than slow must sum to at most 1")
        if self.restart_every is not None and self.restart_every <= 0:
            raise FaultConfigError("restart_every must be positive (seconds)")

    @classmethod
    def uniform(cls, rate: float, **options: Any) -> FaultConfig:
        """Every kind (``slow`` included) at ``rate``."""
        return cls(rates=dict.fromkeys(ALL_KINDS, rate), **options)

    @classmethod
    def parse(cls, spec: str, **options: Any) -> FaultConfig:
        """``"all=0.02,slow=0.1,seed=7,restart-every=20"``: rates by kind (``all`` sets every
        kind), and the options by their names with ``-`` or ``_``."""
        rates: dict[str, float] = {}
        settings: dict[str, Any] = dict(options)
        names = {f.name: f for f in fields(cls) if f.name != "rates"}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise FaultConfigError(f"fault setting {item!r} must be NAME=VALUE")
            try:
                if key == "all":
                    rates.update(dict.fromkeys(ALL_KINDS, float(value)))
                elif key in ALL_KINDS:
                    rates[key] = float(value)
                elif key == "compact_on_restart":
                    settings[key] = value.strip().lower() in ("1", "true", "yes")
                elif key in names:
                    settings[key] = (int if key in ("seed", "retry_after") else float)(value)
                else:
                    raise FaultConfigError(
                        f"unknown fault setting {key!r}: use a fault kind "
                        f"({', '.join(ALL_KINDS)}, all) or one of {', '.join(sorted(names))}"
                    )
            except ValueError as exc:
                if isinstance(exc, FaultConfigError):
                    raise
                raise FaultConfigError(
                    f"fault setting {item!r}: {value!r} is not a number"
                ) from exc
        return cls(rates=rates, **settings)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rates": dict(self.rates),
            "slowSeconds": self.slow_seconds,
            "retryAfter": self.retry_after,
            "streamSeconds": self.stream_seconds,
            "restartEvery": self.restart_every,
            "restartDowntime": self.restart_downtime,
            "compactOnRestart": self.compact_on_restart,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultConfig:
        keys = {
            "seed": "seed",
            "slowSeconds": "slow_seconds",
            "retryAfter": "retry_after",
            "streamSeconds": "stream_seconds",
            "restartEvery": "restart_every",
            "restartDowntime": "restart_downtime",
            "compactOnRestart": "compact_on_restart",
        }
        unknown = set(data) - set(keys) - {"rates"}
        if unknown:
            raise FaultConfigError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        return cls(
            rates={str(k): float(v) for k, v in (data.get("rates") or {}).items()},
            **{keys[k]: v for k, v in data.items() if k in keys},
        )


@dataclass(frozen=True)
class WatchFault:
    """What happens to a watch stream: ``expire`` (ERROR 410 event) or ``drop`` after
    ``after`` seconds."""

    kind: str
    after: float


@dataclass(frozen=True)
class Decision:
    kind: str | None
    delay: float = 0.0
    after: float = 0.0


Respond = Callable[
    [aiohttp.web.BaseRequest, WatchFault | None], Awaitable[aiohttp.web.StreamResponse]
]


def is_watch(raw: aiohttp.web.BaseRequest) -> bool:
    return raw.query.get("watch") in ("true", "1") or "/watch/" in raw.path


def status_response(
    code: int, reason: str, message: str, headers: Mapping[str, str] | None = None, **details: Any
) -> aiohttp.web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return aiohttp.web.Response(
        body=json.dumps(body).encode(),
        status=code,
        content_type="application/json",
        headers=dict(headers or {}),
    )


def abort(raw: aiohttp.web.BaseRequest) -> None:
    """Cut the request's connection without a response (a dropped stream)."""
    transport = raw.transport
    if transport is not None:
        transport.abort()


class FaultInjector:
    """Decides and applies faults for requests on the faulty listener; counts them."""

    def __init__(self, config: FaultConfig, resource_version: Callable[[], int]) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._resource_version = resource_version
        self.requests = 0
        self.watches = 0
        self.exempt = 0
        self.restarts = 0
        self.faults: dict[str, int] = dict.fromkeys(ALL_KINDS, 0)

    def reconfigure(self, config: FaultConfig) -> None:
        """New rates (and a new seeded sequence); the counts go on."""
        self.config = config
        self._rng = random.Random(config.seed)

    def stats(self) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "requests": self.requests,
            "watchRequests": self.watches,
            "exemptRequests": self.exempt,
            "faults": dict(self.faults),
            "faulted": sum(self.faults.values()),
            "restarts": self.restarts,
        }

    def decide(self, watch: bool) -> Decision:
        """One request's fate (two draws always, so the sequence does not depend on which
        kinds are enabled for other requests)."""
        rates = self.config.rates
        draw, slow_draw, amount = self._rng.random(), self._rng.random(), self._rng.random()
        kind = None
        cumulative = 0.0
        for candidate in KINDS:
            if (candidate in WATCH_ONLY and not watch) or (candidate in NOT_FOR_WATCHES and watch):
                continue
            cumulative += rates.get(candidate, 0.0)
            if draw < cumulative:
                kind = candidate
                break
        delay = 0.0
        if slow_draw < rates.get("slow", 0.0):
            delay = amount * self.config.slow_seconds
        return Decision(kind, delay, amount * self.config.stream_seconds)

    async def serve(
        self, raw: aiohttp.web.BaseRequest, respond: Respond
    ) -> aiohttp.web.StreamResponse:
        watch = is_watch(raw)
        self.requests += 1
        self.watches += watch
        decision = self.decide(watch)
        if decision.delay:
            self.faults["slow"] += 1
            await asyncio.sleep(decision.delay)
        kind = decision.kind
        if kind is not None:
            self.faults[kind] += 1
        if kind == "gone":
            rv = self._resource_version()
            return status_response(
                410,
                "Expired",
                f"too old resource version: {raw.query.get('resourceVersion', '0')} ({rv})",
            )
        if kind == "throttle":
            seconds = self.config.retry_after
            return status_response(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                headers={"Retry-After": str(seconds)},
                retryAfterSeconds=seconds,
            )
        if kind == "error500":
            return status_response(
                500,
                "InternalError",
                "Internal error occurred: devcluster injected an internal error",
            )
        if kind == "error503":
            return status_response(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request (devcluster injected fault)",
            )
        if watch and kind in ("expire", "drop"):
            return await respond(raw, WatchFault(kind, decision.after))
        response = await respond(raw, None)
        if kind == "drop":
            abort(raw)
        elif kind == "timeout":
            return status_response(
                504,
                "Timeout",
                "Timeout: request did not complete within requested timeout - context deadline "
                "exceeded",
                retryAfterSeconds=1,
            )
        return response


def with_rates(config: FaultConfig, **rates: float) -> FaultConfig:
    """``config`` with some rates changed."""
    return replace(config, rates={**config.rates, **rates})
