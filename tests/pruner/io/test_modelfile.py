"""Model files in and out: format sniffing, one-line read errors, atomic writes.

Reading needs no Keras (the tests use Keras only to make the files)."""

from __future__ import annotations

import os
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import h5py
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


def save(model: keras.Model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_round_trip_keeps_weights(model: keras.Model, tmp_path: Path, suffix: str) -> None:
    read = modelfile.read_model(save(model, tmp_path / f"source{suffix}"))
    path = tmp_path / "nested" / f"model{suffix}"  # the directory does not exist yet
    size = modelfile.write_model_atomic(read, read.config, read.weights, path)
    assert size == path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    loaded = keras.saving.load_model(path)
    for want, got in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(want, got)


def test_format_is_read_from_content_not_suffix(model: keras.Model, tmp_path: Path) -> None:
    saved = save(model, tmp_path / "model.keras")
    renamed = saved.rename(tmp_path / "model.bin")
    assert modelfile.check_model_file(renamed) == "keras"
    read = modelfile.read_model(renamed)
    assert read.format == "keras"
    assert sum(w.size for ws in read.weights.values() for w in ws) == model.count_params()


def test_missing_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"missing\.keras does not exist"):
        modelfile.read_model(tmp_path / "missing.keras")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_model_not_found(model: keras.Model, tmp_path: Path) -> None:
    path = save(model, tmp_path / "model.keras")
    path.chmod(0)
    with pytest.raises(ModelNotFound, match="cannot read"):
        modelfile.read_model(path)


def test_directory_is_invalid_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="is a directory"):
        modelfile.read_model(tmp_path)


def test_text_file_is_invalid_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    with pytest.raises(InvalidModel, match="not a Keras model file"):
        modelfile.read_model(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_truncated_file_is_invalid_model(model: keras.Model, tmp_path: Path, suffix: str) -> None:
    path = save(model, tmp_path / f"model{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a half-copied file
    with pytest.raises(InvalidModel, match=re.escape(f"cannot load {path} as a Keras model")):
        modelfile.read_model(path)


def test_truncated_keras_zip_says_damaged_not_missing(model: keras.Model, tmp_path: Path) -> None:
    # Keras itself reports a zip without its end directory as "File not found".
    path = save(model, tmp_path / "model.keras")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InvalidModel) as caught:
        modelfile.inspect_model_file(path)  # before anything reads the archive
    assert "damaged (truncated or corrupt)" in str(caught.value)
    assert "not found" not in str(caught.value).lower()


def test_unknown_custom_layer_is_read_without_its_code(tmp_path: Path) -> None:
    """Reading runs no layer code, so a custom class reads fine (the core then names the
    layer it has no kind for, see the CLI tests)."""

    class Doubler(keras.layers.Layer):  # local: nothing could import it back
        def call(self, inputs: Any) -> Any:
            return inputs * 2

    inputs = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, keras.layers.Dense(2)(Doubler(name="double")(inputs))).save(path)
    read = modelfile.read_model(path)
    classes = [layer["class_name"] for layer in read.config["config"]["layers"]]
    assert "Doubler" in classes


def test_zip_without_config_is_invalid_model(tmp_path: Path) -> None:
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InvalidModel, match="not a Keras model"):
        modelfile.read_model(path)


def test_weights_only_h5_is_invalid_model(model: keras.Model, tmp_path: Path) -> None:
    weights = tmp_path / "only.weights.h5"
    model.save_weights(weights)
    with pytest.raises(InvalidModel, match="weights only"):
        modelfile.read_model(weights)


def test_encrypted_file_needs_a_key(tmp_path: Path) -> None:
    path = tmp_path / "model.keras.age"
    path.write_bytes(formats.AGE_MAGIC + b"-> scrypt salt 18\n")
    with pytest.raises(KeyRequired, match="age-encrypted"):
        modelfile.read_model(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_models_are_read_without_running_their_code(tmp_path: Path, suffix: str) -> None:
    """Safe mode guards Keras' deserialization, which reading does not do: the Lambda's
    config (and its code, as data) is read and written back untouched."""
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda tensor: tensor * 2, name="double")(inputs)
    path = tmp_path / f"lambda{suffix}"
    keras.Model(inputs, keras.layers.Dense(2)(doubled)).save(path)
    read = modelfile.read_model(path)
    assert "double" in [layer["config"]["name"] for layer in read.config["config"]["layers"]]


def test_output_suffix_must_name_a_format(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"must end in one of \.keras, \.h5"):
        modelfile.output_format(tmp_path / "model.pb")


@pytest.mark.parametrize(("source", "output"), [(".keras", "out.h5"), (".h5", "out.keras")])
def test_output_keeps_the_input_format(
    model: keras.Model, tmp_path: Path, source: str, output: str
) -> None:
    read = modelfile.read_model(save(model, tmp_path / f"model{source}"))
    with pytest.raises(InvalidArgument, match="keeps the input's format"):
        modelfile.check_same_format(read, output, output)
    modelfile.check_same_format(read, f"out{source}", "x")  # the same format is fine


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_is_output_not_writable(model: keras.Model, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    read = modelfile.read_model(save(model, tmp_path / "model.keras"))
    with pytest.raises(OutputNotWritable, match="not writable"):
        modelfile.write_model_atomic(read, read.config, read.weights, locked / "model.keras")


def test_output_under_a_file_is_output_not_writable(model: keras.Model, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    read = modelfile.read_model(save(model, tmp_path / "model.keras"))
    with pytest.raises(OutputNotWritable, match="cannot create output directory"):
        modelfile.write_model_atomic(read, read.config, read.weights, blocker / "model.keras")


def test_failed_write_keeps_the_previous_output(model: keras.Model, tmp_path: Path) -> None:
    read = modelfile.read_model(save(model, tmp_path / "source" / "model.keras"))
    path = tmp_path / "model.keras"
    path.write_bytes(b"previous good model")
    bad = {**read.weights, "head": [np.zeros((2, 2, 2), dtype=np.complex64)] * 2}
    with pytest.raises(ValueError, match="complex64"):
        modelfile.write_model_atomic(read, read.config, bad, path)
    assert path.read_bytes() == b"previous good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "source"]


def test_tao_encrypted_tlt_says_decrypt_with_taos_tools(tmp_path: Path) -> None:
    """A TF1 .tlt is the HDF5 model under TAO's cipher: a 16-byte nonce, then AES-CTR
    ciphertext, so no header at all."""
    path = tmp_path / "resnet18.tlt"
    path.write_bytes(os.urandom(16 + 4096))
    with pytest.raises(InvalidModel) as caught:
        modelfile.read_model(path)
    message = str(caught.value)
    assert "TAO-encrypted .tlt" in message and "decrypt it with TAO's own tools first" in message
    assert "\n" not in message


def test_tao_tf2_tlt_archive_is_not_supported(tmp_path: Path) -> None:
    zipped = tmp_path / "efficientnet-b0_010.tlt"  # an archive holding a zipped SavedModel
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("saved_model.pb", b"\x08\x01")
    tarred = tmp_path / "model.tlt"
    with tarfile.open(tarred, "w") as archive:
        archive.add(zipped, arcname="model.zip")
    for path in (zipped, tarred):
        with pytest.raises(InvalidModel, match=r"TAO TensorFlow 2 \.tlt .* not supported"):
            modelfile.read_model(path)


def test_tao_export_is_no_keras_model(tmp_path: Path) -> None:
    path = tmp_path / "fpenet.etlt"
    name = b"input_face_images:0"
    path.write_bytes(len(name).to_bytes(4, "little") + name + os.urandom(1024))
    with pytest.raises(InvalidModel, match=r"TAO export \(\.etlt.*prune the \.hdf5"):
        modelfile.read_model(path)


def test_a_plain_hdf5_named_tlt_is_read(model: keras.Model, tmp_path: Path) -> None:
    path = save(model, tmp_path / "model.h5").rename(tmp_path / "model.tlt")
    assert modelfile.read_model(path).format == "h5"


def test_a_non_model_hdf5_is_invalid_model(tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(InvalidModel, match="HDF5 file but not a Keras model"):
        modelfile.read_model(path)
