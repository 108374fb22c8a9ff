"""Layers that own filters: Conv/Dense, transposed and separable convolutions, depthwise."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.legacy.graph import (
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
from pruner.core.legacy.kinds.common import single_input
from pruner.core.legacy.modelconfig import Shape
from pruner.core.legacy.stats import filter_norms


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

    def grouped(self, rec: LayerRecord) -> bool:
        return int(rec.config.get("groups", 1) or 1) > 1

    def roles(self, rec: LayerRecord) -> Roles:
        return {} if self.grouped(rec) else self.weight_roles

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout_in = single_input(rec, call)
        if rec.channels_first and "units" in rec.config and len(call.in_shapes[0]) > 2:
            raise UnsupportedLayer(
                f"Dense '{rec.path}' acts on the last axis of a channels_first tensor; "
                "only Dense layers on (batch, features) inputs are supported there"
            )
        if rec.source is None:
            out = g.new_source(int(rec.config[self.count_key(rec)]), owner=rec.path)
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
    """Kernel is (..., out, in): the output axis is -2. MACs count input positions."""

    class_names = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    weight_roles: ClassVar[Roles] = {"kernel": {-2: OUT, -1: IN}, "bias": {-1: OUT}}
    filter_axis = -2

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

    def initializer_key(self, weight: str) -> str:
        # depthwise_kernel -> depthwise_initializer, pointwise_kernel -> pointwise_initializer
        return weight.removesuffix("_kernel") + "_initializer"

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

    def check(self, rec: LayerRecord) -> None:
        super().check(rec)
        multiplier = int(rec.config.get("depth_multiplier", 1))
        if multiplier != 1:
            raise UnsupportedLayer(
                f"layer '{rec.path}' ({rec.class_name}) has depth_multiplier={multiplier}; "
                "only depth_multiplier=1 can be pruned"
            )

    def initializer_key(self, weight: str) -> str:
        return "depthwise_initializer" if weight == "kernel" else f"{weight}_initializer"

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = single_input(rec, call)
        if len(rec.calls) == 1:
            g.add_contribution(rec.path, layout)
        return [layout]

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        return filter_norms(rec.weight("kernel"), -2)  # over kernel h, w and the multiplier
