"""Layers that own filters: Conv/Dense, transposed and separable convolutions, depthwise."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.graph import (
    IN,
    OUT,
    Call,
    ChannelGraph,
    LayerKind,
    LayerRecord,
    Layout,
    Piece,
    Roles,
    spatial_positions,
)
from pruner.core.kinds.common import (
    conv_output_shape,
    conv_window,
    first_shape,
    single_input,
    split_input,
    uses_bias,
)
from pruner.core.modelconfig import Shape
from pruner.core.shapes import as_tuple, deconv_length, join
from pruner.core.stats import filter_norms


class Producer(LayerKind):
    """Consumes its input channels (kernel axis -2) and produces new ones (axis -1)."""

    class_names = ("Conv1D", "Conv2D", "Conv3D", "Dense")
    owns_filters = True
    weight_roles: ClassVar[Roles] = {"kernel": {-2: IN, -1: OUT}, "bias": {-1: OUT}}
    masked_weights = frozenset({"kernel", "bias"})
    mac_weights = ("kernel",)
    filter_axis: ClassVar[int] = -1

    def count_key(self, rec: LayerRecord) -> str:
        return "units" if "units" in rec.config else "filters"

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        return ["kernel", "bias"] if uses_bias(rec) else ["kernel"]

    def grouped(self, rec: LayerRecord) -> bool:
        return int(rec.config.get("groups", 1) or 1) > 1

    def roles(self, rec: LayerRecord) -> Roles:
        return {} if self.grouped(rec) else self.weight_roles

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        count = int(rec.config[self.count_key(rec)])
        if self.count_key(rec) == "units":
            return [(*shape[:-1], count)]
        return [conv_output_shape(rec, shape, count)]

    def new_output(self, g: ChannelGraph, rec: LayerRecord) -> Layout:
        return g.new_source(int(rec.config[self.count_key(rec)]), owner=rec.path)

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout_in = single_input(rec, call)
        if rec.channels_first and "units" in rec.config and len(call.in_shapes[0]) > 2:
            raise UnsupportedLayer(
                f"Dense '{rec.path}' acts on the last axis of a channels_first tensor; "
                "only Dense layers on (batch, features) inputs are supported there"
            )
        if rec.source is None:
            out = self.new_output(g, rec)
            rec.source = out[0].segments[0]
            g.add_contribution(rec.path, out)
        out = (Piece((rec.source,)),)
        if self.grouped(rec):  # grouped convolutions tie channel blocks: keep them whole
            g.pin(layout_in, f"input of grouped convolution '{rec.path}'")
            g.pin(out, f"grouped convolution '{rec.path}'")
        return [out]

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        return filter_norms(rec.weight("kernel"), self.filter_axis)

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        config[self.count_key(rec)] = len(out_idx)


class TransposedConv(Producer):
    """Kernel is (..., out, in): the output axis is -2. MACs count input positions.

    TAO never prunes a transposed convolution's output filters (only its input channels
    follow the layer before it), so by default its output is a fixed source; with the
    `prune_transpose_filters` setting it is pruned like a Conv (beyond TAO)."""

    class_names = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    weight_roles: ClassVar[Roles] = {"kernel": {-2: OUT, -1: IN}, "bias": {-1: OUT}}
    filter_axis = -2

    def new_output(self, g: ChannelGraph, rec: LayerRecord) -> Layout:
        pin = None
        if not rec.options.get("prune_transpose_filters"):
            pin = (
                f"output filters of transposed convolution '{rec.path}' (TAO keeps them; "
                "--prune-transpose-filters prunes them)"
            )
        return g.new_source(int(rec.config["filters"]), owner=rec.path, pin=pin)

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        first, spatial, _ = split_input(rec, shape)
        rank = len(spatial)
        config = rec.config
        kernel, strides, dilation = conv_window(config, rank)
        padding_value = config.get("output_padding")
        output_padding: tuple[int | None, ...] = (
            (None,) * rank
            if padding_value is None
            else as_tuple(padding_value, rank, "output_padding")
        )
        padding = str(config.get("padding", "valid")).lower()
        out = [
            deconv_length(n, k, padding, p, s, d)
            for n, k, p, s, d in zip(
                spatial, kernel, output_padding, strides, dilation, strict=True
            )
        ]
        return [join(shape[0], out, int(config["filters"]), first)]

    def positions(self, rec: LayerRecord, call: Call) -> int:
        return spatial_positions(rec, call.in_shapes[0])


class SeparableConv(Producer):
    """Depthwise kernel (..., C, dm) then pointwise (1, 1, C*dm, F); the filters are F."""

    class_names = ("SeparableConv1D", "SeparableConv2D")
    weight_roles: ClassVar[Roles] = {
        "depthwise_kernel": {-2: IN},
        "pointwise_kernel": {-2: IN, -1: OUT},
        "bias": {-1: OUT},
    }
    masked_weights = frozenset({"pointwise_kernel", "bias"})
    mac_weights = ("depthwise_kernel", "pointwise_kernel")

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        names = ["depthwise_kernel", "pointwise_kernel"]
        return [*names, "bias"] if uses_bias(rec) else names

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        return filter_norms(rec.weight("pointwise_kernel"), -1)

    def index_map(
        self, rec: LayerRecord, shapes: dict[str, Shape], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> dict[str, dict[int, np.ndarray]]:
        out = super().index_map(rec, shapes, in_idx, out_idx)
        dm = int(rec.config.get("depth_multiplier", 1))
        # pointwise input channel c*dm + m comes from input channel c
        expanded = (in_idx[:, None] * dm + np.arange(dm)[None, :]).ravel()
        out["pointwise_kernel"][len(shapes["pointwise_kernel"]) - 2] = expanded
        return out


class Depthwise(LayerKind):
    """Passes channels through one-to-one; its stat is tied to its producer (step 3)."""

    class_names = ("DepthwiseConv1D", "DepthwiseConv2D")
    owns_filters = True
    weight_roles: ClassVar[Roles] = {"kernel": {-2: IN}, "bias": {-1: IN}}
    mask_role = IN
    masked_weights = frozenset({"kernel", "bias"})
    mac_weights = ("kernel",)

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        return ["kernel", "bias"] if uses_bias(rec) else ["kernel"]

    def check(self, rec: LayerRecord) -> None:
        multiplier = int(rec.config.get("depth_multiplier", 1))
        if multiplier != 1:
            raise UnsupportedLayer(
                f"layer '{rec.path}' ({rec.class_name}) has depth_multiplier={multiplier}; "
                "only depth_multiplier=1 can be pruned"
            )

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        shape = first_shape(call)
        _, _, channels = split_input(rec, shape)
        multiplier = int(rec.config.get("depth_multiplier", 1))
        return [conv_output_shape(rec, shape, None if channels is None else channels * multiplier)]

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = single_input(rec, call)
        if len(rec.calls) == 1:
            g.add_contribution(rec.path, layout)
        return [layout]

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        return filter_norms(rec.weight("kernel"), -2)  # over kernel h, w and the multiplier
