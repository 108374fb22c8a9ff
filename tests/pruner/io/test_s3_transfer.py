"""Uploads and downloads against a real S3 endpoint (moto server) with real boto3."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prunejob_contract.errors import OutputExists, PrunejobError
from pruner.io.s3 import OWNER_METADATA
from pruner.io.transfer import publish_model

pytestmark = pytest.mark.usefixtures("aws_environment")

MiB = 1024 * 1024


def concurrent_writer(s3: Any, key: str) -> Callable[[int], None]:
    """A progress callback that, on the upload's first progress, has another writer put
    b"theirs" at `key`."""
    raced: list[bool] = []

    def other_writer(_: int) -> None:
        if not raced:
            raced.append(True)
            s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"theirs")

    return other_writer


def test_small_round_trip(s3, tmp_path: Path) -> None:
    source = tmp_path / "small.bin"
    source.write_bytes(b"tiny model")
    obj = s3.location("small.bin")
    s3.store.upload(source, obj, overwrite=False, metadata={"sha256": "abc"})
    assert s3.get("small.bin") == b"tiny model"
    head = s3.client.head_object(Bucket=s3.bucket, Key="small.bin")
    assert head["Metadata"] == {"sha256": "abc"}
    s3.store.download(obj, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == b"tiny model"


@pytest.mark.timeout(60)
def test_multipart_upload_and_ranged_download(s3, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB)  # three 5 MiB parts
    (tmp_path / "big.bin").write_bytes(data)
    obj = s3.location("big.bin")
    seen: list[int] = []
    s3.store.upload(tmp_path / "big.bin", obj, overwrite=False, progress=seen.append)
    assert sum(seen) == len(data)
    etag = s3.client.head_object(Bucket=s3.bucket, Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # S3 marks multipart objects with the part count
    s3.store.download(obj, tmp_path / "back.bin")
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )


def test_no_overwrite_without_permission(s3, tmp_path: Path) -> None:
    (tmp_path / "new").write_bytes(b"new")
    s3.client.put_object(Bucket=s3.bucket, Key="out", Body=b"old")
    obj = s3.location("out")
    with pytest.raises(OutputExists, match="--overwrite"):
        s3.store.upload(tmp_path / "new", obj, overwrite=False)
    assert s3.get("out") == b"old"
    s3.store.upload(tmp_path / "new", obj, overwrite=True)
    assert s3.get("out") == b"new"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [1 * MiB, 12 * MiB], ids=["single-put", "multipart"])
def test_concurrent_writer_wins_and_is_not_clobbered(s3, tmp_path: Path, size: int) -> None:
    """The existence check happens first, but the store enforces it atomically too:
    an object that appears during our upload makes it fail with OutputExists."""
    (tmp_path / "ours").write_bytes(os.urandom(size))
    obj = s3.location("race")
    other_writer = concurrent_writer(s3, "race")

    with pytest.raises(OutputExists):
        s3.store.upload(tmp_path / "ours", obj, overwrite=False, progress=other_writer)
    assert s3.get("race") == b"theirs"
    assert s3.pending_uploads() == []


@pytest.mark.timeout(60)
def test_failure_mid_upload_leaves_nothing(s3, tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(12 * MiB))
    obj = s3.location("partial.bin")
    moved: list[int] = []

    def fail_after_first_part(count: int) -> None:
        moved.append(count)
        if sum(moved) >= 5 * MiB:
            raise OSError("disk vanished mid-upload")  # injected failure

    with pytest.raises(PrunejobError, match="disk vanished"):
        s3.store.upload(tmp_path / "big.bin", obj, overwrite=False, progress=fail_after_first_part)
    assert sum(moved) >= 5 * MiB  # the failure really happened after data was sent
    assert "partial.bin" not in s3.object_keys()
    assert s3.pending_uploads() == []  # the multipart upload was aborted


def test_download_replaces_nothing_on_failure(s3, tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_bytes(b"previous")
    with pytest.raises(PrunejobError):
        s3.store.download(s3.location("absent"), target)
    assert target.read_bytes() == b"previous"


# --- the owner's own output (--owner) ------------------------------------------------


def test_owner_is_recorded_and_may_replace_its_own_output(s3, tmp_path: Path) -> None:
    (tmp_path / "first").write_bytes(b"first attempt")
    (tmp_path / "second").write_bytes(b"second attempt")
    obj = s3.location("owned.keras")
    publish_model(tmp_path / "first", obj, None, s3.store, overwrite=False, owner="job-1")
    head = s3.client.head_object(Bucket=s3.bucket, Key="owned.keras")
    assert head["Metadata"][OWNER_METADATA] == "job-1"
    publish_model(tmp_path / "second", obj, None, s3.store, overwrite=False, owner="job-1")
    assert s3.get("owned.keras") == b"second attempt"


@pytest.mark.parametrize("recorded", [None, "job-2"], ids=["no-owner", "other-owner"])
def test_someone_elses_output_still_needs_overwrite(
    s3, tmp_path: Path, recorded: str | None
) -> None:
    metadata = {} if recorded is None else {OWNER_METADATA: recorded}
    s3.client.put_object(Bucket=s3.bucket, Key="taken", Body=b"theirs", Metadata=metadata)
    (tmp_path / "ours").write_bytes(b"ours")
    with pytest.raises(OutputExists, match="--overwrite") as caught:
        publish_model(tmp_path / "ours", s3.location("taken"), None, s3.store, overwrite=False,
                      owner="job-1")  # fmt: skip
    if recorded is not None:
        assert f"published by owner {recorded!r}" in str(caught.value)
    assert s3.get("taken") == b"theirs"


def test_replacing_the_owners_output_loses_to_a_concurrent_writer(s3, tmp_path: Path) -> None:
    """The owner's check comes first, but the replacement is conditional on the ETag it
    saw (If-Match): another write in between makes it fail with OutputExists."""
    s3.client.put_object(
        Bucket=s3.bucket, Key="race", Body=b"ours, earlier", Metadata={OWNER_METADATA: "job-1"}
    )
    (tmp_path / "ours").write_bytes(os.urandom(1 * MiB))
    other_writer = concurrent_writer(s3, "race")

    with pytest.raises(OutputExists, match="written concurrently"):
        publish_model(tmp_path / "ours", s3.location("race"), None, s3.store, overwrite=False,
                      owner="job-1", progress=other_writer)  # fmt: skip
    assert s3.get("race") == b"theirs"


def test_owner_of_a_missing_output_creates_it_exclusively(s3, tmp_path: Path) -> None:
    (tmp_path / "ours").write_bytes(os.urandom(1 * MiB))
    other_writer = concurrent_writer(s3, "fresh")

    with pytest.raises(OutputExists):
        publish_model(tmp_path / "ours", s3.location("fresh"), None, s3.store, overwrite=False,
                      owner="job-1", progress=other_writer)  # fmt: skip
    assert s3.get("fresh") == b"theirs"
