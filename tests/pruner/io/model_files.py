"""Helpers for the model-file tests: small Keras 3 and tf.keras models, weights, HDF5 dumps.

Helpers for the model-file tests: small models built with Keras 3 or tf.keras
(Keras 2), what the live model says its weights are, and a dump of an HDF5 file's
content for comparing two files."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import numpy as np


def keras_module(dialect: str) -> ModuleType:
    if dialect == "keras2":
        import tf_keras  # Keras 2 (tf.keras 2.x), the dialect of TAO's and tf.keras' files

        return tf_keras
    import keras

    return keras


def mixed_model(keras: ModuleType, *, compiled: bool = True) -> Any:
    """Every weight layout at once: a TimeDistributed conv, a frozen conv, a Dropout, a
    nested functional model and a nested Sequential (each with a BatchNormalization
    between convs, so trainable and non-trainable weights interleave), a separable
    conv and a Dense head; trained one step so that it has optimizer state."""
    layers = keras.layers
    inner_in = keras.Input((8, 8, 4))
    x = layers.Conv2D(6, 3, padding="same", name="iconv")(inner_in)
    x = layers.BatchNormalization(name="ibn")(x)
    inner = keras.Model(inner_in, layers.Conv2D(6, 1, name="iconv2")(x), name="inner")
    seq = keras.Sequential(
        [
            keras.Input((8, 8, 6)),
            layers.Conv2D(5, 1, name="sconv"),
            layers.BatchNormalization(name="sbn"),
            layers.DepthwiseConv2D(3, padding="same", name="sdw"),
        ],
        name="seq",
    )
    inputs = keras.Input((2, 8, 8, 3), name="frames")
    y = layers.TimeDistributed(layers.Conv2D(4, 3, padding="same", name="tdconv"), name="td")(
        inputs
    )
    y = layers.Reshape((8, 8, 8), name="merge_time")(y)
    y = layers.Conv2D(4, 1, name="frozen")(y)
    y = layers.Dropout(0.1, name="drop")(y)
    y = seq(inner(y))
    y = layers.SeparableConv2D(7, 3, name="sep")(y)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    model = keras.Model(inputs, layers.Dense(3, name="head")(y), name="mixed")
    model.get_layer("frozen").trainable = False
    randomize(model)
    if compiled:
        model.compile(optimizer="adam", loss="mse")
        model.fit(np.ones((2, 2, 8, 8, 3)), np.ones((2, 3)), verbose=0)
    return model


def sequential_model(keras: ModuleType) -> Any:
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(8, 3, name="c1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.Flatten(name="flat"),
            layers.Dense(4, name="head"),
        ],
        name="plain_seq",
    )
    return randomize(model)


def doubly_nested_model(keras: ModuleType) -> Any:
    layers = keras.layers
    deep_in = keras.Input((6,))
    deep = keras.Model(deep_in, layers.Dense(5, name="deep_dense")(deep_in), name="deep")
    mid_in = keras.Input((6,))
    mid_x = layers.BatchNormalization(name="mid_bn")(mid_in)
    mid = keras.Model(mid_in, layers.Dense(4, name="mid_dense")(deep(mid_x)), name="mid")
    inputs = keras.Input((6,))
    return randomize(keras.Model(inputs, layers.Dense(2, name="top")(mid(inputs)), name="outer"))


def randomize(model: Any, seed: int = 0) -> Any:
    """Distinct random values in every weight, so that a mix-up cannot go unseen."""
    rng = np.random.default_rng(seed)
    for _, layer in walk(model):
        values = layer.get_weights()
        if values:
            layer.set_weights([rng.uniform(0.5, 1.5, v.shape).astype(v.dtype) for v in values])
    return model


def walk(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(path, layer) of every non-model layer; nested models as `outer/inner`."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            found += walk(layer, f"{prefix}{layer.name}/")
        else:
            found.append((prefix + layer.name, layer))
    return found


def live_weights(model: Any) -> dict[str, list[np.ndarray]]:
    """What the seam's `weights` must be: layer path -> `layer.get_weights()`."""
    return {path: layer.get_weights() for path, layer in walk(model) if layer.get_weights()}


def h5_content(path: Path, skip: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """Every group, dataset (shape, dtype, bytes) and attribute (value, HDF5 type) of an
    HDF5 file, in the file's order; members whose path starts with `skip` left out."""
    items: list[tuple[Any, ...]] = []
    with h5py.File(path, "r") as handle:
        for name in handle.attrs:
            if name not in skip:
                items.append(_attr("/", handle, name))

        def visit(name: str, obj: Any) -> None:
            if name.startswith(skip):
                return
            if isinstance(obj, h5py.Dataset):
                items.append(("dataset", name, obj.shape, str(obj.dtype), obj[()].tobytes()))
            else:
                items.append(("group", name))
            items.extend(_attr(name, obj, key) for key in obj.attrs)

        handle.visititems(visit)
    return items


def _attr(where: str, obj: Any, name: str) -> tuple[Any, ...]:
    value = obj.attrs[name]
    shown = value.tolist() if isinstance(value, np.ndarray) else value
    return ("attr", where, name, repr(shown), str(obj.attrs.get_id(name).dtype))


def zip_weights(path: Path, folder: Path) -> Path:
    """The `model.weights.h5` of a `.keras` archive, extracted into `folder`."""
    with zipfile.ZipFile(path) as archive:
        return Path(archive.extract("model.weights.h5", folder))


def as_keras_224(path: Path) -> None:
    """Rewrite the file as h5py 2 / TAO's Keras 2.2.4 write it: every string attribute
    fixed-length bytes (`np.bytes_`), not h5py 3's variable-length strings; keras_version
    2.2.4."""
    with h5py.File(path, "a") as handle:

        def fix(obj: Any) -> None:
            for name in list(obj.attrs):
                value = obj.attrs[name]
                if isinstance(value, str):
                    obj.attrs[name] = np.bytes_(value.encode())
                elif isinstance(value, np.ndarray) and value.dtype == object:
                    obj.attrs[name] = np.array([str(v).encode() for v in value])

        fix(handle)
        handle.visititems(lambda _, obj: fix(obj))
        handle.attrs["keras_version"] = np.bytes_(b"2.2.4")
