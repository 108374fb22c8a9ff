"""Reason codes and exit codes: every failure a user can act on, and which are permanent.

The reason codes are part of the worker contract: the operator copies them into a
PruneJob's status, so they are stable API (see README "Exit codes and reason codes").
A *permanent* error is one no retry can fix: the operator's Job fails at once
(podFailurePolicy on its exit code) instead of burning `backoffLimit` retries.
"""

from __future__ import annotations


class PrunejobError(Exception):
    """A failure the user can act on; `str(err)` is the one-line message."""

    reason: str = "InternalError"
    exit_code: int = 1
    permanent: bool = False  # internal errors may be transient: retried


class InvalidArgument(PrunejobError):
    reason = "InvalidArgument"
    exit_code = 2
    permanent = True


class ModelNotFound(PrunejobError):
    reason = "ModelNotFound"
    exit_code = 3
    permanent = True


class InvalidModel(PrunejobError):
    reason = "InvalidModel"
    exit_code = 4
    permanent = True


class UnsupportedLayer(PrunejobError):
    reason = "UnsupportedLayer"
    exit_code = 5
    permanent = True


class DecryptionFailed(PrunejobError):
    reason = "DecryptionFailed"
    exit_code = 6
    permanent = True


class KeyRequired(PrunejobError):
    reason = "KeyRequired"
    exit_code = 7
    permanent = True


class BucketNotFound(PrunejobError):
    reason = "BucketNotFound"
    exit_code = 8
    permanent = True


class AccessDenied(PrunejobError):
    reason = "AccessDenied"
    exit_code = 9
    permanent = True


class EndpointUnreachable(PrunejobError):
    reason = "EndpointUnreachable"
    exit_code = 10
    permanent = False  # the network may come back: retried


class OutputExists(PrunejobError):
    reason = "OutputExists"
    exit_code = 11
    permanent = True


class OutputNotWritable(PrunejobError):
    reason = "OutputNotWritable"
    exit_code = 12
    permanent = True


class VerificationFailed(PrunejobError):
    reason = "VerificationFailed"
    exit_code = 13
    permanent = True


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
PERMANENT_ERRORS: tuple[type[PrunejobError], ...] = tuple(c for c in ALL_ERRORS if c.permanent)
PERMANENT_REASONS: frozenset[str] = frozenset(cls.reason for cls in PERMANENT_ERRORS)
PERMANENT_EXIT_CODES: tuple[int, ...] = tuple(sorted(cls.exit_code for cls in PERMANENT_ERRORS))

# A run stopped by SIGINT/SIGTERM: no class, its exit code is 128 + the signal number.
INTERRUPTED = "Interrupted"
