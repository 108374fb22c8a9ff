"""URIs and S3 options: parsing is pure, errors are one line and name the input."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunejob_contract.errors import InvalidArgument
from pruner.io.locations import LocalPath, S3Object, parse_uri
from pruner.io.s3 import S3Options

pytestmark = pytest.mark.usefixtures("aws_environment")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://models/resnet.keras", S3Object("models", "resnet.keras")),
        ("s3://my.bucket-1/a/b/c.h5.age", S3Object("my.bucket-1", "a/b/c.h5.age")),
        ("s3://abc/key with spaces", S3Object("abc", "key with spaces")),
        ("model.keras", LocalPath(Path("model.keras"))),
        ("/abs/path/model.h5", LocalPath(Path("/abs/path/model.h5"))),
        ("./s3/model.keras", LocalPath(Path("./s3/model.keras"))),
    ],
)
def test_parse(text: str, expected) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("s3://", "bucket"),
        ("s3://bucket", "name an object"),
        ("s3://bucket/", "name an object"),
        ("s3://bucket/dir/", "name an object"),
        ("s3://Bad_Bucket/key", "not a valid bucket name"),
        ("s3://ab/key", "not a valid bucket name"),
        ("s3:/bucket/key", "s3://bucket/key"),
        ("S3://bucket/key", "unsupported URI scheme"),
        ("gs://bucket/key", "unsupported URI scheme"),
        ("https://example.com/model.keras", "unsupported URI scheme"),
    ],
)
def test_bad_uris(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_uri(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert InvalidArgument.exit_code == 2


def test_uri_round_trip() -> None:
    assert parse_uri("s3://bucket/a/b").uri == "s3://bucket/a/b"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoint_url": "localhost:9000"},
        {"retry_mode": "sometimes"},
        {"max_attempts": 0},
        {"multipart_chunksize": 1024},
    ],
)
def test_bad_options(kwargs) -> None:
    with pytest.raises(InvalidArgument):
        S3Options(**kwargs)
