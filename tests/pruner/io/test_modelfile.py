"""Model files in and out: format sniffing, one-line load errors, atomic saves."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from prunejob_contract.errors import (
    InvalidArgument,
    InvalidModel,
    KeyRequired,
    ModelNotFound,
    OutputNotWritable,
)
from pruner.io import formats, modelfile

pytestmark = pytest.mark.timeout(120)


def small_model() -> keras.Model:
    inputs = keras.Input((6,), name="features")
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Dense(8, name="hidden")(inputs))
    return keras.Model(inputs, outputs, name="small")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return small_model()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_round_trip_keeps_weights(model: keras.Model, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "nested" / f"model{suffix}"  # the directory does not exist yet
    size = modelfile.save_model_atomic(model, path)
    assert size == path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    loaded = modelfile.load_model(path)
    for want, got in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(want, got)


def test_format_is_read_from_content_not_suffix(model: keras.Model, tmp_path: Path) -> None:
    saved = tmp_path / "model.keras"
    modelfile.save_model_atomic(model, saved)
    renamed = saved.rename(tmp_path / "model.bin")
    assert modelfile.check_model_file(renamed) == "keras"
    assert modelfile.load_model(renamed).count_params() == model.count_params()


def test_missing_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"missing\.keras does not exist"):
        modelfile.load_model(tmp_path / "missing.keras")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_model_not_found(model: keras.Model, tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    modelfile.save_model_atomic(model, path)
    path.chmod(0)
    with pytest.raises(ModelNotFound, match="cannot read"):
        modelfile.load_model(path)


def test_directory_is_invalid_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="is a directory"):
        modelfile.load_model(tmp_path)


def test_text_file_is_invalid_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    with pytest.raises(InvalidModel, match="not a Keras model file"):
        modelfile.load_model(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_truncated_file_is_invalid_model(model: keras.Model, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    modelfile.save_model_atomic(model, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a half-copied file
    with pytest.raises(InvalidModel, match=re.escape(f"cannot load {path} as a Keras model")):
        modelfile.load_model(path)


def test_truncated_keras_zip_says_damaged_not_missing(model: keras.Model, tmp_path: Path) -> None:
    # Keras itself reports a zip without its end directory as "File not found".
    path = tmp_path / "model.keras"
    modelfile.save_model_atomic(model, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InvalidModel) as caught:
        modelfile.inspect_model_file(path)  # before Keras is involved
    assert "damaged (truncated or corrupt)" in str(caught.value)
    assert "not found" not in str(caught.value).lower()


def test_unknown_custom_layer_is_named(tmp_path: Path) -> None:
    class Doubler(keras.layers.Layer):  # local: Keras cannot import it back
        def call(self, inputs: Any) -> Any:
            return inputs * 2

    inputs = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, keras.layers.Dense(2)(Doubler(name="double")(inputs))).save(path)
    # Inside a Functional model Keras reports only "Functional could not be deserialized".
    with pytest.raises(InvalidModel, match="uses the custom class 'Doubler'"):
        modelfile.load_model(path)


def test_zip_without_config_is_invalid_model(tmp_path: Path) -> None:
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InvalidModel, match="not a Keras model"):
        modelfile.load_model(path)


def test_weights_only_h5_is_invalid_model(model: keras.Model, tmp_path: Path) -> None:
    weights = tmp_path / "only.weights.h5"
    model.save_weights(weights)
    with pytest.raises(InvalidModel, match="weights only"):
        modelfile.load_model(weights)


def test_encrypted_file_needs_a_key(tmp_path: Path) -> None:
    path = tmp_path / "model.keras.age"
    path.write_bytes(formats.AGE_MAGIC + b"-> scrypt salt 18\n")
    with pytest.raises(KeyRequired, match="age-encrypted"):
        modelfile.load_model(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_in_safe_mode_says_how_to_load_it(tmp_path: Path, suffix: str) -> None:
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda tensor: tensor * 2, name="double")(inputs)
    path = tmp_path / f"lambda{suffix}"
    keras.Model(inputs, keras.layers.Dense(2)(doubled)).save(path)
    with pytest.raises(InvalidModel, match=r"Lambda layer.*--no-safe-mode"):
        modelfile.load_model(path)
    assert "double" in [layer.name for layer in modelfile.load_model(path, safe_mode=False).layers]


def test_output_suffix_must_name_a_format(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"must end in one of \.keras, \.h5"):
        modelfile.output_format(tmp_path / "model.pb")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_is_output_not_writable(model: keras.Model, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputNotWritable, match="not writable"):
        modelfile.save_model_atomic(model, locked / "model.keras")


def test_output_under_a_file_is_output_not_writable(model: keras.Model, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritable, match="cannot create output directory"):
        modelfile.save_model_atomic(model, blocker / "model.keras")


def test_failed_save_keeps_the_previous_output(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    path.write_bytes(b"previous good model")

    class Exploding(keras.layers.Layer):
        def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
            return inputs

        def get_config(self) -> dict:
            raise RuntimeError("cannot serialize")

    inputs = keras.Input((3,))
    broken = keras.Model(inputs, Exploding()(inputs))
    with pytest.raises(RuntimeError, match="cannot serialize"):
        modelfile.save_model_atomic(broken, path)
    assert path.read_bytes() == b"previous good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
