"""S3 through boto3: one client per run, transfers, and every failure as one of our errors.

boto3 keeps its standard configuration (credentials chain, `AWS_REGION`,
`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`, `AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`)
plus what `S3Options` sets explicitly (`--s3-endpoint`). An `S3Store` is one run's
way to S3: it creates its boto3 client on first use and shares it between existence
checks, downloads, uploads and reports. Transfers use s3transfer's managed multipart
with parallel parts. Every botocore failure is mapped to one of our errors with a
one-line message.

Uploads are all-or-nothing: one PutObject or a multipart upload that is completed
only when every part is in (and aborted otherwise), with `If-None-Match: *` unless
overwriting is allowed, or `If-Match: <ETag>` when replacing an object this run's
owner published (`OWNER_METADATA`), so that a concurrent writer still wins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunejob_contract.errors import (
    AccessDenied,
    BucketNotFound,
    EndpointUnreachable,
    InvalidArgument,
    ModelNotFound,
    OutputExists,
    PrunejobError,
)
from pruner.io.locations import S3Object

MiB = 1024 * 1024
# The object metadata key (x-amz-meta-prunejob-owner) that records who published it.
OWNER_METADATA = "prunejob-owner"
ProgressCallback = Callable[[int], None]
"""Called with the number of bytes moved since the previous call."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3; `None` fields defer to boto3's standard configuration."""

    endpoint_url: str | None = None
    region: str | None = None
    retry_mode: str | None = None  # None: AWS_RETRY_MODE, else "standard"
    max_attempts: int | None = None  # None: AWS_MAX_ATTEMPTS, else botocore's default
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 8
    addressing_style: str | None = None  # "path" for stores without virtual hosts

    def __post_init__(self) -> None:
        if self.endpoint_url is not None and not re.match(r"\Ahttps?://[^/]", self.endpoint_url):
            raise InvalidArgument(
                f"S3 endpoint {self.endpoint_url!r} is not a URL; give http(s)://host[:port]"
            )
        if self.retry_mode not in (None, "legacy", "standard", "adaptive"):
            raise InvalidArgument(
                f"S3 retry mode {self.retry_mode!r} is not one of standard, adaptive, legacy"
            )
        if self.max_attempts is not None and self.max_attempts < 1:
            raise InvalidArgument(f"S3 max attempts must be >= 1, got {self.max_attempts}")
        if self.multipart_chunksize < 5 * MiB:
            raise InvalidArgument("S3 multipart part size must be at least 5 MiB (S3's minimum)")


# --- S3 client and error mapping ------------------------------------------------


def make_client(options: S3Options) -> Any:
    import boto3  # imported here: local-only runs never pay for botocore's startup
    from botocore.config import Config

    retries: dict[str, Any] = {}
    mode = options.retry_mode or (None if os.environ.get("AWS_RETRY_MODE") else "standard")
    if mode:
        retries["mode"] = mode
    if options.max_attempts is not None:
        retries["total_max_attempts"] = options.max_attempts
    s3_config = {"addressing_style": options.addressing_style} if options.addressing_style else {}
    config = Config(
        retries=retries,  # type: ignore[arg-type]
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=max(10, options.max_concurrency),
        s3=s3_config,  # type: ignore[arg-type]
    )
    # botocore itself reads AWS_DEFAULT_REGION (and the config file) but not
    # AWS_REGION, the variable most SDKs and the contract use.
    region = options.region or os.environ.get("AWS_REGION") or None
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.session.Session(region_name=region)
        return session.client("s3", endpoint_url=options.endpoint_url, config=config)
    except (BotoCoreError, ValueError) as err:
        # Only configuration is read here (no request is made): a bad endpoint, region,
        # profile, config file or AWS_MAX_ATTEMPTS is the user's input, not a bug.
        raise InvalidArgument(
            f"invalid S3 client configuration: {str(err).rstrip('.')}; check --s3-endpoint "
            "and the AWS_* variables (ENDPOINT_URL, REGION, PROFILE, CONFIG_FILE, ...)"
        ) from err


def _transfer_config(options: S3Options) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=options.multipart_threshold,
        multipart_chunksize=options.multipart_chunksize,
        max_concurrency=options.max_concurrency,
    )


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def map_error(err: Exception, obj: S3Object, client: Any, *, missing: str) -> PrunejobError:
    """Translate a boto3/botocore exception about `obj` into our error.

    `missing` says what a missing key means here: "input" -> ModelNotFound; anything
    else -> a generic error (a missing key is no failure for an output).
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(err, PrunejobError):
        return err
    endpoint = client.meta.endpoint_url
    unreachable = (
        EndpointConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
    )
    if isinstance(err, unreachable):
        return EndpointUnreachable(
            f"S3 endpoint {endpoint} is unreachable (after retries) while accessing "
            f"{obj.uri}: {type(err).__name__}; check --s3-endpoint / AWS_ENDPOINT_URL "
            "and the network"
        )
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(
            f"no usable AWS credentials to access {obj.uri}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or another source of boto3's credentials chain)"
        )
    if not isinstance(err, ClientError):
        return PrunejobError(f"S3 error on {obj.uri}: {type(err).__name__}: {err}")
    code = _error_code(err)
    if code in ("NoSuchBucket",):
        return BucketNotFound(f"S3 bucket {obj.bucket!r} does not exist (for {obj.uri})")
    if code in ("NoSuchKey", "404", "NotFound"):
        if not bucket_exists(client, obj):
            return BucketNotFound(f"S3 bucket {obj.bucket!r} does not exist (for {obj.uri})")
        if missing == "input":
            return ModelNotFound(f"S3 object {obj.uri} does not exist")
        return PrunejobError(f"S3 object {obj.uri} disappeared during the operation")
    if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"):
        return AccessDenied(
            f"access denied to {obj.uri}; check the credentials' permissions and the bucket policy"
        )
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return AccessDenied(
            f"S3 rejected the credentials for {obj.uri} ({code}); check AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
        )
    if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
        return OutputExists(
            f"output {obj.uri} already exists (written concurrently); "
            "pass --overwrite to replace it"
        )
    if code in ("InvalidBucketName",):
        return InvalidArgument(f"bad S3 URI {obj.uri}: invalid bucket name")
    message = err.response.get("Error", {}).get("Message", "") or str(err)
    return PrunejobError(f"S3 error on {obj.uri}: {code}: {message}")


def bucket_exists(client: Any, obj: S3Object) -> bool:
    """Whether the bucket exists; other failures are mapped and raised."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=obj.bucket)
    except ClientError as err:
        if _error_code(err) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise map_error(err, obj, client, missing="bucket") from None
    except Exception as err:
        raise map_error(err, obj, client, missing="bucket") from None
    return True


def head_object(client: Any, obj: S3Object) -> dict[str, Any] | None:
    """The object's HEAD response; None when it does not exist. A missing bucket raises
    BucketNotFound."""
    from botocore.exceptions import ClientError

    try:
        head: dict[str, Any] = client.head_object(Bucket=obj.bucket, Key=obj.key)
    except ClientError as err:
        if _error_code(err) in ("404", "NoSuchKey", "NotFound"):
            if not bucket_exists(client, obj):
                raise BucketNotFound(
                    f"S3 bucket {obj.bucket!r} does not exist (for {obj.uri})"
                ) from None
            return None
        raise map_error(err, obj, client, missing="output") from None
    except Exception as err:
        raise map_error(err, obj, client, missing="output") from None
    return head


def object_exists(client: Any, obj: S3Object) -> bool:
    """Whether the object exists; a missing bucket raises BucketNotFound."""
    return head_object(client, obj) is not None


def _subscribers(progress: ProgressCallback | None) -> list[Any]:
    """s3transfer subscribers forwarding byte counts to a plain callback."""
    if progress is None:
        return []
    from s3transfer.subscribers import BaseSubscriber  # lazy, with boto3

    class Progress(BaseSubscriber):  # type: ignore[misc]
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress(bytes_transferred)

    return [Progress()]


def _unwrap(err: Exception) -> Exception:
    """s3transfer wraps exhausted retries; report the last underlying error."""
    last = getattr(err, "last_exception", None)
    return last if isinstance(last, Exception) else err


def _require_absent(params: dict[str, Any], **kwargs: Any) -> None:
    params["IfNoneMatch"] = "*"


def _require_etag(etag: str) -> Callable[..., None]:
    def require(params: dict[str, Any], **kwargs: Any) -> None:
        params["IfMatch"] = etag

    return require


_CREATE_ONLY = ("PutObject", "CompleteMultipartUpload")  # the requests that make an object


class S3Store:
    """One run's way to S3: its options and one boto3 client, created on first use
    (runs that touch no S3 never import boto3)."""

    def __init__(self, options: S3Options | None = None) -> None:
        self.options = options if options is not None else S3Options()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.options)
        return self._client

    def bucket_exists(self, obj: S3Object) -> bool:
        return bucket_exists(self.client, obj)

    def object_exists(self, obj: S3Object) -> bool:
        return object_exists(self.client, obj)

    def owned_etag(self, obj: S3Object, owner: str | None) -> str | None:
        """None when `obj` does not exist; its ETag when it exists and records `owner`
        as who published it (this run may replace it, if it is still that version);
        OutputExists otherwise. A missing bucket raises BucketNotFound."""
        head = head_object(self.client, obj)
        if head is None:
            return None
        recorded = (head.get("Metadata") or {}).get(OWNER_METADATA)
        if owner is not None and recorded == owner:
            return str(head["ETag"])
        by = f" (published by owner {recorded!r})" if recorded else ""
        raise OutputExists(f"output {obj.uri} already exists{by}; pass --overwrite to replace it")

    def head(self, obj: S3Object) -> dict[str, Any]:
        """The object's HEAD response (size, metadata); a missing object is ModelNotFound."""
        client = self.client
        try:
            return dict(client.head_object(Bucket=obj.bucket, Key=obj.key))
        except Exception as err:
            raise map_error(err, obj, client, missing="input") from None

    def download(
        self, obj: S3Object, destination: Path, *, progress: ProgressCallback | None = None
    ) -> int:
        """Download `obj` to `destination` (parallel ranged GETs); returns its size."""
        from s3transfer.manager import TransferManager  # lazy, with boto3

        client = self.client
        subscribers = _subscribers(progress)
        try:
            with TransferManager(client, _transfer_config(self.options)) as manager:
                future = manager.download(
                    obj.bucket, obj.key, str(destination), subscribers=subscribers
                )
                future.result()
        except Exception as err:
            raise map_error(_unwrap(err), obj, client, missing="input") from None
        return destination.stat().st_size

    def upload(
        self,
        source: Path,
        obj: S3Object,
        *,
        overwrite: bool,
        metadata: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
        if_match: str | None = None,
    ) -> None:
        """Upload `source` to `obj`, all or nothing; never replaces an object unless
        `overwrite` (checked up front for a clear early error, and enforced by the
        store with `If-None-Match: *` on the final PUT / CompleteMultipartUpload), or
        unless it is still the version whose ETag is `if_match` (`If-Match`)."""
        from s3transfer.manager import TransferManager  # lazy, with boto3

        client = self.client
        events = client.meta.events
        condition: Callable[..., None] | None = None
        if not overwrite:
            if if_match is not None:
                condition = _require_etag(if_match)
            elif object_exists(client, obj):
                raise OutputExists(
                    f"output {obj.uri} already exists; pass --overwrite to replace it"
                )
            else:
                condition = _require_absent
            # Only for this upload: the client is shared with later requests (the report).
            for operation in _CREATE_ONLY:
                events.register(f"before-parameter-build.s3.{operation}", condition)
        elif not bucket_exists(client, obj):
            raise BucketNotFound(f"S3 bucket {obj.bucket!r} does not exist (for {obj.uri})")
        extra_args = {"Metadata": metadata} if metadata else {}
        subscribers = _subscribers(progress)
        try:
            with TransferManager(client, _transfer_config(self.options)) as manager:
                future = manager.upload(
                    str(source), obj.bucket, obj.key, extra_args=extra_args, subscribers=subscribers
                )
                future.result()
        except Exception as err:
            raise map_error(_unwrap(err), obj, client, missing="output") from None
        finally:
            if condition is not None:
                for operation in _CREATE_ONLY:
                    events.unregister(f"before-parameter-build.s3.{operation}", condition)

    def put_bytes(self, data: bytes, obj: S3Object, *, overwrite: bool, content_type: str) -> None:
        """One small PutObject (reports); same overwrite rule as `upload`."""
        client = self.client
        extra: dict[str, Any] = {} if overwrite else {"IfNoneMatch": "*"}
        try:
            client.put_object(
                Bucket=obj.bucket, Key=obj.key, Body=data, ContentType=content_type, **extra
            )
        except Exception as err:
            raise map_error(_unwrap(err), obj, client, missing="output") from None

    def delete(self, obj: S3Object) -> None:
        self.client.delete_object(Bucket=obj.bucket, Key=obj.key)
