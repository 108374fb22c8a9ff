"""Where artifacts live: a local path or an `s3://bucket/key` object, parsed once.

Pure, except `same_location`, which asks the filesystem whether two paths name one
file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from prunejob_contract.errors import InvalidArgument

# S3's bucket naming rules; underscores are accepted too, as some S3-compatible
# stores (and legacy buckets) allow them.
_BUCKET_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]\Z")
_SCHEME = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class LocalPath:
    path: Path
    # The path as the user wrote it ("./out.keras"): what reports and messages show.
    text: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    def with_name_suffix(self, suffix: str) -> LocalPath:
        """The location whose name is this one's plus `suffix`."""
        return LocalPath(Path(f"{self}{suffix}"), f"{self}{suffix}")

    def __str__(self) -> str:
        return self.text or str(self.path)


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key

    def with_name_suffix(self, suffix: str) -> S3Object:
        """The object whose key is this one's plus `suffix`."""
        return S3Object(self.bucket, self.key + suffix)

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
        return LocalPath(Path(text), text)
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


def same_file(first: Path, second: Path) -> bool:
    """Whether the two paths name one file, also when it does not exist yet (an output
    and a report both about to be written)."""
    try:
        if first.exists() and second.exists():
            return os.path.samefile(first, second)  # hard links, bind mounts
    except OSError:
        pass
    return first.resolve() == second.resolve()


def same_location(first: Location, second: Location) -> bool:
    if isinstance(first, LocalPath) and isinstance(second, LocalPath):
        return same_file(first.path, second.path)
    return first == second
