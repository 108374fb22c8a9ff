"""kopf registrations: start-up, clean-up and the probe of the operator's `runtime.Operator`.

kopf is the process runtime only: it runs these, serves the liveness endpoint, handles
SIGTERM and logging. It watches nothing (no resource handlers, no peering, no resource
scanning after start-up): the operator's own reflectors do, because kopf's watchers
stop for good on an HTTP 410 answer to a watch request. The start-up handler builds the
`Operator` and starts it; the clean-up handler stops it (Events posted, Lease
released); the probe reports leader or standby and the reflectors' state, and fails
when the process must not be trusted (it is stopping with exit code 1 by then).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from prunejob_operator import connection
from prunejob_operator.runtime import COMPONENT, Operator, Outcome, Unhealthy
from prunejob_operator.settings import OperatorConfig, from_env

LOG = logging.getLogger("prunejob_operator")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # `prunejob operator` (cli.main) puts these in the memo; plain `kopf run` does not.
    config: OperatorConfig = memo.get("config") or from_env()
    server: connection.Connection = memo.get("connection") or connection.load()
    outcome: Outcome = memo.get("outcome") or Outcome()
    settings.scanning.disabled = True  # no CRD or namespace watching by kopf
    settings.posting.enabled = False  # kopf posts no Events of its own (no handlers on objects)
    settings.posting.reporting_component = COMPONENT
    memo.operator = Operator(config, server, outcome)
    LOG.info(
        "prunejob operator: %s, max running Jobs %s, worker image %s",
        "all namespaces" if config.clusterwide else "namespaces " + ",".join(config.namespaces),
        config.max_running_jobs or "unlimited",
        config.worker_image,
    )
    await memo.operator.start()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if "operator" in memo:
        await memo.operator.stop()
        # kopf waits up to 5 s for leftover tasks at exit, and its waiter on our stop flag
        # is one of them after a SIGTERM: set the flag (the exit code stays as it is).
        memo.operator.outcome.stop.set()


@kopf.on.probe(id="prunejob")
def health(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    if "operator" not in memo:
        return {"role": "starting"}
    try:
        report: dict[str, Any] = memo.operator.health()
    except Unhealthy as err:
        raise kopf.PermanentError(str(err)) from None
    return report
