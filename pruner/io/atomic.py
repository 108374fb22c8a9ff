"""Atomic local writes: a file appears whole at its path, or not at all.

Everything is written to a temporary file in the target's own directory (same
filesystem, so the final rename is atomic) and then committed: renamed over the
target when replacing is allowed, else hard-linked (link(2) fails if the target
appeared meanwhile, so nothing is ever clobbered). A failure before the commit leaves
only the temporary file, which is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from prunejob_contract.errors import OutputExists, OutputNotWritable


def default_file_mode() -> int:
    """The mode an ordinary new file gets under the current umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _exists_error(path: Path) -> OutputExists:
    return OutputExists(f"output {path} already exists; pass --overwrite to replace it")


def prepare_output_dir(path: Path) -> Path:
    """Create the output's directory if needed; OutputNotWritable when it can't be written."""
    folder = path.parent
    if path.is_dir():
        raise OutputNotWritable(f"output path {path} is a directory; give a file name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputNotWritable(
            f"cannot create output directory {folder}: {err.strerror or err}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputNotWritable(f"output directory {folder} is not writable")
    # access() says yes to root everywhere, /proc and other special filesystems
    # included; creating a file there, as saving will, is the real test.
    try:
        handle, probe = tempfile.mkstemp(prefix=".prunejob-probe.", dir=folder)
    except OSError as err:
        raise OutputNotWritable(
            f"cannot write in output directory {folder}: {err.strerror or err}"
        ) from None
    os.close(handle)
    os.unlink(probe)
    return folder


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A fresh 0600 temporary file next to `path` (same suffix, since Keras picks the
    format from it); removed unless the caller committed it."""
    try:
        handle, name = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent
        )
    except OSError as err:
        raise OutputNotWritable(
            f"cannot write in output directory {path.parent}: {err.strerror or err}"
        ) from None
    os.close(handle)
    staged = Path(name)
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def commit_file(staged: Path, path: Path, *, overwrite: bool = True, private: bool = False) -> None:
    """Move `staged` (from `staged_file`) onto `path`, atomically.

    Readers see the old file or the whole new one. Without `overwrite` an existing
    `path` is an OutputExists, enforced atomically by link(2) (no clobbering a file
    that appeared during the run). `private` keeps the staged file's mode 0600
    (decrypted plaintext); otherwise the file gets the usual umask-based mode.
    No fsync here: callers that stream data fsync it themselves (`atomic_write`).
    """
    if not private:
        staged.chmod(default_file_mode())  # mkstemp made it 0600
    try:
        if overwrite:
            os.replace(staged, path)
            return
        try:
            os.link(staged, path)
        except FileExistsError:
            raise _exists_error(path) from None
        except OSError:  # a filesystem without hard links: check, then rename
            if path.exists():
                raise _exists_error(path) from None
            os.replace(staged, path)
        else:
            staged.unlink()
    except OSError as err:
        raise OutputNotWritable(f"cannot write output {path}: {err.strerror or err}") from None


@contextlib.contextmanager
def atomic_write(
    path: Path, *, overwrite: bool, private: bool = False, create_parent: bool = False
) -> Iterator[IO[bytes]]:
    """Yield a binary file to write; it appears at `path` only if the block succeeds.

    The data is fsynced before the commit. Without `overwrite` an existing `path` is
    an OutputExists, checked first and again atomically at the commit. `private`
    keeps the file mode 0600 (decrypted plaintext). `create_parent` makes a missing
    directory (as `prunejob prune -o` documents).
    """
    parent = path.parent
    if path.is_dir():
        raise OutputNotWritable(f"output {path} is a directory; give a file path")
    if create_parent and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputNotWritable(f"cannot create directory {parent}: {err.strerror}") from None
    if not parent.is_dir():
        raise OutputNotWritable(f"output directory {parent} does not exist; create it first")
    if not overwrite and path.exists():
        raise _exists_error(path)
    with staged_file(path) as staged:
        with open(staged, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        commit_file(staged, path, overwrite=overwrite, private=private)
