"""`prunejob encrypt|decrypt` through encrypt_main/decrypt_main with real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from prunejob_contract.errors import DecryptionFailed, InvalidArgument, KeyRequired, OutputExists
from pruner.cli.crypto import decrypt_main, encrypt_main
from pruner.io import age, formats
from pruner.io.keys import KEY_ENV

KEY = "cli key: hunter2"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.txt"
    path.write_text(KEY + "\n")
    return path


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.mark.timeout(60)
def test_round_trip_with_key_file(tmp_path: Path, key_file: Path) -> None:
    data = os.urandom(3 * age.CHUNK_SIZE + 5)
    (tmp_path / "model.keras").write_bytes(data)
    enc, dec = tmp_path / "model.keras.age", tmp_path / "back.keras"
    assert (
        encrypt_main(
            ["-i", str(tmp_path / "model.keras"), "-o", str(enc), "--key-file", str(key_file)]
        )
        == 0
    )
    assert formats.file_is_encrypted(enc)
    assert decrypt_main(["-i", str(enc), "-o", str(dec), "--key-file", str(key_file)]) == 0
    assert dec.read_bytes() == data
    assert stat.S_IMODE(dec.stat().st_mode) == 0o600  # decrypted plaintext stays private


@pytest.mark.timeout(60)
def test_round_trip_with_env_key(tmp_path: Path, monkeypatch, encrypt_bytes) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    (tmp_path / "in.age").write_bytes(encrypt_bytes(b"weights", KEY))
    assert decrypt_main(["-i", str(tmp_path / "in.age"), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out").read_bytes() == b"weights"


def test_missing_key(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").write_bytes(b"x")
    assert encrypt_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == (
        KeyRequired.exit_code
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--key-file" in err
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path: Path, key_file: Path, encrypt_bytes) -> None:
    (tmp_path / "in.age").write_bytes(encrypt_bytes(b"new", KEY))
    (tmp_path / "out").write_bytes(b"old")
    args = [
        "-i",
        str(tmp_path / "in.age"),
        "-o",
        str(tmp_path / "out"),
        "--key-file",
        str(key_file),
    ]
    assert decrypt_main(args) == OutputExists.exit_code
    assert (tmp_path / "out").read_bytes() == b"old"
    assert decrypt_main([*args, "--overwrite"]) == 0
    assert (tmp_path / "out").read_bytes() == b"new"


def test_decrypt_refuses_plain_input(tmp_path: Path, key_file: Path, capsys) -> None:
    (tmp_path / "plain.keras").write_bytes(b"PK\x03\x04 not encrypted")
    code = decrypt_main(
        [
            "-i",
            str(tmp_path / "plain.keras"),
            "-o",
            str(tmp_path / "out"),
            "--key-file",
            str(key_file),
        ]
    )
    assert code == InvalidArgument.exit_code
    assert "not an age-encrypted file" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["wrong-key", "truncated", "flipped", "reordered"])
def test_failed_decryption_writes_nothing(
    tmp_path: Path, key_file: Path, encrypt_bytes, capsys, damage: str
) -> None:
    blob = bytearray(encrypt_bytes(os.urandom(3 * age.CHUNK_SIZE + 9), KEY))
    sealed = age.ENCRYPTED_CHUNK_SIZE
    payload = len(blob) - (3 * sealed + 9 + age.TAG_SIZE)  # where chunk 0 starts
    if damage == "wrong-key":
        key_file.write_text("another key")
    elif damage == "truncated":
        del blob[-100:]
    elif damage == "flipped":
        blob[payload + sealed + 5] ^= 0x04
    else:
        first, second = payload, payload + sealed
        blob[first:second], blob[second : second + sealed] = (
            blob[second : second + sealed],
            blob[first:second],
        )
    (tmp_path / "in.age").write_bytes(bytes(blob))
    code = decrypt_main(
        [
            "-i",
            str(tmp_path / "in.age"),
            "-o",
            str(tmp_path / "out.keras"),
            "--key-file",
            str(key_file),
        ]
    )
    assert code == DecryptionFailed.exit_code
    err = capsys.readouterr().err
    assert err.startswith("prunejob decrypt: error: ") and err.count("\n") == 1
    assert KEY not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.age", "key.txt"]


def test_bad_arguments(tmp_path: Path, capsys) -> None:
    assert (
        encrypt_main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "-k", "x"]) == 3
    )
    assert "does not exist" in capsys.readouterr().err
    assert encrypt_main(["-i", "a"]) == 2  # argparse: -o is required
    assert encrypt_main(["-i", "a", "-o", "b", "-k", "x", "--key-file", "f"]) == 2


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-i", "a"], "-o/--output"),
        (["-i", "a", "-o", "b", "-k", "x", "--key-file", "f"], "--key-file"),
        (["-i", "a", "-o", "b", "--frob"], "--frob"),
    ],
)
def test_usage_errors_are_one_line(argv: list[str], named: str, capsys) -> None:
    assert decrypt_main(argv) == InvalidArgument.exit_code
    err = capsys.readouterr().err
    assert err.startswith("prunejob decrypt: error: ") and err.count("\n") == 1, err
    assert named in err and "prunejob decrypt --help" in err
