"""The worker's path from an input model to a published output: what `prunejob prune`
calls around the pruning itself.

    with model_input(model_uri, key, s3) as plain_model:   # download, decrypt
        ...prune plain_model, save to a private temp file...
    result = publish_output(pruned, output_uri, key, s3, overwrite=...)  # encrypt, upload
    publish_json(report, report_uri_for(output_uri), s3)
    write_termination_log(path, termination.success_message(...))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prunejob_contract.errors import KeyRequired, ModelNotFound, OutputExists, PrunejobError
from prunejob_contract.termination import TERMINATION_LOG
from pruner import age, storage
from pruner.storage import LocalPath, ProgressCallback, S3Object, S3Options

SCRATCH_ENV = "PRUNEJOB_SCRATCH_DIR"
SHARED_MEMORY = Path("/dev/shm")
DEFAULT_TERMINATION_LOG = TERMINATION_LOG
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


# --- scratch space for plaintext --------------------------------------------------


def scratch_root(needed_bytes: int, env: dict[str, str] | None = None) -> Path:
    """Where decrypted plaintext may live.

    /dev/shm is tmpfs: the plaintext never reaches a persistent disk (absent swap)
    and is gone once unlinked or when the pod ends. Keras may extract the weights of
    a large .keras archive *next to* the file it loads, so that extraction lands on
    tmpfs too. But pods get a 64 MiB /dev/shm by default, so fall back to the temp
    dir (the operator mounts an emptyDir there) when /dev/shm lacks room;
    PRUNEJOB_SCRATCH_DIR overrides both.
    """
    environ = os.environ if env is None else env
    if environ.get(SCRATCH_ENV):
        return Path(environ[SCRATCH_ENV])
    # Room for the plaintext plus a possible Keras extraction of the weights.
    wanted = 2 * needed_bytes + 16 * 1024 * 1024
    with contextlib.suppress(OSError):
        if os.access(SHARED_MEMORY, os.W_OK | os.X_OK):
            stats = os.statvfs(SHARED_MEMORY)
            if stats.f_bavail * stats.f_frsize >= wanted:
                return SHARED_MEMORY
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into SystemExit for the block, so `finally` clauses run.

    By default SIGTERM (Kubernetes deleting the pod, `kill`) ends Python without
    unwinding, which would leave decrypted plaintext behind. Only done in the main
    thread and when nobody installed a handler already.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def private_directory(needed_bytes: int) -> Iterator[Path]:
    """A fresh 0700 directory in the scratch root, removed with all its content on
    every exit path (including files Keras extracted into it, and SIGTERM)."""
    root = scratch_root(needed_bytes)
    try:
        directory = Path(tempfile.mkdtemp(prefix="prunejob-", dir=root))
    except OSError as err:
        raise PrunejobError(
            f"cannot create a private temporary directory in {root}: {err.strerror}"
        ) from None
    try:
        with _sigterm_unwinds():
            yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _model_suffix(name: str, plain_prefix: bytes) -> str:
    """The extension Keras needs to pick the format: from the name (without a
    trailing .age), else from the content's magic bytes."""
    if name.endswith(".age"):
        name = name[: -len(".age")]
    suffix = Path(name).suffix.lower()
    if suffix in MODEL_SUFFIXES:
        return suffix
    if plain_prefix.startswith(_HDF5_MAGIC):
        return ".h5"
    if plain_prefix.startswith(_ZIP_MAGIC):
        return ".keras"
    return suffix


def _read_prefix(path: Path, size: int = 8) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _decrypt_to(source: Path, directory: Path, name: str, key: str) -> Path:
    """Decrypt into a 0600 file in `directory` (a private temp dir that the caller
    removes on failure, so no unauthenticated plaintext outlives an error)."""
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix="plain-")
    temp = Path(temp_name)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        age.decrypt_stream(src, out, key)
    final = directory / ("model" + _model_suffix(name, _read_prefix(temp)))
    temp.rename(final)
    return final


@contextlib.contextmanager
def model_input(
    uri: str,
    key: str | None,
    s3: S3Options,
    *,
    progress: ProgressCallback | None = None,
) -> Iterator[Path]:
    """Yield a local PLAINTEXT model path for `uri` (a local path or s3://bucket/key).

    S3 objects are downloaded; an age header means the file is decrypted (KeyRequired
    without a key). Plaintext lives in a private 0600 file in a 0700 directory on
    tmpfs when it fits (see `scratch_root`), removed on every exit path; it keeps the
    model's extension (.keras/.h5) because Keras picks the format from it.
    """
    location = storage.parse_uri(uri)
    if isinstance(location, LocalPath):
        if not location.path.is_file():
            raise ModelNotFound(f"model file {location.path} does not exist")
        if not age.file_is_encrypted(location.path):
            yield location.path  # plaintext already on disk: nothing to hide or clean
            return
        _require_key(key, uri)
        size = location.path.stat().st_size
        with private_directory(size) as directory:
            assert key is not None
            yield _decrypt_to(location.path, directory, location.path.name, key)
        return
    assert isinstance(location, S3Object)
    size = int(storage.head(location, s3).get("ContentLength", 0))
    name = Path(location.key).name
    with private_directory(size) as directory:
        downloaded = directory / "download"
        storage.download(location, downloaded, s3, progress=progress)
        if age.file_is_encrypted(downloaded):
            _require_key(key, uri)
            assert key is not None
            plain = _decrypt_to(downloaded, directory, name, key)
            downloaded.unlink()
        else:
            plain = directory / ("model" + _model_suffix(name, _read_prefix(downloaded)))
            downloaded.rename(plain)
        yield plain


def _require_key(key: str | None, uri: str) -> None:
    if key is None:
        raise KeyRequired(
            f"model {uri} is encrypted (age); give its key with --key-file PATH or the "
            "PRUNEJOB_KEY environment variable (or -k)"
        )


def publish_output(
    local_plain: Path,
    uri: str,
    key: str | None,
    s3: S3Options,
    *,
    overwrite: bool,
    progress: ProgressCallback | None = None,
    work_factor: int = age.DEFAULT_WORK_FACTOR,
) -> dict[str, Any]:
    """Store `local_plain` at `uri`, encrypted with `key` if given.

    Local outputs are written atomically (temp file + rename); S3 outputs are
    uploaded all-or-nothing. Nothing is replaced without `overwrite`
    (OutputExists). Returns {"uri", "sha256", "bytes"} of the stored bytes, which
    S3 objects also carry as metadata (sha256, size). `work_factor` is the scrypt
    cost for the key (age's default; lower only for tests).
    """
    location = storage.parse_uri(uri)
    if isinstance(location, LocalPath):
        with storage.atomic_local_write(
            location.path, overwrite=overwrite, create_parent=True
        ) as handle:
            writer = storage.HashingWriter(handle)
            with open(local_plain, "rb") as src:
                if key is not None:
                    age.encrypt_stream(src, writer, key, work_factor=work_factor)
                else:
                    shutil.copyfileobj(src, writer, 1024 * 1024)
        return {"uri": uri, "sha256": writer.sha256, "bytes": writer.size}
    assert isinstance(location, S3Object)
    if not overwrite:
        # Fail before spending time on encryption; the upload re-checks atomically.
        client = storage.make_client(s3)
        if storage.object_exists(client, location):
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
                writer = storage.HashingWriter(handle)
                age.encrypt_stream(src, writer, key, work_factor=work_factor)
            digest, size = writer.sha256, writer.size
        else:
            upload_path = Path(local_plain)
            digest, size = storage.sha256_file(upload_path)
        storage.upload(
            upload_path,
            location,
            s3,
            overwrite=overwrite,
            metadata={"sha256": digest, "size": str(size)},
            progress=progress,
        )
    return {"uri": location.uri, "sha256": digest, "bytes": size}


def publish_json(data: dict[str, Any], uri: str, s3: S3Options, *, overwrite: bool = True) -> str:
    """Write a JSON document (a report) to a local path or S3; returns the uri."""
    payload = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
    location = storage.parse_uri(uri)
    if isinstance(location, LocalPath):
        with storage.atomic_local_write(
            location.path, overwrite=overwrite, create_parent=True
        ) as handle:
            handle.write(payload)
        return uri
    assert isinstance(location, S3Object)
    storage.put_bytes(payload, location, s3, overwrite=overwrite, content_type="application/json")
    return location.uri


def report_uri_for(output_uri: str) -> str:
    """Where the full report goes by default: next to the output."""
    return f"{output_uri}.report.json"


def write_termination_log(path: str | None, text: str) -> None:
    """Leave the worker's result for Kubernetes (and so the operator).

    With no path, /dev/termination-log is used when it is writable (it is in a
    pod). Never raises: failing to report must not change the run's outcome.
    """
    target = path
    if target is None:
        if not os.access(DEFAULT_TERMINATION_LOG, os.W_OK):
            return
        target = DEFAULT_TERMINATION_LOG
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
    except Exception as err:  # never raise from the reporting path
        print(f"warning: cannot write the termination log {target}: {err}", file=sys.stderr)
