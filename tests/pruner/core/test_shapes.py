"""Tests of shape inference: each layer kind's inferred output shape is the one Keras gives.

Shape inference: every layer kind's output shape, worked out from its config, must be the
shape Keras itself gives the layer's output, in Keras 3 and in tf_keras (whose configs
store no shapes), and must agree with the shapes a Keras 3 config stores.
"""

from __future__ import annotations

from typing import Any

import keras
import pytest

from pruner.core.shapes import ShapeUnknown, broadcast, conv_length, deconv_length, reshape
from pruner.core.walk import build_graph
from tests.pruner.core.helpers import live, live_k2, walk

tf_keras = pytest.importorskip("tf_keras")


def zoo(k: Any) -> Any:
    """Many branches, one per layer configuration, each a model output."""
    L = k.layers
    img = k.Input((11, 13, 4), name="img")
    seq = k.Input((17, 4), name="seq")
    vol = k.Input((5, 6, 7, 2), name="vol")
    frames = k.Input((3, 9, 9, 4), name="frames")
    ids = k.Input((6,), name="ids")
    outs = [
        L.Conv2D(5, 3, strides=2, padding="valid", name="conv_valid_s2")(img),
        L.Conv2D(5, (3, 2), strides=(2, 3), padding="same", name="conv_same_s23")(img),
        L.Conv2D(5, 3, dilation_rate=2, name="conv_dilated")(img),
        L.Conv1D(3, 4, padding="causal", dilation_rate=2, name="conv1d_causal")(seq),
        L.Conv1D(3, 5, strides=3, name="conv1d_s3")(seq),
        L.Conv3D(3, 2, strides=(1, 2, 3), padding="same", name="conv3d")(vol),
        L.Conv2DTranspose(3, 3, strides=2, name="deconv_valid")(img),
        L.Conv2DTranspose(3, 4, strides=2, padding="same", name="deconv_same")(img),
        L.Conv2DTranspose(3, 3, strides=2, output_padding=1, name="deconv_outpad")(img),
        L.Conv1DTranspose(3, 3, strides=2, padding="same", name="deconv1d")(seq),
        L.Conv3DTranspose(2, 2, strides=2, name="deconv3d")(vol),
        L.SeparableConv2D(6, 3, strides=2, depth_multiplier=2, name="sep2d")(img),
        L.SeparableConv1D(6, 3, padding="same", name="sep1d")(seq),
        L.DepthwiseConv2D(3, strides=2, padding="same", name="dw2d")(img),
        L.DepthwiseConv1D(3, name="dw1d")(seq),
        L.MaxPooling2D(3, strides=2, name="maxpool_s2")(img),
        L.AveragePooling2D(2, padding="same", name="avgpool_same")(img),
        L.MaxPooling1D(3, name="maxpool1d")(seq),
        L.AveragePooling3D((1, 2, 2), name="avgpool3d")(vol),
        L.GlobalAveragePooling2D(keepdims=True, name="gap_keep")(img),
        L.GlobalMaxPooling1D(name="gmp1d")(seq),
        L.GlobalAveragePooling3D(name="gap3d")(vol),
        L.ZeroPadding2D(((1, 2), (3, 0)), name="pad2d")(img),
        L.ZeroPadding1D((2, 1), name="pad1d")(seq),
        L.ZeroPadding3D(1, name="pad3d")(vol),
        L.Cropping2D(((1, 0), (2, 3)), name="crop2d")(img),
        L.Cropping1D((3, 1), name="crop1d")(seq),
        L.Cropping3D(1, name="crop3d")(vol),
        L.UpSampling2D((2, 3), name="up2d")(img),
        L.UpSampling1D(3, name="up1d")(seq),
        L.UpSampling3D(2, name="up3d")(vol),
        L.Resizing(7, 5, name="resize")(img),
        L.Flatten(name="flatten")(img),
        L.Reshape((-1, 4), name="reshape_fill")(img),
        L.Permute((2, 1, 3), name="permute")(img),
        L.Dense(7, name="dense_rank3")(seq),
        L.Embedding(20, 5, name="embed")(ids),
        L.TimeDistributed(L.Conv2D(5, 3, strides=2), name="td_conv")(frames),
        L.TimeDistributed(L.Flatten(), name="td_flat")(frames),
        L.BatchNormalization(name="bn")(img),
        L.Concatenate(axis=1, name="cat_rows")([img, img]),
        L.Concatenate(name="cat_channels")([img, L.Conv2D(3, 1, name="c3")(img)]),
        L.Multiply(name="broadcast_mul")([img, L.Reshape((1, 1, 4), name="gate")(
            L.GlobalAveragePooling2D(name="gate_gap")(img))]),
    ]  # fmt: skip
    return k.Model([img, seq, vol, frames, ids], outs, name="zoo")


def keras_shapes(model: Any) -> dict[str, tuple[int | None, ...]]:
    out = {}
    for path, layer in walk(model):
        if type(layer).__name__ == "InputLayer":
            continue
        shape = layer.output.shape
        out[path] = tuple(shape.as_list() if hasattr(shape, "as_list") else shape)
    return out


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_inferred_shapes_are_keras_own(flavour: str) -> None:
    model = zoo(keras) if flavour == "keras3" else zoo(tf_keras)
    config, weights = live(model) if flavour == "keras3" else live_k2(model)
    # strict: a Keras 3 config's stored shapes must equal the inferred ones too
    graph = build_graph(config, weights, strict_shapes=True)
    want = keras_shapes(model)
    got = {path: rec.calls[0].out_shapes[0] for path, rec in graph.records.items() if path in want}
    assert len(got) == len(want) > 40
    assert got == want


def test_keras2_config_has_no_shapes_to_fall_back_on() -> None:
    """The tf_keras config really stores no tensor shapes: inference did the work."""
    config, _ = live_k2(zoo(tf_keras))
    assert "__keras_tensor__" not in str(config) and "'shape'" not in str(config)


@pytest.mark.parametrize(
    ("length", "kernel", "padding", "stride", "dilation", "expected"),
    [(10, 3, "valid", 1, 1, 8), (10, 3, "same", 2, 1, 5), (10, 3, "valid", 3, 2, 2),
     (10, 4, "causal", 1, 2, 10), (10, 3, "full", 1, 1, 12), (None, 3, "same", 1, 1, None),
     (2, 5, "valid", 1, 1, 0)],
)  # fmt: skip
def test_conv_length(
    length: int | None, kernel: int, padding: str, stride: int, dilation: int, expected: Any
) -> None:
    assert conv_length(length, kernel, padding, stride, dilation) == expected


def test_deconv_length_and_broadcast_and_reshape() -> None:
    assert deconv_length(5, 3, "valid", None, 2) == 11
    assert deconv_length(5, 3, "same", None, 2) == 10
    assert deconv_length(5, 3, "valid", 1, 2) == 12
    assert broadcast([(None, 4, 4, 8), (None, 1, 1, 8)]) == (None, 4, 4, 8)
    assert broadcast([(None, 4, 4, 8), ()]) == (None, 4, 4, 8)
    with pytest.raises(ShapeUnknown):
        broadcast([(None, 4, 4, 8), (None, 4, 4, 3)])
    assert reshape((None, 4, 4, 8), [-1, 8]) == (None, 16, 8)
    assert reshape((None, None, 4, 8), [-1, 8]) == (None, None, 8)
    assert reshape((None, 2, 3), [-1, 1, 1, 6], with_batch=True) == (None, 1, 1, 6)
