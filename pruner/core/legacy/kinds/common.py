"""Small helpers the layer-kind families share (channel axes, inputs, constants)."""

from __future__ import annotations

from typing import Any

import numpy as np

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.legacy.graph import Call, ChannelGraph, LayerRecord, Layout, channel_count
from pruner.core.legacy.modelconfig import Shape


def is_channel_axis(rec: LayerRecord, axis: int, rank: int) -> bool:
    return axis % rank == rec.channel_axis(rank)


def single_input(rec: LayerRecord, call: Call) -> Layout:
    if len(call.in_layouts) != 1:
        raise UnsupportedLayer(
            f"layer '{rec.path}' ({rec.class_name}) has {len(call.in_layouts)} tensor inputs; "
            "expected one"
        )
    return call.in_layouts[0]


def fixed_output(g: ChannelGraph, rec: LayerRecord, shape: Shape) -> Layout:
    """A new source that is never pruned: the output of a layer channels cannot follow."""
    return g.new_source(channel_count(rec.channels_first, shape), pin=f"output of '{rec.path}'")


def slice_channel_lists(config: dict[str, Any], keys: tuple[str, ...], kept: np.ndarray) -> None:
    """Per-channel constants stored in the config as lists keep only the kept channels."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, list | tuple) and len(value) > 1:
            config[key] = [value[i] for i in kept]
