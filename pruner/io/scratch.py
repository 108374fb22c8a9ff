"""Scratch space for decrypted plaintext: a private directory on tmpfs when it fits."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from prunejob_contract.errors import PrunejobError

SCRATCH_ENV = "PRUNEJOB_SCRATCH_DIR"
SHARED_MEMORY = Path("/dev/shm")


def scratch_root(needed_bytes: int, env: Mapping[str, str] | None = None) -> Path:
    """Where decrypted plaintext may live.

    /dev/shm is tmpfs: the plaintext never reaches a persistent disk (absent swap)
    and is gone once unlinked or when the pod ends. Keras may extract the weights of
    a large .keras archive *next to* the file it loads, so that extraction lands on
    tmpfs too. But pods get a 64 MiB /dev/shm by default, so fall back to the temp
    dir (the operator mounts an emptyDir there) when /dev/shm lacks room;
    PRUNEJOB_SCRATCH_DIR overrides both.
    """
    environ = os.environ if env is None else env
    if environ.get(SCRATCH_ENV):
        return Path(environ[SCRATCH_ENV])
    # Room for the plaintext plus a possible Keras extraction of the weights.
    wanted = 2 * needed_bytes + 16 * 1024 * 1024
    with contextlib.suppress(OSError):
        if os.access(SHARED_MEMORY, os.W_OK | os.X_OK):
            stats = os.statvfs(SHARED_MEMORY)
            if stats.f_bavail * stats.f_frsize >= wanted:
                return SHARED_MEMORY
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def private_directory(needed_bytes: int) -> Iterator[Path]:
    """A fresh 0700 directory in the scratch root, removed with all its content on
    every exit path that unwinds (including files Keras extracted into it). SIGTERM
    unwinds only where the application turns it into an exception, as
    `pruner.app.signals.sigterm_raises` does for every prune run."""
    root = scratch_root(needed_bytes)
    try:
        directory = Path(tempfile.mkdtemp(prefix="prunejob-", dir=root))
    except OSError as err:
        raise PrunejobError(
            f"cannot create a private temporary directory in {root}: {err.strerror}"
        ) from None
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
