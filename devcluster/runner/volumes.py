"""A pod's volumes and environment made local: Secrets, ConfigMaps, emptyDirs, env vars, paths.

What a pod's containers see of the cluster: ``secret``, ``configMap`` and ``emptyDir``
volumes materialised in a private directory, the environment (``value``, ``secretKeyRef``,
``configMapKeyRef``, ``fieldRef``, ``envFrom``), and container paths rewritten to local ones.

A Secret or ConfigMap (or a key in it) that does not exist yet is a ``MissingReference``;
the kubelet reports it and retries. Objects are read through a ``Reader`` (the API client).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

# (namespace, plural, name) -> the object, or None when it does not exist
Reader = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]

# Volume sources backed by an object: (pod spec key, plural, the field naming the object,
# the word the kubelet's messages use). Any other volume type is an empty directory.
OBJECT_VOLUMES = (
    ("secret", "secrets", "secretName", "secret"),
    ("configMap", "configmaps", "name", "configmap"),
)
# env[].valueFrom keys and envFrom[] keys: (key, plural, word).
KEY_REFERENCES = (
    ("secretKeyRef", "secrets", "secret"),
    ("configMapKeyRef", "configmaps", "configmap"),
)
OBJECT_REFERENCES = (
    ("secretRef", "secrets", "secret"),
    ("configMapRef", "configmaps", "configmap"),
)


class MissingReference(Exception):
    """A Secret/ConfigMap (or a key in it) the pod needs does not exist yet."""

    def __init__(self, message: str, *, volume: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.volume = volume


def decode_values(obj: Mapping[str, Any], plural: str) -> dict[str, bytes]:
    """A Secret's or ConfigMap's values as bytes, whichever field holds them."""
    if plural == "secrets":
        values = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        values.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        return values
    values = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return values


def field_refs(pod: Mapping[str, Any], node_name: str) -> dict[str, str]:
    """The ``fieldRef.fieldPath`` values a container's env may name."""
    meta = pod["metadata"]
    return {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": node_name,
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }


def rewrite_path(value: str, mounts: Mapping[str, Path]) -> str:
    """Map a container path (a mountPath or below it) to its local directory."""
    if value.startswith("-") and "=" in value:
        flag, _, rest = value.partition("=")
        return f"{flag}={rewrite_path(rest, mounts)}"
    for mount_path in sorted(mounts, key=len, reverse=True):
        stripped = mount_path.rstrip("/") or "/"
        if value in (mount_path, stripped):
            return str(mounts[mount_path])
        if value.startswith(stripped + "/"):
            return str(mounts[mount_path]) + value[len(stripped) :]
    return value


def container_mounts(container: Mapping[str, Any], volumes: Mapping[str, Path]) -> dict[str, Path]:
    """mountPath -> local path for the container's ``volumeMounts`` (``subPath`` included)."""
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        local = volumes.get(mount.get("name", ""))
        if local is None:
            continue
        if mount.get("subPath"):
            local = local / mount["subPath"]
        mounts[mount["mountPath"]] = local
    return mounts


async def _referenced_values(
    read: Reader, namespace: str, plural: str, word: str, ref: Mapping[str, Any]
) -> dict[str, bytes] | None:
    """The referenced object's values; ``None`` if it is missing but optional."""
    obj = await read(namespace, plural, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return None
        raise MissingReference(f'{word} "{ref.get("name")}" not found')
    return decode_values(obj, plural)


async def materialise_volumes(
    read: Reader, pod: Mapping[str, Any], workdir: Path
) -> dict[str, Path]:
    """Write the pod's volumes under ``workdir/volumes``; volume name -> local directory."""
    namespace = pod["metadata"]["namespace"]
    result: dict[str, Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume.get("name", "")
        target = workdir / "volumes" / name
        source = next((s for s in OBJECT_VOLUMES if s[0] in volume), None)
        if source is None:  # emptyDir and anything else: an empty private directory
            target.mkdir(parents=True, exist_ok=True)
            result[name] = target
            continue
        key, plural, name_field, word = source
        config = volume[key]
        object_name = config.get(name_field, "")
        obj = await read(namespace, plural, object_name)
        if obj is None:
            if config.get("optional"):
                target.mkdir(parents=True, exist_ok=True)
                result[name] = target
                continue
            raise MissingReference(f'{word} "{object_name}" not found', volume=name)
        values = decode_values(obj, plural)
        items = config.get("items") or [{"key": k, "path": k} for k in values]
        mode = int(config.get("defaultMode", 0o644))
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for item in items:
            if item["key"] not in values:
                raise MissingReference(
                    f"couldn't find key {item['key']} in {word.capitalize()} "
                    f"{namespace}/{object_name}",
                    volume=name,
                )
            file = target / item["path"]
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(values[item["key"]])
            file.chmod(int(item.get("mode", mode)) | 0o400)  # we must read it ourselves
        result[name] = target
    return result


async def container_env(
    read: Reader, pod: Mapping[str, Any], container: Mapping[str, Any], node_name: str
) -> dict[str, str]:
    """The container's environment from ``envFrom`` then ``env`` (later names win)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for key, plural, word in OBJECT_REFERENCES:
            if key in source:
                values = await _referenced_values(read, namespace, plural, word, source[key])
                if values is None:
                    continue
                prefix = source.get("prefix", "")
                for k, v in values.items():
                    env[prefix + k] = v.decode(errors="replace")
    for variable in container.get("env") or []:
        name = variable["name"]
        if "value" in variable:
            env[name] = str(variable["value"])
            continue
        value_from = variable.get("valueFrom") or {}
        for key, plural, word in KEY_REFERENCES:
            if key in value_from:
                ref = value_from[key]
                values = await _referenced_values(read, namespace, plural, word, ref)
                if values is None:
                    break
                if ref.get("key") not in values:
                    if ref.get("optional"):
                        break
                    raise MissingReference(
                        f"couldn't find key {ref.get('key')} in {word.capitalize()} "
                        f"{namespace}/{ref.get('name')}"
                    )
                env[name] = values[ref["key"]].decode(errors="replace")
        if "fieldRef" in value_from:
            path = value_from["fieldRef"].get("fieldPath", "")
            env[name] = field_refs(pod, node_name).get(path, "")
    return env
