"""Layers that pass channels through one-to-one: activations, dropout, pooling, padding."""

from __future__ import annotations

from typing import Any

import numpy as np

from pruner.core.legacy.graph import Call, ChannelGraph, LayerKind, LayerRecord, Layout
from pruner.core.legacy.kinds.common import single_input, slice_channel_lists


class PassThrough(LayerKind):
    """Channel i out is channel i in; no channel weights."""

    class_names = (
        # activations, regularization, noise
        "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "ThresholdedReLU", "Dropout",
        "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
        "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "Masking",
        # spatial-only layers
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
        "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
        "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
        # raw keras.ops calls recorded in functional models
        "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu", "Tanh", "Elu",
        "Selu", "Celu", "Softplus", "Softsign", "LeakyRelu", "Mish", "LogSigmoid", "Abs",
        "Negative", "Square",
    )  # fmt: skip

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        return [single_input(rec, call)]


class InputKind(PassThrough):
    """Top-level inputs are fixed sources (set by the walker); inside a nested model the
    input takes the caller's layout, so its `batch_shape` follows the pruned count."""

    class_names = ("InputLayer",)

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        shape = list(config.get("batch_shape") or [])
        if shape:
            shape[rec.channel_axis(len(shape))] = len(out_idx)
            config["batch_shape"] = shape


class RescalingKind(PassThrough):
    """Scale/offset may be per-channel lists in the config."""

    class_names = ("Rescaling",)

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        slice_channel_lists(config, ("scale", "offset"), in_idx)
