"""The age v1 file format (age-encryption.org/v1) with the scrypt passphrase recipient.

Only `cryptography` primitives are used: scrypt wraps a random 16-byte file key, an
HMAC-SHA-256 authenticates the text header, and the payload is ChaCha20-Poly1305 in
64 KiB chunks (the STREAM construction: an 11-byte chunk counter and a last-chunk
flag form each nonce). Files we write decrypt with `age -d`; files `age -p` writes
decrypt here.

Encryption and decryption stream with a fixed set of preallocated buffers, so memory
does not grow with the file size; the scrypt key derivation itself needs
128 * r * N bytes (256 MiB at age's default work factor) once, before any payload.

Every error names what is wrong and never includes the passphrase.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from prunejob_contract.errors import DecryptionFailed, InvalidArgument
from pruner.io.formats import AGE_MAGIC as MAGIC


# Why an age file could not be decrypted. All keep the DecryptionFailed reason and
# exit code (stable API for the operator); the class and message say which case it is.
class WrongKey(DecryptionFailed):
    """The passphrase does not unwrap the file key (or the stanza was altered)."""


class TruncatedFile(DecryptionFailed):
    """The ciphertext ends before its authenticated final chunk."""


class TamperedFile(DecryptionFailed):
    """A header MAC or a payload chunk failed authentication."""


class ReorderedChunks(DecryptionFailed):
    """A payload chunk authenticates, but at another position than where it is."""


class UnsupportedEncryption(DecryptionFailed):
    """Not an age v1 passphrase file we accept: other recipients, armor, a bad header,
    or an scrypt work factor outside the accepted range."""


class WorkFactorRefused(UnsupportedEncryption):
    """The header asks for an scrypt work factor above the accepted ceiling (DoS guard)."""


VERSION_PREFIX = b"age-encryption.org/"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
FILE_KEY_SIZE = 16
PAYLOAD_NONCE_SIZE = 16
SCRYPT_SALT_LABEL = b"age-encryption.org/v1/scrypt"
SCRYPT_SALT_SIZE = 16
SCRYPT_R = 8
DEFAULT_WORK_FACTOR = 18  # age's default for writing: N = 2^18, 256 MiB, about 1 s
MIN_WORK_FACTOR = 1
MAX_WORK_FACTOR = 22  # age's default ceiling on reading (4 GiB, ~15 s); more is a DoS
MAX_HEADER_BYTES = 64 * 1024  # a passphrase header is ~150 bytes; bound what we buffer
# On an authentication failure, look this many chunk positions either way for the
# chunk's real position, to tell a reordered chunk from a modified one (error path only).
REORDER_SEARCH_CHUNKS = 1024


class Sink(Protocol):
    """Where output goes: a binary file, or anything with the same `write`."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


_ZERO_NONCE = bytes(12)
_STANZA_COLUMNS = 64
_B64_CHARS = re.compile(rb"\A[A-Za-z0-9+/]*\Z")
_WORK_FACTOR_TEXT = re.compile(rb"\A[1-9][0-9]{0,2}\Z")


def encrypted_size(plain_size: int) -> int:
    """Payload bytes (nonce + chunks) for a plaintext of `plain_size` bytes, header excluded."""
    chunks = max(1, -(-plain_size // CHUNK_SIZE))
    return PAYLOAD_NONCE_SIZE + plain_size + chunks * TAG_SIZE


# --- encodings and key derivation -------------------------------------------------


def _b64encode(raw: bytes) -> bytes:
    return base64.b64encode(raw).rstrip(b"=")


def _b64decode(text: bytes, what: str) -> bytes:
    """Strict unpadded base64: age requires canonical encodings and no '=' padding."""
    if not _B64_CHARS.match(text) or len(text) % 4 == 1:
        raise UnsupportedEncryption(f"age header: {what} is not unpadded base64")
    raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    if _b64encode(raw) != text:
        raise UnsupportedEncryption(f"age header: {what} is not canonical base64")
    return raw


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _scrypt_wrap_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    kdf = Scrypt(salt=SCRYPT_SALT_LABEL + salt, length=32, n=1 << work_factor, r=SCRYPT_R, p=1)
    return kdf.derive(passphrase)


def _passphrase_bytes(passphrase: str) -> bytes:
    if not passphrase:
        raise InvalidArgument("the encryption key is empty; give a non-empty passphrase")
    return passphrase.encode("utf-8")


def _check_work_factor(work_factor: int, max_work_factor: int) -> None:
    if work_factor < MIN_WORK_FACTOR:
        raise UnsupportedEncryption(f"age header: scrypt work factor {work_factor} is invalid")
    if work_factor > max_work_factor:
        memory_mib = (128 * SCRYPT_R << work_factor) >> 20
        raise WorkFactorRefused(
            f"age header asks for scrypt work factor 2^{work_factor} ({memory_mib} MiB of "
            f"memory); refusing anything above 2^{max_work_factor}, as age does, to avoid a "
            "denial of service"
        )


# --- header -----------------------------------------------------------------------


def _wrap_lines(encoded: bytes) -> bytes:
    """A stanza body: 64-column lines, always ending with a shorter (maybe empty) line."""
    lines = [encoded[i : i + _STANZA_COLUMNS] for i in range(0, len(encoded), _STANZA_COLUMNS)]
    if not lines or len(lines[-1]) == _STANZA_COLUMNS:
        lines.append(b"")
    return b"".join(line + b"\n" for line in lines)


def _header_mac(file_key: bytes, header_up_to_dashes: bytes) -> bytes:
    return hmac.digest(_hkdf(file_key, b"", b"header"), header_up_to_dashes, "sha256")


def encode_header(file_key: bytes, passphrase: str, work_factor: int, salt: bytes) -> bytes:
    """The complete text header (version line, one scrypt stanza, MAC line)."""
    if not MIN_WORK_FACTOR <= work_factor <= MAX_WORK_FACTOR:
        raise InvalidArgument(
            f"scrypt work factor must be {MIN_WORK_FACTOR}..{MAX_WORK_FACTOR}, got {work_factor}"
        )
    wrap_key = _scrypt_wrap_key(_passphrase_bytes(passphrase), salt, work_factor)
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
    stanza = b"-> scrypt %s %d\n" % (_b64encode(salt), work_factor) + _wrap_lines(_b64encode(body))
    head = MAGIC + stanza + b"---"
    return head + b" " + _b64encode(_header_mac(file_key, head)) + b"\n"


@dataclass(frozen=True)
class Stanza:
    args: tuple[bytes, ...]
    body: bytes


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes  # the header bytes up to and including "---"


def _read_line(src: BinaryIO, header: bytearray) -> bytes:
    line = src.readline(MAX_HEADER_BYTES + 1)
    header += line
    if len(header) > MAX_HEADER_BYTES:
        raise UnsupportedEncryption(f"age header is longer than {MAX_HEADER_BYTES} bytes")
    if not line.endswith(b"\n"):
        raise TruncatedFile("the age file ends inside its header: the file is truncated")
    return line[:-1]


def read_header(src: BinaryIO) -> Header:
    """Parse the header from a buffered stream, leaving it at the payload's first byte."""
    raw = bytearray()
    first = src.readline(len(MAGIC))
    raw += first
    if first != MAGIC:
        if not first:
            raise UnsupportedEncryption("the input is empty: not an age-encrypted file")
        if first.startswith(ARMOR_BEGIN[: len(first)]):
            raise UnsupportedEncryption(
                "ASCII-armored age files are not supported; re-encrypt without -a/--armor"
            )
        if first.startswith(VERSION_PREFIX) and first.endswith(b"\n"):
            raise UnsupportedEncryption(f"unsupported age format version {first[:-1]!r}")
        if MAGIC.startswith(first):
            raise TruncatedFile("the age file ends inside its header: the file is truncated")
        raise UnsupportedEncryption("not an age-encrypted file (no age-encryption.org/v1 header)")
    stanzas: list[Stanza] = []
    line = _read_line(src, raw)
    while line.startswith(b"-> "):
        args = tuple(line[3:].split(b" "))
        if any(not arg for arg in args):
            raise UnsupportedEncryption("age header: malformed stanza arguments")
        body = bytearray()
        while True:
            body_line = _read_line(src, raw)
            if len(body_line) > _STANZA_COLUMNS:
                raise UnsupportedEncryption("age header: a stanza line is longer than 64 columns")
            body += body_line
            if len(body_line) < _STANZA_COLUMNS:
                break
        stanzas.append(Stanza(args, _b64decode(bytes(body), "stanza body")))
        line = _read_line(src, raw)
    if not line.startswith(b"--- ") or not stanzas:
        raise UnsupportedEncryption("age header: malformed (expected recipient stanzas and a MAC)")
    mac = _b64decode(line[4:], "header MAC")
    if len(mac) != 32:
        raise UnsupportedEncryption("age header: the MAC is not 32 bytes")
    mac_input = bytes(raw[: len(raw) - len(line) - 1 + 3])  # up to and including "---"
    return Header(tuple(stanzas), mac, mac_input)


def unwrap_file_key(header: Header, passphrase: str, *, max_work_factor: int) -> bytes:
    """Check the header is one scrypt stanza, unwrap the file key, verify the MAC."""
    kinds = [stanza.args[0] for stanza in header.stanzas]
    if b"scrypt" not in kinds:
        names = ", ".join(sorted({kind.decode("ascii", "replace") for kind in kinds}))
        raise UnsupportedEncryption(
            f"the file is encrypted to age recipients ({names}), not a passphrase; "
            "prunejob reads passphrase files (age -p)"
        )
    if len(kinds) != 1:
        raise UnsupportedEncryption("age header: an scrypt stanza must be the only stanza")
    stanza = header.stanzas[0]
    if len(stanza.args) != 3:
        raise UnsupportedEncryption("age header: the scrypt stanza needs exactly 2 arguments")
    salt = _b64decode(stanza.args[1], "scrypt salt")
    if len(salt) != SCRYPT_SALT_SIZE:
        raise UnsupportedEncryption("age header: the scrypt salt is not 16 bytes")
    if not _WORK_FACTOR_TEXT.match(stanza.args[2]):
        raise WorkFactorRefused(
            "age header: the scrypt work factor is not a small decimal number; refusing it"
        )
    work_factor = int(stanza.args[2])
    _check_work_factor(work_factor, max_work_factor)
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise UnsupportedEncryption("age header: the scrypt stanza body is not 32 bytes")
    wrap_key = _scrypt_wrap_key(_passphrase_bytes(passphrase), salt, work_factor)
    try:
        file_key = ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        raise WrongKey("wrong key: the passphrase does not decrypt this file") from None
    if not hmac.compare_digest(_header_mac(file_key, header.mac_input), header.mac):
        raise TamperedFile("the age header MAC does not match: the header was modified")
    return file_key


# --- payload ----------------------------------------------------------------------


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _read_full(src: BinaryIO, buffer: memoryview) -> int:
    """Fill `buffer` unless the stream ends first; returns the bytes read."""
    filled = 0
    size = len(buffer)
    while filled < size:
        got = src.readinto(buffer[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    return filled


def _chunks(src: BinaryIO, size: int) -> Iterator[tuple[int, memoryview, bool]]:
    """(position, chunk, is last) for each `size`-byte chunk of the stream, reading one
    chunk ahead: only a full chunk can have a successor, a short read means the end.
    Two buffers, reused: a chunk is valid until the next one is asked for."""
    current, upcoming = memoryview(bytearray(size)), memoryview(bytearray(size))
    filled = _read_full(src, current)
    counter = 0
    while True:
        next_filled = _read_full(src, upcoming) if filled == size else 0
        last = next_filled == 0
        yield counter, current[:filled], last
        if last:
            return
        current, upcoming = upcoming, current
        filled = next_filled
        counter += 1


def encrypt_stream(
    src: BinaryIO,
    dst: Sink,
    passphrase: str,
    *,
    work_factor: int = DEFAULT_WORK_FACTOR,
) -> int:
    """Encrypt `src` to `dst` as an age file; returns the bytes written."""
    file_key = os.urandom(FILE_KEY_SIZE)
    header = encode_header(file_key, passphrase, work_factor, os.urandom(SCRYPT_SALT_SIZE))
    nonce = os.urandom(PAYLOAD_NONCE_SIZE)
    dst.write(header)
    dst.write(nonce)
    written = len(header) + len(nonce)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    sealed = memoryview(bytearray(ENCRYPTED_CHUNK_SIZE))
    for counter, chunk, last in _chunks(src, CHUNK_SIZE):
        out = sealed[: len(chunk) + TAG_SIZE]
        aead.encrypt_into(_chunk_nonce(counter, last), chunk, None, out)
        dst.write(out)
        written += len(out)
    return written


def _diagnose_chunk(
    aead: ChaCha20Poly1305, chunk: memoryview, position: int, at_end: bool
) -> DecryptionFailed:
    """Explain why the chunk at `position` failed authentication (error path only)."""
    if at_end and len(chunk) == ENCRYPTED_CHUNK_SIZE and _opens(aead, chunk, position, False):
        return TruncatedFile(
            f"the age file ends after chunk {position} without its final chunk: "
            "the file is truncated"
        )
    low = max(0, position - REORDER_SEARCH_CHUNKS)
    for other in range(low, position + REORDER_SEARCH_CHUNKS + 1):
        if other != position and any(_opens(aead, chunk, other, last) for last in (False, True)):
            return ReorderedChunks(
                f"chunk {position} of the age payload is chunk {other}: "
                "chunks were reordered or duplicated"
            )
    if at_end and len(chunk) < ENCRYPTED_CHUNK_SIZE:
        return TruncatedFile(
            f"the age file ends inside chunk {position}: the file is truncated "
            "(or its last chunk was modified)"
        )
    return TamperedFile(
        f"chunk {position} of the age payload failed authentication: the file was modified"
    )


def _opens(aead: ChaCha20Poly1305, chunk: memoryview, counter: int, last: bool) -> bool:
    try:
        aead.decrypt(_chunk_nonce(counter, last), chunk, None)
    except InvalidTag:
        return False
    return True


def decrypt_stream(
    src: BinaryIO,
    dst: Sink,
    passphrase: str,
    *,
    max_work_factor: int = MAX_WORK_FACTOR,
) -> int:
    """Decrypt an age file from a buffered stream into `dst`; returns plaintext bytes.

    Plaintext reaches `dst` chunk by chunk before the final chunk is verified, so
    callers that must not expose unauthenticated output write to a private temporary
    file and publish it only when this returns.
    """
    header = read_header(src)
    file_key = unwrap_file_key(header, passphrase, max_work_factor=max_work_factor)
    nonce = src.read(PAYLOAD_NONCE_SIZE)
    if len(nonce) != PAYLOAD_NONCE_SIZE:
        raise TruncatedFile("the age file ends before its payload: the file is truncated")
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    opened = memoryview(bytearray(CHUNK_SIZE))
    total = 0
    for counter, chunk, last in _chunks(src, ENCRYPTED_CHUNK_SIZE):
        if len(chunk) < TAG_SIZE:
            raise TruncatedFile(f"the age file ends inside chunk {counter}: the file is truncated")
        out = opened[: len(chunk) - TAG_SIZE]
        try:
            aead.decrypt_into(_chunk_nonce(counter, last), chunk, None, out)
        except InvalidTag:
            raise _diagnose_chunk(aead, chunk, counter, last) from None
        if last and not out and counter > 0:
            raise TamperedFile("the age payload ends with an empty chunk: the file was modified")
        dst.write(out)
        total += len(out)
    return total
