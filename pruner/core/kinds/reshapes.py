"""Layers that change the shape around the channels: Flatten, Reshape, Permute."""

from __future__ import annotations

from typing import Any

import numpy as np

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.graph import (
    Call,
    ChannelGraph,
    LayerKind,
    LayerRecord,
    Layout,
    flatten_layout,
    spatial_positions,
)
from pruner.core.kinds.common import first_shape, fixed_output, single_input
from pruner.core.modelconfig import Shape
from pruner.core.shapes import ShapeUnknown, product, reshape


class FlattenKind(LayerKind):
    """Channels-last tensors: kept flat indices are the kept channels tiled per position.
    Channels_first tensors: each kept channel repeated over the positions, unless the
    Flatten says data_format=channels_first (Keras then flattens in channels-last order)."""

    class_names = ("Flatten",)

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        return [(shape[0], product(shape[1:]))]

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = single_input(rec, call)
        shape = call.in_shapes[0]
        if len(shape) <= 2:
            return [layout]
        if any(d is None for d in shape[1:]):
            raise UnsupportedLayer(f"Flatten '{rec.path}' has unknown spatial size {shape}")
        transposes = rec.config.get("data_format") == "channels_first"
        if transposes and not rec.channels_first:  # moves axis 1 of a channels-last tensor
            g.require_unpruned(rec, layout, "reorders channels-last data")
            return [fixed_output(g, rec, call.out_shapes[0])]
        channel_major = rec.channels_first and not transposes
        return [flatten_layout(layout, spatial_positions(rec, shape), channel_major)]


class ReshapeKind(LayerKind):
    """Passes channels through when the last axis keeps its size: in channels-last memory
    order the channel index then stays the same (this covers (C,) <-> (1, 1, C) and also
    (H, W, C) -> (H*W, C)). A reshape to one axis acts as a Flatten. Anything else needs
    unpruned input (or the Reshape excluded with -el)."""

    class_names = ("Reshape",)

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        if "target_shape" in rec.config:
            return [reshape(shape, rec.config["target_shape"])]
        if "newshape" in rec.config:  # keras.ops.reshape: the shape includes the batch axis
            out = reshape(shape, rec.config["newshape"], with_batch=True)
            return [(shape[0], *out[1:]) if out and out[0] in (-1, None) else out]
        raise ShapeUnknown("the Reshape states no target shape")

    def mode(self, rec: LayerRecord, call: Call) -> str:
        src, dst = call.in_shapes[0], call.out_shapes[0]
        # channels_first keeps the channel at axis 1 (the outermost) in every rank
        axis = 1 if rec.channels_first else -1
        if src[axis] is not None and src[axis] == dst[axis]:
            return "channels"
        if len(dst) == 2 and len(src) > 2 and all(d is not None for d in src[1:]):
            return "flatten"
        return "opaque"

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = single_input(rec, call)
        mode = self.mode(rec, call)
        if mode == "channels":
            return [layout]
        if mode == "flatten":
            positions = spatial_positions(rec, call.in_shapes[0])
            return [flatten_layout(layout, positions, rec.channels_first)]
        g.require_unpruned(rec, layout, "moves the channel axis")
        return [fixed_output(g, rec, call.out_shapes[0])]

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        mode = self.mode(rec, rec.calls[0])
        if mode == "opaque":
            return
        key = "target_shape" if "target_shape" in config else "newshape"  # layer / keras.ops
        target = list(config[key])
        index = -1
        if mode == "channels" and rec.channels_first and len(target) > 1:
            index = 0 if key == "target_shape" else 1  # newshape includes the batch axis
        if target and target[index] != -1:
            target[index] = len(out_idx)
        config[key] = target


class PermuteKind(LayerKind):
    class_names = ("Permute",)

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        return [(shape[0], *(shape[int(d)] for d in rec.config["dims"]))]

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = single_input(rec, call)
        dims = list(rec.config["dims"])  # 1-based, batch excluded
        channel = rec.channel_axis(len(dims) + 1)
        if dims[channel - 1] == channel:  # the channel axis stays where it was
            return [layout]
        g.require_unpruned(rec, layout, "moves the channel axis")
        return [fixed_output(g, rec, call.out_shapes[0])]
