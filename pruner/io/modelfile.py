"""Model files in and out without Keras: read into config + weights, written back edited.

A `.keras` archive or a Keras HDF5 file is read into the seam's two values, and written
back as the same file, edited.

    model = read_model(path)             # format, dialect, config, weights (numpy)
    ...                                  # the core edits config and weights
    size = write_model_atomic(model, new_config, new_weights, output)

`config` is the model config as the file stores it (`.keras`: the whole
`config.json`; HDF5: the `model_config` attribute), `weights` maps each layer path
(`name`, `outer/inner` in nested models) to that layer's weights in Keras order.
Writing keeps the input's format, dialect, names, order and every other member and
attribute, replaces the config and the weights' values, and leaves out the
optimizer state and training config (their shapes no longer fit a pruned model):
`ModelFile.dropped` says which of them the input had. Only h5py, numpy, zipfile and
json are used: no TensorFlow, no Keras.

Checking a file first (exists, readable, which magic) gives the common mistakes a
precise one-line message, TAO's encrypted and TF2 `.tlt` files included.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prunejob_contract.errors import (
    InvalidArgument,
    InvalidModel,
    KeyRequired,
    ModelNotFound,
    OutputNotWritable,
)
from pruner.io import kerasv3, legacyh5
from pruner.io.atomic import commit_file, prepare_output_dir, staged_file
from pruner.io.formats import (
    SUFFIX_FORMATS,
    SUPPORTED_SUFFIXES,
    FileFormat,
    ModelFormat,
    is_archive,
    is_tao_export_name,
    is_tao_name,
    plain_name,
    read_prefix,
    sniff,
    tao_archive_message,
    tao_encrypted_message,
    tao_export_message,
)
from pruner.io.h5files import Layout, Weights

Dialect = Literal["keras2", "keras3"]


def inspect_model_file(path: Path, shown: str | None = None) -> FileFormat:
    """What a model file holds (plaintext format or "age" when encrypted), or
    ModelNotFound / InvalidModel naming the problem; `shown` is how messages name
    the file (default: its path)."""
    shown = shown or str(path)
    if not path.exists():
        raise ModelNotFound(f"model file {shown} does not exist")
    if path.is_dir():
        raise InvalidModel(
            f"model path {shown} is a directory; give a .keras or .h5 file "
            "(TensorFlow SavedModel directories are not supported)"
        )
    try:
        prefix = read_prefix(path)
    except OSError as err:
        raise ModelNotFound(f"cannot read model file {shown}: {err.strerror or err}") from None
    found = sniff(prefix)
    tao = is_tao_name(shown) or is_tao_name(path.name)
    if found is None:
        if is_tao_export_name(shown) or is_tao_export_name(path.name):
            raise InvalidModel(tao_export_message(shown))
        if tao and is_archive(prefix):
            raise InvalidModel(tao_archive_message(shown))
        if tao:
            raise InvalidModel(tao_encrypted_message(shown))
        raise InvalidModel(f"{shown} is not a Keras model file (neither a .keras zip nor HDF5 .h5)")
    # A zip's directory is at its end: without it (a cut-off copy or download) the
    # file is unusable, which deserves its own message.
    if found == "keras" and not zipfile.is_zipfile(path):
        raise InvalidModel(
            f"cannot load {shown} as a Keras model: it starts like a .keras zip but is "
            "damaged (truncated or corrupt); copy or export the model again"
        )
    if found == "keras" and tao:
        with zipfile.ZipFile(path) as archive:
            if kerasv3.CONFIG not in archive.namelist():
                raise InvalidModel(tao_archive_message(shown))
    return found


def check_model_file(path: Path, shown: str | None = None) -> ModelFormat:
    """The format of a plaintext model file; KeyRequired when it is encrypted."""
    found = inspect_model_file(path, shown)
    if found == "age":
        raise KeyRequired(
            f"model file {shown or path} is age-encrypted; give its key with --key-file PATH "
            "or the PRUNEJOB_KEY environment variable (or -k)"
        )
    return found


@dataclass
class ModelFile:
    """A model file read into the seam's values, plus what writing it back needs."""

    path: Path  # the plaintext file that was read; writing copies from it
    format: ModelFormat
    keras_version: str | None
    config: dict[str, Any]
    weights: Weights
    layout: Layout = field(repr=False)

    @property
    def dialect(self) -> Dialect:
        """Keras 2 (tf.keras 2.x, TAO's Keras 2.2.4) or Keras 3, by the version the file
        records (by the config's shape when it records none)."""
        if self.keras_version is not None:
            return "keras2" if self.keras_version.startswith(("1.", "2.")) else "keras3"
        return "keras3" if "module" in self.config else "keras2"

    @property
    def dropped(self) -> list[str]:
        """What the input had that the pruned file leaves out ("optimizer state",
        "training config")."""
        return sorted(self.layout.dropped)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def release_weights(self) -> None:
        """Drop the weights read (to free their memory); writing needs only new ones."""
        self.weights = {}


def read_model(path: Path, shown: str | None = None) -> ModelFile:
    """Read a plaintext `.keras` or HDF5 model file; InvalidModel (one line) when it is
    none, or is damaged. `shown` is how messages name the file."""
    fmt = check_model_file(path, shown)
    shown = shown or str(path)
    try:
        if fmt == "keras":
            config, weights, version, keras_layout = kerasv3.read(path)
            return ModelFile(path, fmt, version, config, weights, keras_layout)
        config, weights, version, h5_layout = legacyh5.read(path)
        return ModelFile(path, fmt, version, config, weights, h5_layout)
    except InvalidModel as err:
        raise InvalidModel(str(err).replace(str(path), shown)) from None
    except (OSError, KeyError, ValueError) as err:  # h5py's errors on damaged files
        text = " ".join(str(err).split()) or type(err).__name__
        raise InvalidModel(f"cannot load {shown} as a Keras model: {text}") from None


def output_format(path: Path) -> ModelFormat:
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgument(
            f"output file {path} must end in one of {SUPPORTED_SUFFIXES} (the suffix names "
            "the format)"
        )
    return fmt


def check_same_format(model: ModelFile, output_name: str, shown: str) -> None:
    """The pruned file keeps the input's format: InvalidArgument when the output's name
    (without a trailing .age) says the other one."""
    wanted = output_format(Path(plain_name(output_name)))
    if wanted != model.format:
        suffixes = ".keras" if model.format == "keras" else ".h5 or .hdf5"
        kind = "a .keras archive" if model.format == "keras" else "an HDF5 file"
        raise InvalidArgument(
            f"the input model is {kind}, so the pruned model is one too: name the output "
            f"{shown} with {suffixes} (the pruned file keeps the input's format)"
        )


def _check_weights(model: ModelFile, weights: Weights) -> None:
    counts = model.layout.counts()
    for path, count in counts.items():
        new = weights.get(path)
        if new is None or len(new) != count:
            have = "none" if new is None else len(new)
            raise ValueError(
                f"the pruned weights of layer {path!r} are {have}, the model has {count}"
            )
    extra = sorted(set(weights) - set(counts))
    if extra:
        raise ValueError(f"pruned weights for layers the model lacks: {', '.join(extra)}")


def write_model(model: ModelFile, config: dict[str, Any], weights: Weights, path: Path) -> None:
    """Write `model` edited (its config replaced by `config`, its weights by `weights`)
    to `path`, in the model's own format (not atomic on its own: callers write to a
    `staged_file` and `commit_file` it, or use `write_model_atomic`)."""
    _check_weights(model, weights)
    try:
        if model.format == "keras":
            kerasv3.write(model.path, path, config, weights, model.layout)
        else:
            legacyh5.write(model.path, path, config, weights, model.layout)
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise OutputNotWritable(f"cannot write output {path}: {err.strerror or err}") from None
        raise OutputNotWritable(f"cannot write output {path}: {err}") from None


def write_model_atomic(
    model: ModelFile, config: dict[str, Any], weights: Weights, path: Path
) -> int:
    """Write the edited model to `path` atomically; returns the file size in bytes."""
    output_format(path)
    prepare_output_dir(path)
    with staged_file(path) as staged:
        write_model(model, config, weights, staged)
        size = staged.stat().st_size
        commit_file(staged, path)
    return size
