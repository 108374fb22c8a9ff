"""Reading model files without Keras, and writing them back as the same file.

Models are built with Keras 3 and with tf.keras (Keras 2) and saved as `.keras` and
HDF5; the reader must give the config the file stores and, per layer path, exactly
what the live model's `layer.get_weights()` returns; writing them back unchanged must
give a file with the same content (minus optimizer state and training config) that
both Keras versions load with the same outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from pruner.io import modelfile
from tests.pruner.io.model_files import (
    as_keras_224,
    doubly_nested_model,
    h5_content,
    keras_module,
    live_weights,
    mixed_model,
    sequential_model,
    zip_weights,
)

pytestmark = pytest.mark.timeout(300)
CASES = [("keras3", ".keras"), ("keras3", ".h5"), ("keras2", ".hdf5"), ("keras2", ".keras")]
BUILDERS = {"mixed": mixed_model, "sequential": sequential_model, "nested": doubly_nested_model}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Any]:
    """(dialect, builder, suffix) -> (live weights, its config as Keras serializes it,
    saved file): each model built once per Keras, saved in both of its formats."""
    folder = tmp_path_factory.mktemp("saved")
    cases = {}
    for dialect in ("keras3", "keras2"):
        keras = keras_module(dialect)
        for builder, build in BUILDERS.items():
            model = build(keras)
            weights, config = live_weights(model), json.loads(model.to_json())
            for suffix in [s for d, s in CASES if d == dialect]:
                path = folder / f"{dialect}-{builder}{suffix}"
                model.save(path)
                cases[(dialect, builder, suffix)] = (weights, config, path)
    return cases


ALL = [(d, b, s) for d, s in CASES for b in BUILDERS]


@pytest.mark.parametrize(("dialect", "builder", "suffix"), ALL)
def test_reads_the_live_models_weights_and_config(
    saved: dict[tuple[str, str, str], Any], dialect: str, builder: str, suffix: str
) -> None:
    weights, config, path = saved[(dialect, builder, suffix)]
    model = modelfile.read_model(path)
    assert model.format == ("keras" if suffix == ".keras" else "h5")
    assert model.dialect == dialect
    assert model.keras_version is not None and model.keras_version[0] == dialect[-1]
    assert list(model.weights) == list(weights)  # every layer with weights, in layer order
    for layer_path, values in weights.items():
        got = model.weights[layer_path]
        assert [v.shape for v in got] == [v.shape for v in values], layer_path
        for want, have in zip(values, got, strict=True):
            assert have.dtype == want.dtype
            np.testing.assert_array_equal(have, want, err_msg=layer_path)
    assert model.config == _stored_config(path)  # as the file stores it, not re-serialized
    assert model.config["class_name"] == config["class_name"]
    assert [layer["config"]["name"] for layer in model.config["config"]["layers"]] == [
        layer["config"]["name"] for layer in config["config"]["layers"]
    ]
    assert model.dropped == (["optimizer state", "training config"] if builder == "mixed" else [])


def _stored_config(path: Path) -> dict[str, Any]:
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    with h5py.File(path) as handle:
        return json.loads(handle.attrs["model_config"])


def _without_training_state(fmt: str) -> tuple[str, ...]:
    return ("optimizer",) if fmt == "keras" else ("optimizer_weights", "training_config")


@pytest.mark.parametrize(("dialect", "builder", "suffix"), ALL)
def test_identity_write_keeps_the_files_content(
    saved: dict[tuple[str, str, str], Any],
    tmp_path: Path,
    dialect: str,
    builder: str,
    suffix: str,
) -> None:
    _, _, path = saved[(dialect, builder, suffix)]
    model = modelfile.read_model(path)
    out = tmp_path / f"copy{suffix}"
    size = modelfile.write_model_atomic(model, model.config, model.weights, out)
    assert size == out.stat().st_size
    skip = _without_training_state(model.format)
    if model.format == "h5":
        assert h5_content(out) == h5_content(path, skip)
        with h5py.File(path) as before, h5py.File(out) as after:
            assert after.attrs["model_config"] == before.attrs["model_config"]  # byte for byte
        return
    with zipfile.ZipFile(path) as before, zipfile.ZipFile(out) as after:
        assert [i.filename for i in after.infolist()] == [i.filename for i in before.infolist()]
        assert after.read("metadata.json") == before.read("metadata.json")
        stored = json.loads(before.read("config.json"))
        if stored.get("compile_config"):
            del stored["compile_config"]
        assert after.read("config.json") == json.dumps(stored).encode()
    assert h5_content(zip_weights(out, tmp_path / "after")) == h5_content(
        zip_weights(path, tmp_path / "before"), skip
    )


LOAD_SCRIPT = """
import json, sys, numpy as np
dialect, pairs = sys.argv[1], sys.argv[2:]
if dialect == "keras2":
    import tf_keras as keras
    load = keras.models.load_model
else:
    import keras
    load = keras.saving.load_model
diffs = {}
for original, copy in zip(pairs[::2], pairs[1::2]):
    a, b = load(original, compile=False), load(copy, compile=False)
    rng = np.random.default_rng(0)
    batch = [rng.standard_normal((2, *t.shape[1:])).astype("float32") for t in a.inputs]
    batch = batch[0] if len(batch) == 1 else batch
    diffs[copy] = float(np.max(np.abs(np.asarray(a(batch)) - np.asarray(b(batch)))))
print(json.dumps(diffs))
"""


def load_in_keras(dialect: str, pairs: list[tuple[Path, Path]]) -> dict[str, float]:
    """Load each (original, copy) in a fresh process with that Keras; the largest
    output difference of each pair on one random batch."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, dialect, *[str(p) for pair in pairs for p in pair]],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("dialect", ["keras3", "keras2"])
def test_identity_copies_load_back_with_the_same_outputs(
    saved: dict[tuple[str, str, str], Any], tmp_path: Path, dialect: str
) -> None:
    pairs = []
    for case_dialect, builder, suffix in ALL:
        if case_dialect == dialect:
            path = saved[(dialect, builder, suffix)][2]
            model = modelfile.read_model(path)
            out = tmp_path / f"{builder}{suffix}"
            modelfile.write_model_atomic(model, model.config, model.weights, out)
            pairs.append((path, out))
    diffs = load_in_keras(dialect, pairs)
    assert diffs == {str(out): 0.0 for _, out in pairs}


def test_writes_new_values_under_the_same_names(
    saved: dict[tuple[str, str, str], Any], tmp_path: Path
) -> None:
    """Sliced weights replace the datasets in place: same dataset paths, new shapes."""
    _, _, path = saved[("keras2", "mixed", ".hdf5")]
    model = modelfile.read_model(path)
    weights = {key: list(values) for key, values in model.weights.items()}
    kernel, bias = weights["inner/iconv"]
    weights["inner/iconv"] = [kernel[..., :4], bias[:4]]
    out = tmp_path / "sliced.hdf5"
    modelfile.write_model_atomic(model, model.config, weights, out)
    with h5py.File(out) as handle:
        assert handle["model_weights/inner/iconv/kernel:0"].shape == (3, 3, 4, 4)
        assert handle["model_weights/inner/iconv/bias:0"].shape == (4,)
        assert list(handle["model_weights/inner"].attrs["weight_names"]) == list(
            h5py.File(path)["model_weights/inner"].attrs["weight_names"]
        )
    again = modelfile.read_model(out)
    np.testing.assert_array_equal(again.weights["inner/iconv"][0], kernel[..., :4])
    np.testing.assert_array_equal(again.weights["inner/ibn"][2], model.weights["inner/ibn"][2])


def test_weights_of_the_wrong_structure_are_refused(
    saved: dict[tuple[str, str, str], Any], tmp_path: Path
) -> None:
    _, _, path = saved[("keras3", "mixed", ".keras")]
    model = modelfile.read_model(path)
    broken = {**model.weights, "head": model.weights["head"][:1]}
    with pytest.raises(ValueError, match="'head' are 1, the model has 2"):
        modelfile.write_model_atomic(model, model.config, broken, tmp_path / "out.keras")
    assert not (tmp_path / "out.keras").exists()


def test_keras_224_style_attributes_keep_their_types(
    saved: dict[tuple[str, str, str], Any], tmp_path: Path
) -> None:
    _, _, path = saved[("keras2", "sequential", ".hdf5")]
    old = tmp_path / "tao.hdf5"
    old.write_bytes(path.read_bytes())
    as_keras_224(old)
    model = modelfile.read_model(old)
    assert model.keras_version == "2.2.4" and model.dialect == "keras2"
    out = tmp_path / "pruned.hdf5"
    config = json.loads(json.dumps(model.config))
    config["config"]["name"] = "renamed_for_the_test"  # a longer model_config string
    modelfile.write_model_atomic(model, config, model.weights, out)
    with h5py.File(old) as before, h5py.File(out) as after:
        for name in ("model_config", "keras_version", "backend"):
            assert after.attrs.get_id(name).dtype.kind == "S"  # still fixed-length bytes
        assert json.loads(after.attrs["model_config"]) == config
        assert after["model_weights"].attrs.get_id("layer_names").dtype == (
            before["model_weights"].attrs.get_id("layer_names").dtype
        )


def test_chunked_layer_names_are_read_and_kept(
    saved: dict[tuple[str, str, str], Any], tmp_path: Path
) -> None:
    """Keras splits a `layer_names` list too long for one object header into
    `layer_names0`, `layer_names1`, ...; tf.keras reads such a file, and so must we."""
    _, _, path = saved[("keras2", "mixed", ".hdf5")]
    split = tmp_path / "split.hdf5"
    split.write_bytes(path.read_bytes())
    with h5py.File(split, "a") as handle:
        group = handle["model_weights"]
        names = group.attrs["layer_names"]
        del group.attrs["layer_names"]
        group.attrs["layer_names0"], group.attrs["layer_names1"] = names[:4], names[4:]
    model = modelfile.read_model(split)
    assert model.weights.keys() == modelfile.read_model(path).weights.keys()
    out = tmp_path / "out.hdf5"
    modelfile.write_model_atomic(model, model.config, model.weights, out)
    with h5py.File(out) as handle:
        assert "layer_names0" in handle["model_weights"].attrs
    assert load_in_keras("keras2", [(path, split)]) == {str(split): 0.0}  # so does Keras
