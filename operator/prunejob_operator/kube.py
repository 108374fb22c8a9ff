"""The few API calls the operator makes, through kopf's own async client.

kopf's client reuses the operator's authenticated aiohttp session (no thread pool,
no second kubeconfig reader, retries 5xx/429 with backoff). It lives in kopf's
private modules, which is why kopf is pinned to one version and every use is in
this file: a kopf upgrade touches only this adapter.
"""

from __future__ import annotations

import contextlib
from typing import Any

import kopf
from kopf._cogs.clients import api, errors
from kopf._cogs.structs import references

from prunejob_operator import models

JOBS = references.Resource(group="batch", version="v1", plural="jobs", namespaced=True)
PRUNEJOBS = references.Resource(
    group=models.GROUP,
    version=models.VERSION,
    plural=models.PLURAL,
    kind=models.KIND,
    namespaced=True,
    subresources=frozenset({"status"}),
)

ApiError = errors.APIError


async def create_job(
    manifest: dict[str, Any], *, settings: kopf.OperatorSettings, logger: Any
) -> dict[str, Any] | None:
    """Create a Job; None when one with that name already exists (409)."""
    namespace = manifest["metadata"]["namespace"]
    try:
        created: dict[str, Any] = await api.post(
            url=JOBS.get_url(namespace=namespace),
            payload=manifest,
            settings=settings,
            logger=logger,
        )
    except errors.APIConflictError:
        return None
    return created


async def set_job_suspended(
    namespace: str,
    name: str,
    suspended: bool,
    *,
    settings: kopf.OperatorSettings,
    logger: Any,
) -> bool:
    """False when the Job is gone."""
    try:
        await api.patch(
            url=JOBS.get_url(namespace=namespace, name=name),
            headers={"Content-Type": "application/merge-patch+json"},
            payload={"spec": {"suspend": suspended}},
            settings=settings,
            logger=logger,
        )
    except errors.APINotFoundError:
        return False
    return True


async def delete_job(
    namespace: str, name: str, *, settings: kopf.OperatorSettings, logger: Any
) -> None:
    """Delete a Job and (in the background) its pods; absent is fine."""
    with contextlib.suppress(errors.APINotFoundError):
        await api.delete(
            url=JOBS.get_url(namespace=namespace, name=name),
            payload={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "propagationPolicy": "Background",
            },
            settings=settings,
            logger=logger,
        )


async def patch_prunejob_status(
    namespace: str,
    name: str,
    status: dict[str, Any],
    *,
    settings: kopf.OperatorSettings,
    logger: Any,
) -> dict[str, Any] | None:
    """Merge-patch the status subresource; the patched object, or None if it is gone."""
    try:
        patched: dict[str, Any] = await api.patch(
            url=PRUNEJOBS.get_url(namespace=namespace, name=name, subresource="status"),
            headers={"Content-Type": "application/merge-patch+json"},
            payload={"status": status},
            settings=settings,
            logger=logger,
        )
    except errors.APINotFoundError:
        return None
    return patched
