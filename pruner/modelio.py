"""Model files in and out: `.keras` (zip) and `.h5` (HDF5), with one-line errors.

Loading checks the file before Keras sees it (exists, readable, zip or HDF5 magic)
so the common mistakes get a precise message. Saving is atomic: the model is
written to a temporary file next to the target and renamed over it, so a failure
never leaves a half-written output, nor destroys a good one that was there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prunejob_contract.errors import (
    InvalidArgument,
    InvalidModel,
    KeyRequired,
    ModelNotFound,
    OutputExists,
    OutputNotWritable,
)

if TYPE_CHECKING:
    import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

ModelFormat = Literal["keras", "h5"]
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
AGE_MAGIC = b"age-encryption.org/v1\n"
# Keras picks the format from the suffix, so these are the only ones that can be saved.
SUFFIX_FORMATS: dict[str, ModelFormat] = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}
SUPPORTED_SUFFIXES = ", ".join(SUFFIX_FORMATS)


def sniff_format(path: Path) -> ModelFormat | Literal["age"] | None:
    """What the file's first bytes say it is; None when it is none of ours."""
    with path.open("rb") as handle:
        head = handle.read(len(AGE_MAGIC))
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if head.startswith(AGE_MAGIC):
        return "age"
    return None


def inspect_model_file(path: Path) -> ModelFormat | Literal["age"]:
    """What a model file holds (plaintext format or "age" when encrypted), or
    ModelNotFound / InvalidModel naming the problem."""
    if not path.exists():
        raise ModelNotFound(f"model file {path} does not exist")
    if path.is_dir():
        raise InvalidModel(
            f"model path {path} is a directory; give a .keras or .h5 file "
            "(TensorFlow SavedModel directories are not supported)"
        )
    try:
        found = sniff_format(path)
    except OSError as err:
        raise ModelNotFound(f"cannot read model file {path}: {err.strerror or err}") from None
    if found is None:
        raise InvalidModel(f"{path} is not a Keras model file (neither a .keras zip nor HDF5 .h5)")
    # A zip's directory is at its end: without it (a cut-off copy or download) Keras
    # says "File not found", which sends the user looking in the wrong place.
    if found == "keras" and not zipfile.is_zipfile(path):
        raise InvalidModel(
            f"cannot load {path} as a Keras model: it starts like a .keras zip but is "
            "damaged (truncated or corrupt); copy or export the model again"
        )
    return found


def check_model_file(path: Path) -> ModelFormat:
    """The format of a plaintext model file; KeyRequired when it is encrypted."""
    found = inspect_model_file(path)
    if found == "age":
        raise KeyRequired(
            f"model file {path} is age-encrypted; give its key with --key-file PATH or the "
            "PRUNEJOB_KEY environment variable (or -k)"
        )
    return found


@contextlib.contextmanager
def _keras_named(path: Path, fmt: ModelFormat) -> Iterator[Path]:
    """`path`, or a symlink to it whose suffix tells Keras the format it really has."""
    if SUFFIX_FORMATS.get(path.suffix.lower()) == fmt:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="prunejob-load-") as folder:
        link = Path(folder) / f"model.{'keras' if fmt == 'keras' else 'h5'}"
        link.symlink_to(path.resolve())
        yield link


def _load_error_message(path: Path, err: Exception, safe_mode: bool) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if safe_mode and ("safe_mode" in text or "Lambda" in text):
        return (
            f"model {path} contains a Lambda layer, which Keras refuses to load in safe mode "
            "because it runs code stored in the file; if you trust the file, pass "
            "--no-safe-mode (and exclude the Lambda layer with -el)"
        )
    if isinstance(err, KeyError) and "config.json" in text:
        return f"{path} is a zip file but not a Keras model (no config.json)"
    unknown = re.search(r"Could not locate class '([^']+)'", str(err))  # may be nested
    if unknown:
        return (
            f"cannot load {path} as a Keras model: it uses the custom class "
            f"{unknown.group(1)!r}, which prunejob does not have; give a model built from "
            "Keras' own layers"
        )
    if "No model config found" in text:
        return f"{path} holds weights only, not a model (no model config); save the whole model"
    return f"cannot load {path} as a Keras model: {text}"


def load_model(path: Path, *, safe_mode: bool = True) -> keras.Model:
    """Load a plaintext `.keras`/`.h5` model (not compiled: pruning needs no optimizer)."""
    fmt = check_model_file(path)
    import keras

    try:
        with _keras_named(path, fmt) as keras_path:
            model = keras.saving.load_model(keras_path, compile=False, safe_mode=safe_mode)
    except (ValueError, KeyError, TypeError, OSError, AttributeError) as err:
        raise InvalidModel(_load_error_message(path, err, safe_mode)) from err
    if not isinstance(model, keras.Model):
        raise InvalidModel(f"{path} holds a {type(model).__name__}, not a Keras model")
    return model


def output_format(path: Path) -> ModelFormat:
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgument(
            f"output file {path} must end in one of {SUPPORTED_SUFFIXES} (Keras picks the "
            "format from the suffix)"
        )
    return fmt


def same_file(first: Path, second: Path) -> bool:
    """Whether the two paths name one file, also when it does not exist yet (an output
    and a report both about to be written)."""
    try:
        if first.exists() and second.exists():
            return os.path.samefile(first, second)  # hard links, bind mounts
    except OSError:
        pass
    return first.resolve() == second.resolve()


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
    """A fresh temporary file next to `path` (same suffix, same filesystem, so the final
    rename is atomic); removed unless the caller renamed it away."""
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


def commit_file(staged: Path, path: Path, *, overwrite: bool = True) -> None:
    """Give `staged` the usual permissions and rename it onto `path`.

    The rename is atomic: readers see the old file or the whole new one, and a run
    that dies before it leaves only a temp file that `staged_file` removes. No fsync:
    it would cost ~0.2 s per ResNet50-sized model for durability across power loss,
    which a rerun of the job restores anyway. Without `overwrite` an existing `path`
    is an OutputExists, enforced atomically by link(2) (no clobbering a file that
    appeared during the run).
    """
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o666 & ~umask)  # mkstemp made it 0600; an output is an ordinary file
    try:
        if overwrite:
            os.replace(staged, path)
            return
        try:
            os.link(staged, path)
        except FileExistsError:
            raise OutputExists(
                f"output {path} already exists; pass --overwrite to replace it"
            ) from None
        except OSError:  # a filesystem without hard links: check, then rename
            if path.exists():
                raise OutputExists(
                    f"output {path} already exists; pass --overwrite to replace it"
                ) from None
            os.replace(staged, path)
        else:
            staged.unlink()
    except OSError as err:
        raise OutputNotWritable(f"cannot write output {path}: {err.strerror or err}") from None


def save_model(model: keras.Model, path: Path) -> None:
    """Write `model` to `path` in the format its suffix names (not atomic on its own:
    callers write to a `staged_file` and `commit_file` it)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Keras logs that .h5 is legacy; the user chose it
    try:
        model.save(path)
    except OSError as err:
        raise OutputNotWritable(f"cannot write output {path}: {err.strerror or err}") from None
    finally:
        absl_logger.setLevel(level)


def save_model_atomic(model: keras.Model, path: Path) -> int:
    """Save `model` to `path` atomically; returns the file size in bytes."""
    output_format(path)
    prepare_output_dir(path)
    with staged_file(path) as staged:
        save_model(model, staged)
        size = staged.stat().st_size
        commit_file(staged, path)
    return size
