"""Fixtures for the S3 tests: a real S3 endpoint, moto in server mode on 127.0.0.1.

One server per test session; every test gets its own bucket, so tests do not see
each other's objects. boto3 talks HTTP to it exactly as it would to AWS or MinIO.
Modules whose tests need the isolated AWS environment without a bucket use
`pytest.mark.usefixtures("aws_environment")` (tests/pruner/conftest.py registers
these fixtures).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pruner.io.locations import S3Object
from pruner.io.s3 import S3Options, S3Store, make_client
from tests.s3_server import moto_server

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Fake credentials, and nothing from the developer's ~/.aws leaking in."""
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    empty.write_text("")
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_SESSION_TOKEN",
        "AWS_RETRY_MODE",
        "AWS_MAX_ATTEMPTS",
        "PRUNEJOB_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))


@dataclass(frozen=True)
class S3Env:
    endpoint: str
    options: S3Options  # small parts and fast retries, so the tests stay quick
    client: Any  # the tests' own client, to set up and inspect the bucket
    bucket: str
    store: S3Store  # what the code under test uses: its own client, made on first use

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def location(self, key: str) -> S3Object:
        return S3Object(self.bucket, key)

    def object_keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listing.get("Contents", [])]

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def pending_uploads(self) -> list[dict[str, Any]]:
        return self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])


@pytest.fixture
def s3(moto_endpoint: str, aws_environment: None) -> S3Env:
    options = S3Options(
        endpoint_url=moto_endpoint,
        max_attempts=2,
        connect_timeout=2,
        read_timeout=10,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,  # S3's minimum part size
        max_concurrency=4,
    )
    client = make_client(options)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Env(moto_endpoint, options, client, bucket, S3Store(options))
