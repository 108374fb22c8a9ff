"""Moving artifacts between their locations and local files.

Download and decrypt an input, encrypt and upload (or atomically write) an output,
publish a JSON document.

    with fetch_model(location, key, store) as plain_model:   # download, decrypt
        ...
    result = publish_model(plain, output, key, store, overwrite=...)  # encrypt, upload
    publish_json(report, report_location, store)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from prunejob_contract.errors import KeyRequired, ModelNotFound, OutputExists
from pruner.io import age
from pruner.io.atomic import atomic_write
from pruner.io.formats import file_is_encrypted, model_suffix, read_prefix
from pruner.io.locations import LocalPath, Location
from pruner.io.s3 import OWNER_METADATA, MiB, ProgressCallback, S3Store
from pruner.io.scratch import private_directory


class HashingWriter:
    """Writes through to a file while computing the SHA-256 and size of what passed."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex SHA-256, size) of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    size = 0
    buffer = memoryview(bytearray(MiB))
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(buffer[:got])
            size += got
    return digest.hexdigest(), size


def _decrypt_to(source: Path, directory: Path, name: str, key: str) -> Path:
    """Decrypt into a 0600 file in `directory` (a private temp dir that the caller
    removes on failure, so no unauthenticated plaintext outlives an error)."""
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix="plain-")
    temp = Path(temp_name)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        age.decrypt_stream(src, out, key)
    final = directory / ("model" + model_suffix(name, read_prefix(temp)))
    temp.rename(final)
    return final


def _require_key(key: str | None, location: Location) -> str:
    if key is None:
        raise KeyRequired(
            f"model {location} is encrypted (age); give its key with --key-file PATH or the "
            "PRUNEJOB_KEY environment variable (or -k)"
        )
    return key


@contextlib.contextmanager
def fetch_model(
    location: Location,
    key: str | None,
    store: S3Store,
    *,
    progress: ProgressCallback | None = None,
) -> Iterator[Path]:
    """Yield a local PLAINTEXT model path for `location`.

    S3 objects are downloaded; an age header means the file is decrypted (KeyRequired
    without a key). Plaintext lives in a private 0600 file in a 0700 directory on
    tmpfs when it fits (see `pruner.io.scratch`), removed on every exit path; it keeps
    the model's extension (.keras/.h5) because Keras picks the format from it.
    """
    if isinstance(location, LocalPath):
        if not location.path.is_file():
            raise ModelNotFound(f"model file {location.path} does not exist")
        if not file_is_encrypted(location.path):
            yield location.path  # plaintext already on disk: nothing to hide or clean
            return
        secret = _require_key(key, location)
        size = location.path.stat().st_size
        with private_directory(size) as directory:
            yield _decrypt_to(location.path, directory, location.path.name, secret)
        return
    size = int(store.head(location).get("ContentLength", 0))
    name = Path(location.key).name
    with private_directory(size) as directory:
        downloaded = directory / "download"
        store.download(location, downloaded, progress=progress)
        if file_is_encrypted(downloaded):
            plain = _decrypt_to(downloaded, directory, name, _require_key(key, location))
            downloaded.unlink()
        else:
            plain = directory / ("model" + model_suffix(name, read_prefix(downloaded)))
            downloaded.rename(plain)
        yield plain


def publish_model(
    local_plain: Path,
    location: Location,
    key: str | None,
    store: S3Store,
    *,
    overwrite: bool,
    owner: str | None = None,
    progress: ProgressCallback | None = None,
    work_factor: int = age.DEFAULT_WORK_FACTOR,
) -> dict[str, Any]:
    """Store `local_plain` at `location`, encrypted with `key` if given.

    Local outputs are written atomically (temp file + rename); S3 outputs are
    uploaded all-or-nothing. Nothing is replaced without `overwrite`
    (OutputExists), except an S3 object that records `owner` as who published it
    (replaced only if it is still that version: If-Match on its ETag). Returns
    {"uri", "sha256", "bytes"} of the stored bytes, which S3 objects also carry as
    metadata (sha256, size, and the owner when given). `work_factor` is the scrypt
    cost for the key (age's default; lower only for tests).
    """
    if isinstance(location, LocalPath):
        with atomic_write(location.path, overwrite=overwrite, create_parent=True) as handle:
            writer = HashingWriter(handle)
            with open(local_plain, "rb") as src:
                if key is not None:
                    age.encrypt_stream(src, writer, key, work_factor=work_factor)
                else:
                    shutil.copyfileobj(src, writer, MiB)
        return {"uri": str(location), "sha256": writer.sha256, "bytes": writer.size}
    etag = None
    if not overwrite:
        # Fail before spending time on encryption; the upload re-checks atomically.
        if owner is not None:
            etag = store.owned_etag(location, owner)
        elif store.object_exists(location):
            raise OutputExists(
                f"output {location.uri} already exists; pass --overwrite to replace it"
            )
    with contextlib.ExitStack() as cleanup:
        if key is not None:
            # Ciphertext is not secret: the ordinary temp dir is fine for it.
            fd, temp_name = tempfile.mkstemp(prefix="prunejob-upload-", suffix=".age")
            upload_path = Path(temp_name)
            cleanup.callback(upload_path.unlink, missing_ok=True)
            with os.fdopen(fd, "wb") as handle, open(local_plain, "rb") as src:
                writer = HashingWriter(handle)
                age.encrypt_stream(src, writer, key, work_factor=work_factor)
            digest, size = writer.sha256, writer.size
        else:
            upload_path = Path(local_plain)
            digest, size = sha256_file(upload_path)
        metadata = {"sha256": digest, "size": str(size)}
        if owner is not None:
            metadata[OWNER_METADATA] = owner
        store.upload(
            upload_path,
            location,
            overwrite=overwrite,
            metadata=metadata,
            progress=progress,
            if_match=etag,
        )
    return {"uri": location.uri, "sha256": digest, "bytes": size}


def publish_json(
    data: dict[str, Any], location: Location, store: S3Store, *, overwrite: bool = True
) -> str:
    """Write a JSON document (a report) to a local path or S3; returns its uri."""
    payload = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
    if isinstance(location, LocalPath):
        with atomic_write(location.path, overwrite=overwrite, create_parent=True) as handle:
            handle.write(payload)
        return str(location)
    store.put_bytes(payload, location, overwrite=overwrite, content_type="application/json")
    return location.uri
