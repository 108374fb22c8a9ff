"""Small Keras models and weight helpers shared by the pruner tests, the demo and benches.

Import as `from tests.pruner.builders import ...` with the repository root on sys.path
(tests/pruner/conftest.py arranges that for pytest).

The helpers here do not use the pruner: tests compare the pruner's choices with
what these helpers did by hand.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers

# Keras classes whose output filters live on a kernel axis other than the last.
_FILTER_AXIS = {"Conv1DTranspose": -2, "Conv2DTranspose": -2, "Conv3DTranspose": -2}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
FILTER_OWNERS = {
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Dense",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "SeparableConv1D",
    "SeparableConv2D",
    *_DEPTHWISE,
}


def find_layer(model: keras.Model, path: str) -> Any:
    layer: Any = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer


def walk_layers(model: keras.Model, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(path, layer) for every layer, nested models flattened as `outer/inner`."""
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, path + "/")
        else:
            yield path, layer


def randomize_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random kernels, biases and BN scales; BN/LN beta and moving mean 0 so that a zero
    channel stays exactly zero through normalization layers."""
    rng = np.random.default_rng(seed)
    for _, layer in walk_layers(model):
        values = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.name
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"):
                fan_in = max(1, int(np.prod(shape[:-1])))
                value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
            elif name in ("bias", "alpha"):
                value = rng.normal(0.0, 0.1, shape)
            elif name in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "moving_mean"):
                value = np.zeros(shape)
            else:
                value = w.numpy()
            values.append(np.asarray(value, dtype=w.dtype))
        if values:
            layer.set_weights(values)
    return model


def zero_filters(model: keras.Model, filters: Mapping[str, Sequence[int]]) -> None:
    """Zero the kernel slice and bias of the given output filters (layer path -> indices)."""
    for path, indices in filters.items():
        layer = find_layer(model, path)
        idx = np.asarray(list(indices), dtype=np.int64)
        cls = type(layer).__name__
        values = []
        for w in layer.weights:
            value = np.array(w.numpy())
            if w.name == "bias":
                value[idx] = 0
            elif cls in _DEPTHWISE and w.name == "kernel":
                value[..., idx, :] = 0
            elif w.name in ("kernel", "pointwise_kernel"):
                axis = _FILTER_AXIS.get(cls, -1)
                index: list[Any] = [slice(None)] * value.ndim
                index[axis] = idx
                value[tuple(index)] = 0
            values.append(value)
        layer.set_weights(values)


def zero_in_every_layer(
    model: keras.Model, chosen: Sequence[int], keep: Iterable[str] = ()
) -> dict[str, list[int]]:
    """Zero filters `chosen` (those that exist) in every filter-owning layer but `keep`.

    Returns the expected kept indices per layer path: a filter that is zero in every
    layer of an equalization group is zero in the merged stat too, whatever the groups.
    """
    keep = set(keep)
    expected: dict[str, list[int]] = {}
    for path, layer in walk_layers(model):
        if type(layer).__name__ not in FILTER_OWNERS:
            continue
        total = _filter_count(layer)
        removed = [i for i in chosen if i < total] if path not in keep else []
        if removed and len(removed) < total:
            zero_filters(model, {path: removed})
        else:
            removed = []
        expected[path] = [i for i in range(total) if i not in removed]
    return expected


def _filter_count(layer: Any) -> int:
    cls = type(layer).__name__
    if cls in _DEPTHWISE:
        return int(layer.weights[0].shape[-2])
    config = layer.get_config()
    return int(config.get("filters") or config["units"])


def run(model: keras.Model, inputs: Any) -> list[np.ndarray]:
    """Outputs of one eager inference call (much cheaper than `predict` for one batch)."""
    out = model(inputs, training=False)
    out = out if isinstance(out, list | tuple) else [out]
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in out]


def max_abs_diff(a: keras.Model, b: keras.Model, inputs: Any) -> float:
    out_a, out_b = run(a, inputs), run(b, inputs)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(out_a, out_b, strict=True))


def max_abs_output(model: keras.Model, inputs: Any) -> float:
    return max(float(np.max(np.abs(o))) for o in run(model, inputs))


def random_inputs(model: keras.Model, batch: int = 2, seed: int = 1) -> Any:
    rng = np.random.default_rng(seed)
    arrays = [
        rng.normal(0.0, 1.0, (batch, *tuple(t.shape[1:]))).astype("float32") for t in model.inputs
    ]
    return arrays[0] if len(arrays) == 1 else arrays


# --- small models ------------------------------------------------------------------------
def small_resnet(input_shape: tuple[int, ...] = (32, 32, 3), classes: int = 10) -> keras.Model:
    """Conv/BN/ReLU stem, two residual blocks (one projection), GAP, Dense."""
    inp = keras.Input(input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", name="stem_conv")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for block, (filters, stride) in enumerate([(32, 1), (64, 2)]):
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"b{block}_conv1")(x)
        y = layers.BatchNormalization(name=f"b{block}_bn1")(y)
        y = layers.ReLU(name=f"b{block}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", name=f"b{block}_conv2")(y)
        y = layers.BatchNormalization(name=f"b{block}_bn2")(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, name=f"b{block}_proj")(shortcut)
            shortcut = layers.BatchNormalization(name=f"b{block}_proj_bn")(shortcut)
        x = layers.Add(name=f"b{block}_add")([shortcut, y])
        x = layers.ReLU(name=f"b{block}_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(classes, name="logits")(x)
    return keras.Model(inp, out, name="small_resnet")


def small_vgg(input_shape: tuple[int, ...] = (16, 16, 3), classes: int = 10) -> keras.Model:
    """Conv/pool stack, Flatten, two Dense layers (the Flatten -> Dense case)."""
    inp = keras.Input(input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    out = layers.Dense(classes, name="logits")(x)
    return keras.Model(inp, out, name="small_vgg")
