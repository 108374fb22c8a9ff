"""Layers that pass channels through one-to-one: activations, dropout, pooling, padding."""

from __future__ import annotations

from typing import Any

import numpy as np

from pruner.core.graph import Call, ChannelGraph, LayerKind, LayerRecord, Layout
from pruner.core.kinds.common import (
    conv_output_shape,
    first_shape,
    single_input,
    slice_channel_lists,
    split_input,
)
from pruner.core.modelconfig import Shape
from pruner.core.shapes import ShapeUnknown, as_tuple, join, nested_pairs


class PassThrough(LayerKind):
    """Channel i out is channel i in; no channel weights; the shape is unchanged."""

    class_names = (
        # activations, regularization, noise
        "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "ThresholdedReLU", "Dropout",
        "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
        "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "Masking",
        # raw keras.ops calls recorded in functional models
        "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu", "Tanh", "Elu",
        "Selu", "Celu", "Softplus", "Softsign", "LeakyRelu", "Mish", "LogSigmoid", "Abs",
        "Negative", "Square",
    )  # fmt: skip

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        return [single_input(rec, call)]


class Pooling(PassThrough):
    class_names = (
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D",
    )  # fmt: skip

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        return [conv_output_shape(rec, shape, split_input(rec, shape)[2])]


class GlobalPooling(PassThrough):
    class_names = (
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    )  # fmt: skip

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        first, spatial, channels = split_input(rec, shape)
        if rec.config.get("keepdims"):
            return [join(shape[0], [1] * len(spatial), channels, first)]
        return [(shape[0], channels)]


class Spatial(PassThrough):
    """Padding, cropping, upsampling and resizing: only the spatial sizes change."""

    class_names = (
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
    )  # fmt: skip

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        first, spatial, channels = split_input(rec, shape)
        rank = len(spatial)
        config = rec.config
        family = rec.class_name[:-2] if rec.class_name[-1] == "D" else rec.class_name
        out: list[int | None]
        if family == "ZeroPadding":
            pairs = nested_pairs(config.get("padding", 1), rank, "padding")
            out = [
                None if n is None else n + a + b for n, (a, b) in zip(spatial, pairs, strict=True)
            ]
        elif family == "Cropping":
            pairs = nested_pairs(config.get("cropping", 1), rank, "cropping")
            out = [
                None if n is None else n - a - b for n, (a, b) in zip(spatial, pairs, strict=True)
            ]
        elif family == "UpSampling":
            size = as_tuple(config.get("size", 2), rank, "size")
            out = [None if n is None else n * f for n, f in zip(spatial, size, strict=True)]
        elif family == "Resizing":
            out = [int(config["height"]), int(config["width"])]
        else:  # pragma: no cover - every class name above is one of the families
            raise ShapeUnknown(f"no shape rule for {rec.class_name}")
        return [join(shape[0], out, channels, first)]


class InputKind(PassThrough):
    """Top-level inputs are fixed sources (set by the walker); inside a nested model the
    input takes the caller's layout (the walker keeps its stored batch shape in step)."""

    class_names = ("InputLayer",)


class RescalingKind(PassThrough):
    """Scale/offset may be per-channel lists in the config."""

    class_names = ("Rescaling",)

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        slice_channel_lists(config, ("scale", "offset"), in_idx)
