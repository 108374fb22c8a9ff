"""Errors every user-facing entry point turns into one line, a reason code and an exit code.

The reason codes are part of the worker contract: the operator copies them into a
PruneJob's status, so they are stable API (see README "Exit codes and reasons").
"""

from __future__ import annotations


class PrunejobError(Exception):
    """A failure the user can act on; `str(err)` is the one-line message."""

    reason: str = "InternalError"
    exit_code: int = 1


class InvalidArgument(PrunejobError):
    reason = "InvalidArgument"
    exit_code = 2


class ModelNotFound(PrunejobError):
    reason = "ModelNotFound"
    exit_code = 3


class InvalidModel(PrunejobError):
    reason = "InvalidModel"
    exit_code = 4


class UnsupportedLayer(PrunejobError):
    reason = "UnsupportedLayer"
    exit_code = 5


class DecryptionFailed(PrunejobError):
    reason = "DecryptionFailed"
    exit_code = 6


class KeyRequired(PrunejobError):
    reason = "KeyRequired"
    exit_code = 7


class BucketNotFound(PrunejobError):
    reason = "BucketNotFound"
    exit_code = 8


class AccessDenied(PrunejobError):
    reason = "AccessDenied"
    exit_code = 9


class EndpointUnreachable(PrunejobError):
    reason = "EndpointUnreachable"
    exit_code = 10


class OutputExists(PrunejobError):
    reason = "OutputExists"
    exit_code = 11


class OutputNotWritable(PrunejobError):
    reason = "OutputNotWritable"
    exit_code = 12


class VerificationFailed(PrunejobError):
    reason = "VerificationFailed"
    exit_code = 13


ALL_ERRORS: tuple[type[PrunejobError], ...] = (
    PrunejobError,
    InvalidArgument,
    ModelNotFound,
    InvalidModel,
    UnsupportedLayer,
    DecryptionFailed,
    KeyRequired,
    BucketNotFound,
    AccessDenied,
    EndpointUnreachable,
    OutputExists,
    OutputNotWritable,
    VerificationFailed,
)

EXIT_CODES: dict[str, int] = {cls.reason: cls.exit_code for cls in ALL_ERRORS}


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
