"""Every S3 failure maps to its error class, exit code and a one-line message."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prunejob_contract.errors import (
    AccessDenied,
    BucketNotFound,
    EndpointUnreachable,
    InvalidArgument,
    ModelNotFound,
)
from pruner.io import transfer
from pruner.io.locations import S3Object, parse_uri
from pruner.io.s3 import S3Options, S3Store, make_client, map_error
from tests.s3_server import free_port

pytestmark = pytest.mark.usefixtures("aws_environment")


def one_line(err: Exception) -> str:
    text = str(err)
    assert text and "\n" not in text
    return text


def test_input_bucket_missing(s3) -> None:
    with (
        pytest.raises(BucketNotFound) as caught,
        transfer.fetch_model(parse_uri("s3://no-such-bucket-here/model.keras"), None, s3.store),
    ):
        pass
    assert "no-such-bucket-here" in one_line(caught.value)
    assert caught.value.exit_code == 8


def test_input_key_missing(s3) -> None:
    with (
        pytest.raises(ModelNotFound) as caught,
        transfer.fetch_model(s3.location("missing.keras"), None, s3.store),
    ):
        pass
    assert s3.uri("missing.keras") in one_line(caught.value)
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_bucket_missing(s3, tmp_path: Path, overwrite: bool) -> None:
    (tmp_path / "m.keras").write_bytes(b"model")
    with pytest.raises(BucketNotFound):
        transfer.publish_model(
            tmp_path / "m.keras",
            parse_uri("s3://no-such-bucket-here/out.keras"),
            None,
            s3.store,
            overwrite=overwrite,
        )


def test_bad_uri(s3, tmp_path: Path) -> None:
    with (
        pytest.raises(InvalidArgument) as caught,
        transfer.fetch_model(parse_uri("s3://bucket-only"), None, s3.store),
    ):
        pass
    assert caught.value.exit_code == 2
    with pytest.raises(InvalidArgument):
        transfer.publish_model(
            tmp_path / "x", parse_uri("ftp://host/x"), None, s3.store, overwrite=True
        )


@pytest.mark.timeout(60)
def test_endpoint_unreachable_after_retries(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3Store(S3Options(endpoint_url=closed, max_attempts=2, connect_timeout=1))
    with (
        pytest.raises(EndpointUnreachable) as caught,
        transfer.fetch_model(parse_uri("s3://models/m.keras"), None, store),
    ):
        pass
    assert closed in one_line(caught.value)
    assert caught.value.exit_code == 10
    (tmp_path / "m").write_bytes(b"m")
    with pytest.raises(EndpointUnreachable):
        transfer.publish_model(
            tmp_path / "m", parse_uri("s3://models/o"), None, store, overwrite=False
        )


def test_endpoint_from_standard_environment(s3, monkeypatch) -> None:
    """AWS_ENDPOINT_URL_S3 is honoured without --s3-endpoint (boto3's own config)."""
    s3.client.put_object(Bucket=s3.bucket, Key="m.h5", Body=b"\x89HDF\r\n\x1a\nrest")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    store = S3Store(S3Options(max_attempts=1))
    with transfer.fetch_model(s3.location("m.h5"), None, store) as path:
        assert path.read_bytes().startswith(b"\x89HDF")


def test_region_from_aws_region(monkeypatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert make_client(S3Options()).meta.region_name == "eu-west-3"
    assert make_client(S3Options(region="ap-south-1")).meta.region_name == "ap-south-1"


def test_wrong_credentials(s3, monkeypatch) -> None:
    denied = access_denied_fetching(s3, "m.keras")
    assert "credentials" in one_line(denied)
    assert denied.exit_code == 9


def test_access_denied_by_policy(s3, monkeypatch) -> None:
    """A real 403 from the server: an IAM user whose policy allows another bucket."""
    s3.client.put_object(Bucket=s3.bucket, Key="m.keras", Body=b"PK\x03\x04")
    import boto3

    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1")
    user = f"reader-{s3.bucket}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="only-other-bucket",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::other/*"}
                ],
            }
        ),
    )
    credentials = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    denied = access_denied_fetching(s3, "m.keras")
    assert "access denied" in one_line(denied)
    assert s3.uri("m.keras") in str(denied)


def access_denied_fetching(s3: Any, key: str) -> AccessDenied:
    """The AccessDenied that fetching the object `key` raises with moto's IAM
    authentication on."""
    with (
        moto_auth(s3.endpoint),
        pytest.raises(AccessDenied) as caught,
        transfer.fetch_model(s3.location(key), None, s3.store),
    ):
        pass
    return caught.value


@contextlib.contextmanager
def moto_auth(endpoint: str) -> Iterator[None]:
    """Turn on moto's IAM authentication for the block (it is off by default)."""

    def set_no_auth_requests(value: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=value.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form type would hide the body
        )
        urllib.request.urlopen(request, timeout=5).close()

    set_no_auth_requests("0")
    try:
        yield
    finally:
        set_no_auth_requests("inf")


def test_mapping_is_total_for_unknown_client_errors(s3) -> None:
    """Errors we do not classify still become one line naming the object."""
    from botocore.exceptions import ClientError

    err = ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce rate"}}, "GetObject")
    mapped = map_error(err, S3Object(s3.bucket, "k"), s3.client, missing="input")
    assert "SlowDown" in one_line(mapped) and s3.uri("k") in str(mapped)
