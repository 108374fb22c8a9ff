"""Small helpers the layer-kind families share (channel axes, inputs, constants, shapes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.graph import Call, ChannelGraph, LayerRecord, Layout, channel_count
from pruner.core.modelconfig import Shape
from pruner.core.shapes import ShapeUnknown, as_tuple, conv_length, join, split


def is_channel_axis(rec: LayerRecord, axis: int, rank: int) -> bool:
    return axis % rank == rec.channel_axis(rank)


def single_input(rec: LayerRecord, call: Call) -> Layout:
    if len(call.in_layouts) != 1:
        raise UnsupportedLayer(
            f"layer '{rec.path}' ({rec.class_name}) has {len(call.in_layouts)} tensor inputs; "
            "expected one"
        )
    return call.in_layouts[0]


def first_shape(call: Call) -> Shape:
    if not call.in_shapes:
        raise ShapeUnknown("the layer has no tensor input")
    return call.in_shapes[0]


def fixed_output(g: ChannelGraph, rec: LayerRecord, shape: Shape) -> Layout:
    """A new source that is never pruned: the output of a layer channels cannot follow."""
    return g.new_source(channel_count(rec.channels_first, shape), pin=f"output of '{rec.path}'")


def slice_channel_lists(config: dict[str, Any], keys: tuple[str, ...], kept: np.ndarray) -> None:
    """Per-channel constants stored in the config as lists keep only the kept channels."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, list | tuple) and len(value) > 1:
            config[key] = [value[i] for i in kept]


def layer_channels_first(rec: LayerRecord) -> bool:
    """The layer's own data_format when it states one, else the model's."""
    fmt = rec.config.get("data_format")
    if fmt in ("channels_first", "channels_last"):
        return fmt == "channels_first"
    return rec.channels_first


def uses_bias(rec: LayerRecord) -> bool:
    return bool(rec.config.get("use_bias", True))


def split_input(rec: LayerRecord, shape: Shape) -> tuple[bool, list[int | None], int | None]:
    """An input `shape` in the layer's own data_format: (channels first, the spatial
    sizes, the channel count)."""
    first = layer_channels_first(rec)
    spatial, channels = split(shape, first)
    return first, spatial, channels


def conv_window(
    config: dict[str, Any], rank: int
) -> tuple[tuple[int | None, ...], tuple[int | None, ...], tuple[int | None, ...]]:
    """A convolution's kernel size, strides and dilation rate, one per spatial axis."""
    kernel = as_tuple(config["kernel_size"], rank, "kernel_size")
    strides = as_tuple(config.get("strides", 1), rank, "strides")
    dilation = as_tuple(config.get("dilation_rate", 1), rank, "dilation_rate")
    return kernel, strides, dilation


def conv_output_shape(rec: LayerRecord, shape: Shape, channels: int | None) -> Shape:
    """A (batch, spatial..., channels) convolution or pooling output, Keras' formula."""
    first, spatial, _ = split_input(rec, shape)
    rank = len(spatial)
    config = rec.config
    if "pool_size" in config:
        kernel = as_tuple(config["pool_size"], rank, "pool_size")
        strides_value = config.get("strides")
        strides = kernel if strides_value is None else as_tuple(strides_value, rank, "strides")
        dilation = (1,) * rank
    else:
        kernel, strides, dilation = conv_window(config, rank)
    padding = str(config.get("padding", "valid")).lower()
    out = [
        conv_length(n, k, padding, s, d)
        for n, k, s, d in zip(spatial, kernel, strides, dilation, strict=True)
    ]
    return join(shape[0], out, channels, first)
