"""What a file is, from its first bytes or its name: the one place for the magic bytes.

A model is a `.keras` zip or an `.h5`/`.hdf5` HDF5 file, plain or age-encrypted. The
output's format is named by its suffix (and must be the input's), so the suffix a
model file needs is derived here too. TAO's own files are recognised here as well:
a TF1 `.tlt` is the HDF5 model encrypted with TAO's cipher (AES-CTR, a 16-byte
nonce and then ciphertext: no header at all, so only its name and the absence of
any known header tell it), a TF2 `.tlt` is an EFF archive of a zipped SavedModel,
and an `.etlt` is an exported, encrypted ONNX/UFF model (a 4-byte length and the
input node's name, then TAO's ciphertext).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

ModelFormat = Literal["keras", "h5"]
FileFormat = Literal["keras", "h5", "age"]

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
AGE_MAGIC = b"age-encryption.org/v1\n"
GZIP_MAGIC = b"\x1f\x8b"
TAR_MAGIC = b"ustar"  # at offset 257 of a tar archive
TAR_MAGIC_OFFSET = 257
PREFIX_SIZE = TAR_MAGIC_OFFSET + len(TAR_MAGIC)
TAO_SUFFIXES = (".tlt", ".tltb")
TAO_EXPORT_SUFFIX = ".etlt"

AGE_SUFFIX = ".age"
# Keras picks the format from the suffix, so these are the only ones that can be saved.
SUFFIX_FORMATS: dict[str, ModelFormat] = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}
SUPPORTED_SUFFIXES = ", ".join(SUFFIX_FORMATS)
FORMAT_SUFFIXES: dict[ModelFormat, str] = {"keras": ".keras", "h5": ".h5"}


def sniff(prefix: bytes) -> FileFormat | None:
    """What bytes read from the start of a file say it is; None when none of ours."""
    if prefix.startswith(ZIP_MAGIC):
        return "keras"
    if prefix.startswith(HDF5_MAGIC):
        return "h5"
    if prefix.startswith(AGE_MAGIC):
        return "age"
    return None


def read_prefix(path: str | os.PathLike[str]) -> bytes:
    """The first bytes of a file, enough for `sniff`."""
    with open(path, "rb") as handle:
        return handle.read(PREFIX_SIZE)


def sniff_file(path: str | os.PathLike[str]) -> FileFormat | None:
    return sniff(read_prefix(path))


def is_encrypted(prefix: bytes) -> bool:
    """Whether bytes read from the start of a file begin an age v1 file."""
    return prefix.startswith(AGE_MAGIC)


def file_is_encrypted(path: str | os.PathLike[str]) -> bool:
    return is_encrypted(read_prefix(path))


def plain_name(name: str) -> str:
    """A file name without a trailing `.age` (Keras picks the format from the rest)."""
    return name[: -len(AGE_SUFFIX)] if name.endswith(AGE_SUFFIX) else name


def model_suffix(name: str, prefix: bytes) -> str:
    """The extension Keras needs to read a plaintext model: from its name (without a
    trailing .age), else from the content's magic bytes."""
    suffix = Path(plain_name(name)).suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return suffix
    found = sniff(prefix)
    if found == "keras" or found == "h5":
        return FORMAT_SUFFIXES[found]
    return suffix


def is_archive(prefix: bytes) -> bool:
    """Whether the bytes start a tar, gzip or zip archive (what TAO's TF2 `.tlt`
    EFF archives and other non-Keras bundles are)."""
    return (
        prefix.startswith((GZIP_MAGIC, ZIP_MAGIC))
        or prefix[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + len(TAR_MAGIC)] == TAR_MAGIC
    )


def is_tao_name(name: str) -> bool:
    return Path(plain_name(name)).suffix.lower() in TAO_SUFFIXES


def is_tao_export_name(name: str) -> bool:
    return Path(plain_name(name)).suffix.lower() == TAO_EXPORT_SUFFIX


def tao_export_message(shown: str) -> str:
    return (
        f"{shown} looks like a TAO export (.etlt: an encrypted ONNX/UFF model for "
        "TensorRT), not a Keras model; prune the .hdf5 (or .tlt) it was exported from"
    )


def tao_encrypted_message(shown: str) -> str:
    return (
        f"{shown} looks like a TAO-encrypted .tlt model (TAO's own cipher, which is not "
        "published, so prunejob cannot read it); decrypt it with TAO's own tools first and "
        "give the resulting .hdf5 (TAO 5 writes its models as plain .hdf5)"
    )


def tao_archive_message(shown: str) -> str:
    return (
        f"{shown} looks like a TAO TensorFlow 2 .tlt (an EFF archive holding a SavedModel), "
        "which is not supported: prunejob prunes Keras model files (.keras, .h5, .hdf5)"
    )
