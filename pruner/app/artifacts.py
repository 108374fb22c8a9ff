"""What one run reads and writes: its input, its output and its report.

The input as a local plaintext file, the output staged and then published (or
retracted when the run fails after all), and the report.

Local paths and S3 objects, age-encrypted inputs (detected by their header) and
encrypted outputs (when a key is given) all go through `pruner.io`; the steps of the
pipeline only ever see local plaintext files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pruner.app.preflight import check_output_name, may_replace_output
from pruner.app.request import PruneRequest
from pruner.io import modelfile, transfer
from pruner.io.atomic import commit_file, staged_file
from pruner.io.locations import LocalPath
from pruner.io.s3 import S3Store
from pruner.io.scratch import private_directory


@contextlib.contextmanager
def resolve_input(request: PruneRequest, store: S3Store) -> Iterator[Path]:
    """A local plaintext model path for `request.model`, valid inside the block.

    S3 objects are downloaded and age files decrypted (KeyRequired without a key) into
    a private temporary directory that is removed on every exit path. With a key, a
    plain input is fine: the key then only encrypts the output.
    """
    if isinstance(request.model, LocalPath):
        modelfile.inspect_model_file(request.model.path)  # precise missing / not-a-model
    with transfer.fetch_model(request.model, request.key, store) as plain:
        yield plain


def stages_beside_output(request: PruneRequest) -> bool:
    """A plain local output is saved next to itself and renamed into place; anything
    to be encrypted or uploaded is saved in private scratch space first."""
    return isinstance(request.output, LocalPath) and request.key is None


@contextlib.contextmanager
def stage_output(request: PruneRequest, expected_bytes: int) -> Iterator[Path]:
    """Where to save the plaintext model before it is published.

    A plain local output is staged next to itself (same filesystem: publishing is an
    atomic rename). A model that will be encrypted or uploaded is staged in a private
    temporary directory instead, so its plaintext never lands beside the output (on
    persistent disk) and is removed on every exit path.
    """
    assert request.output is not None
    if stages_beside_output(request):
        assert isinstance(request.output, LocalPath)
        with staged_file(request.output.path) as staged:
            yield staged
        return
    suffix = check_output_name(request.output, request.key)
    with private_directory(expected_bytes) as directory:
        yield directory / f"model{suffix}"


def publish_output(staged: Path, request: PruneRequest, store: S3Store) -> dict[str, Any]:
    """Store the saved model at the output, encrypted when there is a key.

    Returns {"uri", "bytes"} of what was stored, plus "sha256" for S3 and encrypted
    outputs (hashed while encrypting/uploading anyway; a plain local output is only
    renamed into place, and hashing it would cost ~0.3 s per 100 MB).
    """
    location = request.output
    assert location is not None
    replace = may_replace_output(request)
    if stages_beside_output(request):
        assert isinstance(location, LocalPath)
        size = staged.stat().st_size
        commit_file(staged, location.path, overwrite=replace)
        return {"uri": str(location.path), "bytes": size}
    return transfer.publish_model(
        staged, location, request.key, store, overwrite=replace, owner=request.owner
    )


def retract_output(request: PruneRequest, store: S3Store) -> None:
    """Best effort: remove the output this run published, when the run fails after all
    (so the failure leaves nothing, and a retry is not OutputExists)."""
    if may_replace_output(request) or request.output is None:
        return  # whatever was there before is gone already; keep the new one
    with contextlib.suppress(Exception):
        if isinstance(request.output, LocalPath):
            os.unlink(request.output.path)
        else:
            store.delete(request.output)


def publish_report(report: dict[str, Any], request: PruneRequest, store: S3Store) -> str | None:
    """Write the report where `request.report_location` says; returns its uri (or None)."""
    location = request.report_location
    if location is None:
        return None
    return transfer.publish_json(report, location, store, overwrite=True)
