"""Interoperability with the reference `age` tool (Debian's package), both ways."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pruner.io import age, formats

KEY = "interop passphrase 42"
SIZES = [0, 1, age.CHUNK_SIZE, 2 * age.CHUNK_SIZE + 333]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_age_decrypts_our_files(age_tool, encrypt_bytes, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "ours.age").write_bytes(encrypt_bytes(data, KEY))
    run = age_tool(["-d", "-o", str(tmp_path / "plain"), str(tmp_path / "ours.age")], KEY)
    assert run.returncode == 0, run.transcript
    assert read_output(tmp_path / "plain") == data


def read_output(path: Path) -> bytes:
    # age opens -o lazily, on its first write: an empty plaintext leaves no file.
    return path.read_bytes() if path.exists() else b""


@pytest.mark.timeout(120)
def test_age_decrypts_our_default_work_factor(age_tool, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    with open(tmp_path / "ours.age", "wb") as out:
        age.encrypt_stream(io.BytesIO(data), out, KEY)
    run = age_tool(["-d", "-o", str(tmp_path / "plain"), str(tmp_path / "ours.age")], KEY)
    assert run.returncode == 0, run.transcript
    assert (tmp_path / "plain").read_bytes() == data


@pytest.mark.timeout(120)
def test_age_rejects_our_file_with_another_passphrase(age_tool, encrypt_bytes, tmp_path) -> None:
    (tmp_path / "ours.age").write_bytes(encrypt_bytes(b"secret", KEY))
    run = age_tool(["-d", "-o", str(tmp_path / "plain"), str(tmp_path / "ours.age")], "nope")
    assert run.returncode != 0
    assert "incorrect passphrase" in run.transcript


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", [0, 2 * age.CHUNK_SIZE + 333], ids=lambda s: f"{s}B")
def test_we_decrypt_age_passphrase_files(age_tool, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "plain").write_bytes(data)
    run = age_tool(["-p", "-o", str(tmp_path / "theirs.age"), str(tmp_path / "plain")], KEY)
    assert run.returncode == 0, run.transcript
    blob = (tmp_path / "theirs.age").read_bytes()
    assert formats.is_encrypted(blob)
    out = io.BytesIO()
    with open(tmp_path / "theirs.age", "rb") as src:
        assert age.decrypt_stream(src, out, KEY) == size
    assert out.getvalue() == data
