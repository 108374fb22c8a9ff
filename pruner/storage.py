"""Where artifacts live: local paths and `s3://bucket/key` objects.

S3 goes through boto3 with its standard configuration (credentials chain,
`AWS_REGION`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`, `AWS_MAX_ATTEMPTS`,
`AWS_RETRY_MODE`) plus what `S3Options` sets explicitly (`--s3-endpoint`). Transfers
use s3transfer's managed multipart with parallel parts. Every botocore failure is
mapped to one of our errors with a one-line message.

Writes are all-or-nothing: a local output is written to a temporary file next to
it and renamed; an S3 output is one PutObject or a multipart upload that is
completed only when every part is in (and aborted otherwise), with
`If-None-Match: *` unless overwriting is allowed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prunejob_contract.errors import (
    AccessDenied,
    BucketNotFound,
    EndpointUnreachable,
    InvalidArgument,
    ModelNotFound,
    OutputExists,
    OutputNotWritable,
    PrunejobError,
)

MiB = 1024 * 1024
# S3's bucket naming rules; underscores are accepted too, as some S3-compatible
# stores (and legacy buckets) allow them.
_BUCKET_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]\Z")
_SCHEME = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*)://")

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


@dataclass(frozen=True)
class LocalPath:
    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __str__(self) -> str:
        return self.uri


Location = LocalPath | S3Object


def parse_uri(text: str) -> Location:
    """A local path, or `s3://bucket/key`; anything else is an InvalidArgument."""
    if not text or not text.strip():
        raise InvalidArgument("empty path or URI; give a local path or s3://bucket/key")
    scheme = _SCHEME.match(text)
    if scheme is None:
        if text.lower().startswith("s3:"):
            raise InvalidArgument(f"bad S3 URI {text!r}: write it as s3://bucket/key")
        return LocalPath(Path(text))
    if scheme.group(1) != "s3":
        raise InvalidArgument(
            f"unsupported URI scheme in {text!r}: use a local path or s3://bucket/key"
        )
    bucket, _, key = text[len("s3://") :].partition("/")
    if not _BUCKET_NAME.match(bucket):
        raise InvalidArgument(
            f"bad S3 URI {text!r}: {bucket!r} is not a valid bucket name "
            "(3-63 lowercase letters, digits, dots, hyphens)"
        )
    if not key or key.endswith("/"):
        raise InvalidArgument(f"bad S3 URI {text!r}: name an object, s3://bucket/key")
    return S3Object(bucket, key)


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


def object_exists(client: Any, obj: S3Object) -> bool:
    """Whether the object exists; a missing bucket raises BucketNotFound."""
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=obj.bucket, Key=obj.key)
    except ClientError as err:
        if _error_code(err) in ("404", "NoSuchKey", "NotFound"):
            if not bucket_exists(client, obj):
                raise BucketNotFound(
                    f"S3 bucket {obj.bucket!r} does not exist (for {obj.uri})"
                ) from None
            return False
        raise map_error(err, obj, client, missing="output") from None
    except Exception as err:
        raise map_error(err, obj, client, missing="output") from None
    return True


def head(obj: S3Object, options: S3Options) -> dict[str, Any]:
    """The object's HEAD response (size, metadata); a missing object is ModelNotFound."""
    client = make_client(options)
    try:
        return dict(client.head_object(Bucket=obj.bucket, Key=obj.key))
    except Exception as err:
        raise map_error(err, obj, client, missing="input") from None


def _subscribers(progress: ProgressCallback | None) -> list[Any]:
    """s3transfer subscribers forwarding byte counts to a plain callback."""
    if progress is None:
        return []
    from s3transfer.subscribers import BaseSubscriber

    class Progress(BaseSubscriber):  # type: ignore[misc]
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress(bytes_transferred)

    return [Progress()]


def download(
    obj: S3Object,
    destination: Path,
    options: S3Options,
    *,
    progress: ProgressCallback | None = None,
) -> int:
    """Download `obj` to `destination` (parallel ranged GETs); returns its size."""
    from s3transfer.manager import TransferManager

    client = make_client(options)
    subscribers = _subscribers(progress)
    try:
        with TransferManager(client, _transfer_config(options)) as manager:
            future = manager.download(
                obj.bucket, obj.key, str(destination), subscribers=subscribers
            )
            future.result()
    except Exception as err:
        raise map_error(_unwrap(err), obj, client, missing="input") from None
    return destination.stat().st_size


def _unwrap(err: Exception) -> Exception:
    """s3transfer wraps exhausted retries; report the last underlying error."""
    last = getattr(err, "last_exception", None)
    return last if isinstance(last, Exception) else err


def _require_absent(params: dict[str, Any], **kwargs: Any) -> None:
    params["IfNoneMatch"] = "*"


def upload(
    source: Path,
    obj: S3Object,
    options: S3Options,
    *,
    overwrite: bool,
    metadata: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Upload `source` to `obj`, all or nothing; never replaces an object unless
    `overwrite` (checked up front for a clear early error, and enforced by the
    store with `If-None-Match: *` on the final PUT / CompleteMultipartUpload)."""
    from s3transfer.manager import TransferManager

    client = make_client(options)
    if not overwrite:
        if object_exists(client, obj):
            raise OutputExists(f"output {obj.uri} already exists; pass --overwrite to replace it")
        for operation in ("PutObject", "CompleteMultipartUpload"):
            client.meta.events.register(f"before-parameter-build.s3.{operation}", _require_absent)
    elif not bucket_exists(client, obj):
        raise BucketNotFound(f"S3 bucket {obj.bucket!r} does not exist (for {obj.uri})")
    extra_args = {"Metadata": metadata} if metadata else {}
    subscribers = _subscribers(progress)
    try:
        with TransferManager(client, _transfer_config(options)) as manager:
            future = manager.upload(
                str(source), obj.bucket, obj.key, extra_args=extra_args, subscribers=subscribers
            )
            future.result()
    except Exception as err:
        raise map_error(_unwrap(err), obj, client, missing="output") from None


def put_bytes(
    data: bytes, obj: S3Object, options: S3Options, *, overwrite: bool, content_type: str
) -> None:
    """One small PutObject (reports); same overwrite rule as `upload`."""
    client = make_client(options)
    extra: dict[str, Any] = {} if overwrite else {"IfNoneMatch": "*"}
    try:
        client.put_object(
            Bucket=obj.bucket, Key=obj.key, Body=data, ContentType=content_type, **extra
        )
    except Exception as err:
        raise map_error(_unwrap(err), obj, client, missing="output") from None


# --- local files ------------------------------------------------------------------


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


def _default_file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_local_write(
    path: Path, *, overwrite: bool, private: bool = False, create_parent: bool = False
) -> Iterator[IO[bytes]]:
    """Yield a file to write; it appears at `path` only if the block succeeds.

    The data goes to a hidden temporary file in the same directory (so the final
    rename is atomic); `private` keeps it mode 0600 (decrypted plaintext), else it
    gets the usual umask-based mode. Without `overwrite` an existing `path` is an
    OutputExists, checked first and again atomically with link(2).
    `create_parent` makes a missing directory (as `prunejob prune -o` documents).
    """
    parent = path.parent
    if path.is_dir():
        raise OutputNotWritable(f"output {path} is a directory; give a file path")
    if create_parent and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputNotWritable(f"cannot create directory {parent}: {err.strerror}") from None
    if not parent.is_dir():
        raise OutputNotWritable(f"output directory {parent} does not exist; create it first")
    if not overwrite and path.exists():
        raise OutputExists(f"output {path} already exists; pass --overwrite to replace it")
    try:
        fd, temp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as err:
        raise OutputNotWritable(f"cannot write in {parent}: {err.strerror}") from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if not private:
            os.chmod(temp, _default_file_mode())
        _publish(temp, path, overwrite=overwrite)
    finally:
        temp.unlink(missing_ok=True)


def _publish(temp: Path, path: Path, *, overwrite: bool) -> None:
    try:
        if overwrite:
            os.replace(temp, path)
            return
        try:
            os.link(temp, path)  # fails if `path` appeared meanwhile: no clobbering
        except FileExistsError:
            raise OutputExists(
                f"output {path} already exists; pass --overwrite to replace it"
            ) from None
        except OSError:  # filesystems without hard links
            if path.exists():
                raise OutputExists(
                    f"output {path} already exists; pass --overwrite to replace it"
                ) from None
            os.replace(temp, path)
    except OSError as err:
        raise OutputNotWritable(f"cannot write output {path}: {err.strerror}") from None
