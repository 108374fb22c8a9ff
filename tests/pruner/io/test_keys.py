"""Key resolution: -k, then --key-file, then PRUNEJOB_KEY; errors never show the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunejob_contract.errors import InvalidArgument
from pruner.io.keys import KEY_ENV, resolve_key


def test_order_cli_then_file_then_env(tmp_path: Path, capsys) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    env = {KEY_ENV: "from-env"}
    assert resolve_key("from-cli", str(key_file), env) == "from-cli"
    assert "process list" in capsys.readouterr().err  # -k is discouraged, once, on stderr
    assert resolve_key(None, str(key_file), env) == "from-file"
    assert resolve_key(None, None, env) == "from-env"
    assert resolve_key(None, None, {}) is None


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b"secret\n", "secret"),
        (b"secret\r\n", "secret"),
        (b"secret", "secret"),
        (b"  spaced key \n", "  spaced key "),  # only the line end is dropped
        (b"two\nlines\n", "two\nlines"),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_key_file_content(tmp_path: Path, content: bytes, key: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    assert resolve_key(None, str(path), {}) == key


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"\n"), "is empty"),
        (lambda p: p.write_bytes(b"\xff\xfe secret-bytes"), "not UTF-8"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["missing", "empty", "only-newline", "binary", "directory"],
)
def test_key_file_errors_name_the_file_not_the_key(tmp_path: Path, setup, expected) -> None:
    path = tmp_path / "key.txt"
    setup(path)
    with pytest.raises(InvalidArgument) as caught:
        resolve_key(None, str(path), {})
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)
    assert "secret-bytes" not in str(caught.value)


def test_empty_sources_are_errors_not_missing_keys() -> None:
    # An empty Secret must not silently produce an unencrypted output.
    with pytest.raises(InvalidArgument, match=KEY_ENV):
        resolve_key(None, None, {KEY_ENV: ""})
    with pytest.raises(InvalidArgument, match="-k"):
        resolve_key("", None, {})
