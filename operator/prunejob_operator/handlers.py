"""kopf registrations: start-up, the three indices, and the watch events -> reconciler.

kopf keeps the indices from the watch streams and runs event handlers only once they
are fully populated, so after a restart the reconciler sees every existing Job first.
Jobs and Pods are watched with a server-side label selector. The start-up handler
builds the one `Reconciler` (with the API client and a view of the indices) and puts
it in kopf's memo; each event handler parses the body and hands it over. No timers,
no polling.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from prunejob_operator import cache, connection, manifests, models
from prunejob_operator.client import HttpKubeApi
from prunejob_operator.metrics import Metrics
from prunejob_operator.reconciler import Reconciler
from prunejob_operator.records import job_of_pod, owner_of, record_of, summarize_job, summarize_pod
from prunejob_operator.settings import OperatorConfig, from_env

LOG = logging.getLogger("prunejob_operator")
PJ_RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)
MANAGED = {manifests.LABEL_MANAGED_BY: manifests.MANAGED_BY}
MANAGED_SELECTOR = f"{manifests.LABEL_MANAGED_BY}={manifests.MANAGED_BY}"
COMPONENT = "prunejob-operator"


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    pj_records: kopf.Index[Any, Any],
    job_records: kopf.Index[Any, Any],
    pod_records: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    # `prunejob operator` (cli.main) puts both in the memo; plain `kopf run` does not.
    config: OperatorConfig = memo.get("config") or from_env()
    server: connection.Connection = memo.get("connection") or connection.load()
    # Server-side filtering: the operator never streams other people's Jobs and Pods.
    settings.watching.label_selectors["batch", "jobs"] = MANAGED_SELECTOR
    settings.watching.label_selectors["pods"] = MANAGED_SELECTOR
    # Reconnect watches regularly rather than trusting one long stream forever.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 60
    settings.posting.reporting_component = COMPONENT
    settings.posting.event_name_prefix = "prunejob-"
    settings.peering.mandatory = False
    memo.api = HttpKubeApi(server, timeout=60, component=COMPONENT, event_name_prefix="prunejob-")
    view = cache.IndexedCache(pj_records, job_records, pod_records)
    memo.reconciler = Reconciler(config, memo.api, view, metrics=Metrics())
    if config.metrics_port:
        memo.reconciler.metrics.serve(config.metrics_port)
        LOG.info("Prometheus metrics on :%d/metrics", config.metrics_port)
    LOG.info(
        "prunejob operator: %s, max running Jobs %s, worker image %s",
        "all namespaces" if config.clusterwide else "namespaces " + ",".join(config.namespaces),
        config.max_running_jobs or "unlimited",
        config.worker_image,
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if "reconciler" in memo:
        await memo.reconciler.aclose()
    if "api" in memo:
        await memo.api.aclose()


@kopf.index(*PJ_RESOURCE)
def pj_records(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, Any]:
    record = record_of(body)
    memo.reconciler.metrics.set_phase((record.namespace, record.name), record.status.phase)
    return cache.prunejob_entries(record)


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
def job_records(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    summary = summarize_job(body)
    return None if summary is None else cache.job_entries(summary)


@kopf.index("v1", "pods", labels=MANAGED)
def pod_records(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any] | None:
    job_name = job_of_pod(body)
    return None if job_name is None else cache.pod_entries(namespace, job_name, summarize_pod(body))


@kopf.on.event(*PJ_RESOURCE)
async def prunejob_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.prunejob_event(type, record_of(body))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(
    type: str | None, body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any
) -> None:
    await memo.reconciler.job_event(type, namespace, owner_of(body), summarize_job(body))


@kopf.on.event("v1", "pods", labels=MANAGED)
async def pod_event(
    type: str | None, body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any
) -> None:
    await memo.reconciler.owned_event(type, namespace, owner_of(body))
