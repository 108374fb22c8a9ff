"""The age v1 format: round trips, header rules, tamper detection, work-factor limits."""

from __future__ import annotations

import base64
import io
import os

import pytest

from prunejob_contract.errors import DecryptionFailed
from pruner.io import age, formats
from pruner.io.age import (
    ReorderedChunks,
    TamperedFile,
    TruncatedFile,
    UnsupportedEncryption,
    WorkFactorRefused,
    WrongKey,
)

KEY = "correct horse battery staple"
CHUNK = age.CHUNK_SIZE
SEALED = age.ENCRYPTED_CHUNK_SIZE


def decrypt(blob: bytes, passphrase: str = KEY) -> bytes:
    out = io.BytesIO()
    age.decrypt_stream(io.BufferedReader(io.BytesIO(blob)), out, passphrase)  # type: ignore[arg-type]
    return out.getvalue()


def split(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, payload nonce, chunks) of an age file."""
    end = blob.index(b"\n---") + 1
    end = blob.index(b"\n", end) + 1
    return blob[:end], blob[end : end + 16], blob[end + 16 :]


@pytest.mark.parametrize(
    "size",
    [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 12345],
    ids=lambda s: f"{s}B",
)
def test_round_trip(encrypt_bytes, size: int) -> None:
    data = os.urandom(size)
    blob = encrypt_bytes(data, KEY)
    chunks = max(1, -(-size // CHUNK))
    header, _, body = split(blob)
    assert len(body) == size + 16 * chunks  # one tag per 64 KiB chunk, never an empty tail
    assert len(blob) - len(header) == age.encrypted_size(size)
    assert decrypt(blob) == data


def test_encryptions_are_randomized(encrypt_bytes) -> None:
    first, second = encrypt_bytes(b"same", KEY), encrypt_bytes(b"same", KEY)
    assert first != second
    assert decrypt(first) == decrypt(second) == b"same"


def test_unicode_passphrase(encrypt_bytes) -> None:
    assert decrypt(encrypt_bytes(b"x", "pässwörd ✓"), "pässwörd ✓") == b"x"


def test_default_header_uses_age_default_work_factor() -> None:
    out = io.BytesIO()
    age.encrypt_stream(io.BytesIO(b"model"), out, KEY)  # default work factor: 2^18
    lines = out.getvalue().split(b"\n")
    assert lines[0] == b"age-encryption.org/v1"
    kind, salt, work_factor = lines[1][3:].split(b" ")
    assert (kind, work_factor) == (b"scrypt", b"18")
    assert len(base64.b64decode(salt + b"==")) == 16
    assert lines[3].startswith(b"--- ")
    assert decrypt(out.getvalue()) == b"model"


def test_detects_encrypted_prefix(encrypt_bytes) -> None:
    assert formats.is_encrypted(encrypt_bytes(b"abc", KEY))
    assert not formats.is_encrypted(b"PK\x03\x04 a zip (.keras) file")
    assert not formats.is_encrypted(b"\x89HDF\r\n\x1a\n")


# --- every way decryption must fail, each with its own error ---------------------


@pytest.fixture
def four_chunks(encrypt_bytes) -> bytes:
    return encrypt_bytes(os.urandom(3 * CHUNK + 100), KEY)


def failure(blob: bytes, passphrase: str = KEY) -> DecryptionFailed:
    with pytest.raises(DecryptionFailed) as caught:
        decrypt(blob, passphrase)
    assert KEY not in str(caught.value)
    return caught.value


def test_wrong_key(four_chunks: bytes) -> None:
    err = failure(four_chunks, "not the key")
    assert type(err) is WrongKey
    assert "wrong key" in str(err)
    assert "not the key" not in str(err)


def test_truncated_at_chunk_boundary(four_chunks: bytes) -> None:
    header, nonce, body = split(four_chunks)
    err = failure(header + nonce + body[: 2 * SEALED])
    assert type(err) is TruncatedFile
    assert "without its final chunk" in str(err)


@pytest.mark.parametrize("cut", [1, 10, 100, SEALED - 1])
def test_truncated_inside_last_chunk(four_chunks: bytes, cut: int) -> None:
    assert type(failure(four_chunks[:-cut])) is TruncatedFile


@pytest.mark.parametrize("keep", [5, 30, 60])
def test_truncated_inside_header(four_chunks: bytes, keep: int) -> None:
    assert type(failure(four_chunks[:keep])) is TruncatedFile


def test_truncated_before_payload(four_chunks: bytes) -> None:
    header, nonce, _ = split(four_chunks)
    assert type(failure(header)) is TruncatedFile
    assert type(failure(header + nonce[:7])) is TruncatedFile
    assert type(failure(header + nonce)) is TruncatedFile


@pytest.mark.parametrize("chunk", [0, 1, 2])
def test_flipped_byte_in_payload(four_chunks: bytes, chunk: int) -> None:
    header, nonce, body = split(four_chunks)
    position = chunk * SEALED + 777
    tampered = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]
    err = failure(header + nonce + tampered)
    assert type(err) is TamperedFile
    assert f"chunk {chunk}" in str(err)


def test_flipped_byte_in_header_mac(four_chunks: bytes) -> None:
    header, nonce, body = split(four_chunks)
    mac_start = header.index(b"--- ") + 4
    mac = bytearray(base64.b64decode(header[mac_start:-1] + b"="))
    mac[0] ^= 0x80
    forged = header[:mac_start] + base64.b64encode(bytes(mac)).rstrip(b"=") + b"\n"
    err = failure(forged + nonce + body)
    assert type(err) is TamperedFile
    assert "header" in str(err)


def test_flipped_byte_in_payload_nonce(four_chunks: bytes) -> None:
    header, nonce, body = split(four_chunks)
    assert type(failure(header + bytes([nonce[0] ^ 1]) + nonce[1:] + body)) is TamperedFile


def test_reordered_chunks(four_chunks: bytes) -> None:
    header, nonce, body = split(four_chunks)
    chunks = [body[i : i + SEALED] for i in range(0, len(body), SEALED)]
    chunks[1], chunks[2] = chunks[2], chunks[1]
    err = failure(header + nonce + b"".join(chunks))
    assert type(err) is ReorderedChunks
    assert "chunk 1" in str(err) and "chunk 2" in str(err)


def test_duplicated_chunk(four_chunks: bytes) -> None:
    header, nonce, body = split(four_chunks)
    chunks = [body[i : i + SEALED] for i in range(0, len(body), SEALED)]
    chunks[2] = chunks[0]
    assert type(failure(header + nonce + b"".join(chunks))) is ReorderedChunks


def test_appended_data(four_chunks: bytes) -> None:
    # Bytes after the final chunk shift chunk boundaries: the old final chunk now
    # has a successor and fails as a non-final chunk.
    assert isinstance(failure(four_chunks + b"extra"), DecryptionFailed)


def test_the_failure_cases_are_distinct_classes(four_chunks: bytes) -> None:
    header, nonce, body = split(four_chunks)
    chunks = [body[i : i + SEALED] for i in range(0, len(body), SEALED)]
    flipped = body[:10] + bytes([body[10] ^ 1]) + body[11:]
    cases = {
        "wrong key": failure(four_chunks, "other"),
        "truncated": failure(four_chunks[:-SEALED]),
        "flipped": failure(header + nonce + flipped),
        "reordered": failure(header + nonce + chunks[1] + chunks[0] + b"".join(chunks[2:])),
    }
    assert len({type(err) for err in cases.values()}) == 4
    assert len({str(err) for err in cases.values()}) == 4


# --- header rules -----------------------------------------------------------------


def with_work_factor(blob: bytes, text: bytes) -> bytes:
    header, rest = blob.split(b"\n", 2)[:2], blob.split(b"\n", 2)[2]
    kind, salt, _ = header[1][3:].split(b" ")
    return header[0] + b"\n-> " + b" ".join([kind, salt, text]) + b"\n" + rest


@pytest.mark.timeout(20)  # a refused factor must not start a 2^23+ scrypt
@pytest.mark.parametrize("work_factor", [b"23", b"30", b"64", b"999"])
def test_refuses_absurd_work_factors(encrypt_bytes, work_factor: bytes) -> None:
    blob = with_work_factor(encrypt_bytes(b"x", KEY), work_factor)
    err = failure(blob)
    assert type(err) is WorkFactorRefused
    assert "refusing" in str(err)


@pytest.mark.parametrize("work_factor", [b"0", b"018", b"-1", b"1e3", b"99999999999999999999"])
def test_rejects_malformed_work_factors(encrypt_bytes, work_factor: bytes) -> None:
    blob = with_work_factor(encrypt_bytes(b"x", KEY), work_factor)
    assert isinstance(failure(blob), UnsupportedEncryption)


def test_accepts_age_work_factor_range_low_end(encrypt_bytes) -> None:
    assert decrypt(encrypt_bytes(b"tiny", KEY, work_factor=1)) == b"tiny"


def test_not_an_age_file() -> None:
    err = failure(b"PK\x03\x04 this is a zip file, not age\n")
    assert type(err) is UnsupportedEncryption
    assert "not an age-encrypted file" in str(err)


def test_empty_input_is_not_an_age_file() -> None:
    err = failure(b"")
    assert type(err) is UnsupportedEncryption
    assert "empty" in str(err)


def test_overlong_stanza_line_is_rejected(encrypt_bytes) -> None:
    lines = encrypt_bytes(b"x", KEY).split(b"\n")
    lines[2] = lines[2] * 2  # 86 columns of base64
    assert isinstance(failure(b"\n".join(lines)), UnsupportedEncryption)


def test_armored_files_are_refused_clearly() -> None:
    err = failure(b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n")
    assert "armored" in str(err)


def test_other_recipient_types_are_refused_clearly() -> None:
    # A structurally valid header addressed to an X25519 key, not a passphrase.
    share = base64.b64encode(os.urandom(32)).rstrip(b"=")
    body = base64.b64encode(os.urandom(32)).rstrip(b"=")
    mac = base64.b64encode(os.urandom(32)).rstrip(b"=")
    blob = b"age-encryption.org/v1\n-> X25519 %s\n%s\n--- %s\n" % (share, body, mac)
    err = failure(blob + os.urandom(100))
    assert type(err) is UnsupportedEncryption
    assert "X25519" in str(err) and "passphrase" in str(err)


def test_scrypt_must_be_the_only_stanza(encrypt_bytes) -> None:
    blob = encrypt_bytes(b"x", KEY)
    first_line_end = blob.index(b"\n") + 1
    extra = b"-> X25519 %s\n%s\n" % (
        base64.b64encode(os.urandom(32)).rstrip(b"="),
        base64.b64encode(os.urandom(32)).rstrip(b"="),
    )
    err = failure(blob[:first_line_end] + extra + blob[first_line_end:])
    assert "only stanza" in str(err)


def test_non_canonical_base64_is_rejected(encrypt_bytes) -> None:
    blob = encrypt_bytes(b"x", KEY)
    lines = blob.split(b"\n", 3)
    kind, salt, wf = lines[1][3:].split(b" ")
    padded = b"\n".join([lines[0], b"-> " + b" ".join([kind, salt + b"==", wf]), *lines[2:]])
    assert isinstance(failure(padded), UnsupportedEncryption)
