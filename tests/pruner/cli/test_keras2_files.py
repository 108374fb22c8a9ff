"""Tests of TAO's workflow: Keras 2 HDF5 in, pruned Keras 2 HDF5 out, same outputs.

TAO's workflow: a Keras 2 HDF5 model in (tf.keras 2.x, as TAO 5 writes them), the
pruned Keras 2 HDF5 model out, which tf.keras and Keras 3 both load with the
original's outputs.

ResNet18-, MobileNetV1-, VGG- and MobileNetV2-style models are built with tf_keras
and a quarter of each width's channels made dead along their whole path (producer
kernel and bias, depthwise channel and bias, BatchNormalization gamma and beta), so
pruning them must not change what the model computes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from pruner.cli.prune import prune_main
from tests.pruner.io.model_files import as_keras_224, keras_module

pytestmark = pytest.mark.timeout(600)
K2 = keras_module("keras2")
L = K2.layers


def conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, act: str = "relu") -> Any:
    x = L.Conv2D(filters, kernel, strides=stride, padding="same", name=f"{name}_conv")(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    if act == "relu6":
        return L.ReLU(6.0, name=f"{name}_relu6")(x)
    return L.Activation(act, name=f"{name}_{act}")(x) if act != "linear" else x


def dw_bn(x: Any, stride: int, name: str, act: str = "relu") -> Any:
    x = L.DepthwiseConv2D(3, strides=stride, padding="same", name=f"{name}_dw")(x)
    x = L.BatchNormalization(name=f"{name}_dwbn")(x)
    return L.ReLU(6.0, name=f"{name}_relu6")(x) if act == "relu6" else L.ReLU(name=f"{name}_r")(x)


def resnet18_style() -> Any:
    inputs = K2.Input((32, 32, 3))
    x = conv_bn(inputs, 32, 3, 1, "stem")
    for block, (filters, stride) in enumerate([(32, 1), (64, 2), (64, 1)]):
        y = conv_bn(x, filters, 3, stride, f"b{block}a")
        y = conv_bn(y, filters, 3, 1, f"b{block}b", act="linear")
        if stride != 1 or x.shape[-1] != filters:
            x = conv_bn(x, filters, 1, stride, f"b{block}proj", act="linear")
        x = L.ReLU(name=f"b{block}_out")(L.Add(name=f"b{block}_add")([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return K2.Model(inputs, L.Dense(10, name="predictions")(x), name="resnet18_style")


def mobilenet_v1_style() -> Any:
    inputs = K2.Input((32, 32, 3))
    x = conv_bn(inputs, 32, 3, 2, "stem")
    for block, (filters, stride) in enumerate([(64, 1), (64, 2), (128, 1)]):
        x = dw_bn(x, stride, f"b{block}")
        x = conv_bn(x, filters, 1, 1, f"b{block}pw")
    x = L.GlobalAveragePooling2D()(x)
    x = L.Reshape((1, 1, 128))(x)
    x = L.Conv2D(10, 1, name="conv_preds")(x)
    return K2.Model(inputs, L.Flatten()(x), name="mobilenet_v1_style")


def vgg_style() -> Any:
    """VGG blocks (convolutions, then a pool; named as VGG16 names them), then Dense."""
    inputs = K2.Input((16, 16, 3))
    x = inputs
    for block, (filters, convs) in enumerate([(32, 2), (64, 1)], start=1):
        for conv in range(1, convs + 1):
            name = f"block{block}_conv{conv}"
            x = L.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)
        x = L.MaxPooling2D(name=f"block{block}_pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(64, activation="relu", name="fc1")(x)
    return K2.Model(inputs, L.Dense(10, name="predictions")(x), name="vgg_style")


def mobilenet_v2_style() -> Any:
    inputs = K2.Input((32, 32, 3))
    x = conv_bn(inputs, 32, 3, 2, "stem", act="relu6")
    for block, (expand, out, stride) in enumerate([(64, 32, 1), (96, 32, 1), (128, 64, 2)]):
        y = conv_bn(x, expand, 1, 1, f"b{block}expand", act="relu6")
        y = dw_bn(y, stride, f"b{block}", act="relu6")
        y = conv_bn(y, out, 1, 1, f"b{block}project", act="linear")
        x = L.Add(name=f"b{block}_add")([x, y]) if stride == 1 and x.shape[-1] == out else y
    x = conv_bn(x, 128, 1, 1, "head", act="relu6")
    x = L.GlobalAveragePooling2D()(x)
    return K2.Model(inputs, L.Dense(10, name="predictions")(x), name="mobilenet_v2_style")


BUILDERS: dict[str, Callable[[], Any]] = {
    "resnet18": resnet18_style,
    "mobilenet_v1": mobilenet_v1_style,
    "vgg": vgg_style,
    "mobilenet_v2": mobilenet_v2_style,
}


def with_dead_channels(model: Any, seed: int = 0) -> Any:
    """Random weights; then every channel index divisible by 4 dead in every layer but
    the outputs (the same indices everywhere, so channels tied by an Add agree)."""
    rng = np.random.default_rng(seed)
    outputs = {tensor.node.layer.name for tensor in model.outputs} | {"conv_preds"}
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        cls = type(layer).__name__
        new = []
        for value in values:
            if cls == "BatchNormalization" and len(new) >= 2:  # moving mean, variance
                new.append(rng.uniform(0.5, 1.5, value.shape).astype(value.dtype))
            else:
                new.append(rng.normal(0.0, 0.3, value.shape).astype(value.dtype))
        if layer.name not in outputs:
            for index, value in enumerate(new):
                axis = -2 if cls == "DepthwiseConv2D" and index == 0 else -1
                dead = [slice(None)] * value.ndim
                dead[axis] = slice(None, None, 4)
                if cls != "BatchNormalization" or index < 2:  # gamma, beta; not the stats
                    value[tuple(dead)] = 0.0
        layer.set_weights(new)
    return model


def outputs(model: Any, batch: np.ndarray) -> np.ndarray:
    return np.asarray(model(batch, training=False))


# Pruned with --verify too (Keras 3 runs the masked original and the pruned model); the
# rest without, the default path that imports no TensorFlow: the file is the same.
VERIFIED = {"resnet18", "mobilenet_v2"}
# Keras-2-only keys the core drops where Keras 3 refuses them (see pruner.core.dialect).
DROPPABLE = {"groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint"}


def same_dialect(before: dict[str, Any], after: dict[str, Any]) -> None:
    """The pruned config is the input's: Keras 2 nodes and input shapes, the same layers
    in the same order with the same keys (less only the documented droppable ones)."""
    old, new = before["config"]["layers"], after["config"]["layers"]
    assert [layer["name"] for layer in new] == [layer["name"] for layer in old]
    assert "batch_input_shape" in new[0]["config"] and "batch_shape" not in new[0]["config"]
    for was, now in zip(old, new, strict=True):
        assert list(now) == list(was)  # the entry's own keys, in order
        assert set(now["config"]) <= set(was["config"]), now["name"]
        assert set(was["config"]) - set(now["config"]) <= DROPPABLE, now["name"]
        for node in now["inbound_nodes"]:
            assert isinstance(node, list) and all(isinstance(call, list) for call in node)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_keras2_hdf5_in_keras2_hdf5_out(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras  # Keras 3, beside tf_keras in this process

    model = with_dead_channels(BUILDERS[name]())
    source, output = tmp_path / f"{name}.hdf5", tmp_path / f"{name}_pruned.hdf5"
    model.save(source)
    if name == "resnet18":
        as_keras_224(source)  # TAO's own files: h5py 2's fixed-length strings
    report = tmp_path / "report.json"
    args = ["-m", str(source), "-o", str(output), "--report", str(report)]
    verify = name in VERIFIED  # the others take the default path alone, as a user would
    code = prune_main(args + (["--verify"] if verify else []))
    err = capsys.readouterr().err
    assert code == 0, err
    summary = json.loads(report.read_text())
    assert summary["params"]["after"] < summary["params"]["before"]
    assert ("verification" in summary) == verify  # --verify passed: masked original == pruned
    for row in summary["layers"]:  # exactly the dead quarter goes, outputs stay whole
        dead = 0 if row["name"] in ("predictions", "conv_preds") else row["before"] // 4
        assert row["after"] == row["before"] - dead, row

    with h5py.File(source) as before, h5py.File(output) as after:
        version = after.attrs["keras_version"]
        assert version == before.attrs["keras_version"]  # kept, not rewritten
        assert (version.decode() if isinstance(version, bytes) else version).startswith("2.")
        assert after.attrs["backend"] == before.attrs["backend"]
        same_dialect(
            json.loads(before.attrs["model_config"]), json.loads(after.attrs["model_config"])
        )

    batch = np.random.default_rng(1).standard_normal((2, *model.input_shape[1:])).astype("float32")
    want = outputs(model, batch)
    pruned_k2 = K2.models.load_model(output, compile=False)
    assert pruned_k2.count_params() == summary["params"]["after"]
    np.testing.assert_allclose(outputs(pruned_k2, batch), want, rtol=1e-4, atol=1e-5)
    pruned_k3 = keras.saving.load_model(output, compile=False)  # Keras 3's legacy loader
    np.testing.assert_allclose(outputs(pruned_k3, batch), want, rtol=1e-4, atol=1e-5)
