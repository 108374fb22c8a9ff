"""Model files in and out: `.keras` (zip) and `.h5` (HDF5), with one-line errors.

Loading checks the file before Keras sees it (exists, readable, zip or HDF5 magic)
so the common mistakes get a precise message. `save_model_atomic` writes the model
to a temporary file next to the target and renames it over it (`pruner.io.atomic`),
so a failure never leaves a half-written output, nor destroys a good one that was
there.
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
from typing import TYPE_CHECKING

from prunejob_contract.errors import (
    InvalidArgument,
    InvalidModel,
    KeyRequired,
    ModelNotFound,
    OutputNotWritable,
)
from pruner.io.atomic import commit_file, prepare_output_dir, staged_file
from pruner.io.formats import (
    FORMAT_SUFFIXES,
    SUFFIX_FORMATS,
    SUPPORTED_SUFFIXES,
    FileFormat,
    ModelFormat,
    sniff_file,
)

if TYPE_CHECKING:
    import keras  # annotations only

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported


def inspect_model_file(path: Path) -> FileFormat:
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
        found = sniff_file(path)
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
        link = Path(folder) / f"model{FORMAT_SUFFIXES[fmt]}"
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
    import keras  # lazy: TensorFlow loads with the first model, not with the CLI

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
