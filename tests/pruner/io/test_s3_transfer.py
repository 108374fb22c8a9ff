"""Uploads and downloads against a real S3 endpoint (moto server) with real boto3."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from prunejob_contract.errors import OutputExists, PrunejobError

pytestmark = pytest.mark.usefixtures("aws_environment")

MiB = 1024 * 1024


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
    raced = []

    def other_writer(_: int) -> None:
        if not raced:
            raced.append(True)
            s3.client.put_object(Bucket=s3.bucket, Key="race", Body=b"theirs")

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
