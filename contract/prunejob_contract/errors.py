"""Reason codes and exit codes: every failure a user can act on, and which are permanent.

The reason codes are part of the worker contract: the operator copies them into a
PruneJob's status, so they are stable API (see README "Exit codes and reason codes").
A *permanent* error is one no retry can fix: the operator's Job fails at once
(podFailurePolicy on its exit code) instead of burning `backoffLimit` retries.
"""

from __future__ import annotations


class PrunejobError(Exception):
    """A failure the user can act on; `str(err)` is the one-line message.

    A subclass that names its own `exit_code` is a new reason code: its `reason` is the
    class name and it is permanent unless it says `permanent=False`. A subclass that names
    none (a more precise case of its parent) keeps its parent's reason, exit code and flag.
    """

    reason: str = "InternalError"
    exit_code: int = 1
    permanent: bool = False  # internal errors may be transient: retried

    def __init_subclass__(
        cls, *, exit_code: int | None = None, permanent: bool = True, **kwargs: object
    ) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.reason = cls.__name__
            cls.exit_code = exit_code
            cls.permanent = permanent


class InvalidArgument(PrunejobError, exit_code=2):
    """A bad flag or value, a bad S3 URI or client configuration, or a missing extra."""


class ModelNotFound(PrunejobError, exit_code=3):
    """The model file does not exist or cannot be read."""


class InvalidModel(PrunejobError, exit_code=4):
    """Not a Keras model (wrong content, weights only, no config), or a Lambda in safe mode."""


class UnsupportedLayer(PrunejobError, exit_code=5):
    """A layer the pruner does not know, or one it cannot prune as configured."""


class DecryptionFailed(PrunejobError, exit_code=6):
    """A wrong key or a damaged encrypted file."""


class KeyRequired(PrunejobError, exit_code=7):
    """The model is encrypted and no key was given."""


class BucketNotFound(PrunejobError, exit_code=8):
    """The S3 bucket is missing."""


class AccessDenied(PrunejobError, exit_code=9):
    """S3 refused access."""


class EndpointUnreachable(PrunejobError, exit_code=10, permanent=False):
    """The S3 endpoint stayed unreachable after retries; retried: the network may come back."""


class OutputExists(PrunejobError, exit_code=11):
    """The output exists (without --overwrite), or is the input (without --force)."""


class OutputNotWritable(PrunejobError, exit_code=12):
    """The output directory cannot be created or written."""


class VerificationFailed(PrunejobError, exit_code=13):
    """--verify found different outputs."""


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
