"""Where the encryption key (an age passphrase) comes from.

Order: `-k KEY`, then `--key-file PATH`, then the `PRUNEJOB_KEY` environment
variable. Pods get the key from a mounted Secret file or the environment, never on
a command line (where `ps` would show it). Errors name the source, never the key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from prunejob_contract.errors import InvalidArgument
from prunejob_contract.worker import KEY_ENV

MAX_KEY_FILE_BYTES = 64 * 1024  # a passphrase, not a data file; bounds what we read


def _strip_line_end(text: str) -> str:
    """Drop one trailing newline (editors and `echo` add it); keep other whitespace."""
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def read_key_file(path: str) -> str:
    file = Path(path)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InvalidArgument(f"key file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidArgument(f"key file {path} is a directory; give the file itself") from None
    except PermissionError:
        raise InvalidArgument(f"key file {path} is not readable (permission denied)") from None
    except OSError as err:
        raise InvalidArgument(f"cannot read key file {path}: {err.strerror}") from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise InvalidArgument(f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"key file {path} is not UTF-8 text") from None
    key = _strip_line_end(text)
    if not key:
        raise InvalidArgument(f"key file {path} is empty")
    return key


def resolve_key(
    cli_key: str | None,
    key_file: str | None,
    env: Mapping[str, str] = os.environ,
) -> str | None:
    """The key to use, or None when no source gives one.

    An empty key from any source is an error rather than "no key": silently
    writing an unencrypted output because a Secret was empty would be worse.
    """
    if cli_key is not None:
        if not cli_key:
            raise InvalidArgument("-k was given an empty key")
        print(
            "warning: a key passed with -k is visible to other users in the process list; "
            f"prefer --key-file or {KEY_ENV}",
            file=sys.stderr,
        )
        return cli_key
    if key_file is not None:
        return read_key_file(key_file)
    from_env = env.get(KEY_ENV)
    if from_env is None:
        return None
    if not from_env:
        raise InvalidArgument(f"{KEY_ENV} is set but empty; unset it or give the key")
    return from_env
