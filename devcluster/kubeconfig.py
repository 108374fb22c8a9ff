"""Kubeconfig files pointing at the local API server, and clients built from them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import kubernetes.client

CONTEXT = "devcluster"


def kubeconfig_document(url: str, *, namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig for a plain-HTTP server without authentication."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: str | Path, url: str, *, namespace: str = "default") -> Path:
    """Write atomically (never a half-written file other processes could read)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(kubeconfig_document(url, namespace=namespace), sort_keys=False)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, target)
    return target


def api_client(kubeconfig_path: str | Path) -> kubernetes.client.ApiClient:
    """A ``kubernetes`` client for this kubeconfig only (ignores ``KUBECONFIG`` and globals)."""
    import kubernetes.config

    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig_path))
