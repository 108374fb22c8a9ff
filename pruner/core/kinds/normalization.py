"""Channel-wise layers with per-channel weights.

Batch/Layer/Group normalization, PReLU, preprocessing Normalization, ConvNeXt's
LayerScale."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from pruner.core.graph import IN, Call, ChannelGraph, GroupCheck, LayerRecord, Layout, Roles
from pruner.core.kinds.common import is_channel_axis, single_input, slice_channel_lists
from pruner.core.kinds.passthrough import PassThrough


def affine_weights(rec: LayerRecord) -> list[str]:
    """gamma if `scale`, beta if `center` (both default on)."""
    names = ["gamma"] if rec.config.get("scale", True) else []
    return names + (["beta"] if rec.config.get("center", True) else [])


class ChannelWise(PassThrough):
    """Passes channels through and holds per-channel weights along the last axis."""

    class_names = ()  # a base: each subclass names its own Keras classes
    mask_role = IN

    def channel_axis_ok(self, rec: LayerRecord, rank: int) -> bool:
        return True

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = single_input(rec, call)
        if not self.channel_axis_ok(rec, len(call.in_shapes[0])):
            g.require_unpruned(rec, layout, "normalizes over an axis other than channels")
        return [layout]

    def roles(self, rec: LayerRecord) -> Roles:
        if not rec.calls or not self.channel_axis_ok(rec, len(rec.calls[0].in_shapes[0])):
            return {}
        return self.weight_roles


class BatchNorm(ChannelWise):
    class_names = ("BatchNormalization",)
    weight_roles: ClassVar[Roles] = {
        name: {-1: IN} for name in ("gamma", "beta", "moving_mean", "moving_variance")
    }
    masked_weights = frozenset({"gamma", "beta"})  # gamma = beta = 0 -> the channel is 0

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        return [*affine_weights(rec), "moving_mean", "moving_variance"]

    def channel_axis_ok(self, rec: LayerRecord, rank: int) -> bool:
        axis = rec.config.get("axis", -1)
        axes = axis if isinstance(axis, list | tuple) else [axis]
        return len(axes) == 1 and is_channel_axis(rec, int(axes[0]), rank)


class LayerNorm(ChannelWise):
    """Normalizing over the channel axis: gamma/beta are sliced, but the mean and variance
    then run over fewer channels, so outputs change (not output-preserving)."""

    class_names = ("LayerNormalization",)
    weight_roles: ClassVar[Roles] = {"gamma": {-1: IN}, "beta": {-1: IN}}
    masked_weights = frozenset({"gamma", "beta"})

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        if rec.config.get("rms_scaling"):  # Keras 3: a scale, no offset
            return ["gamma"]
        return affine_weights(rec)

    def _axes(self, rec: LayerRecord, rank: int) -> list[int]:
        axis = rec.config.get("axis", -1)
        return [int(a) % rank for a in (axis if isinstance(axis, list | tuple) else [axis])]

    def roles(self, rec: LayerRecord) -> Roles:
        if not rec.calls:
            return {}
        rank = len(rec.calls[0].in_shapes[0])
        axes = sorted(self._axes(rec, rank))
        channel = rec.channel_axis(rank)
        if channel not in axes:
            return {}
        position = axes.index(channel)  # gamma/beta span the normalized axes, in order
        return {"gamma": {position: IN}, "beta": {position: IN}}


class GroupNorm(ChannelWise):
    """gamma/beta sliced; the plan keeps a group whole unless kept channels spread evenly
    over the GroupNormalization's groups (see PreparedModel.plan)."""

    class_names = ("GroupNormalization",)
    weight_roles: ClassVar[Roles] = {"gamma": {-1: IN}, "beta": {-1: IN}}
    masked_weights = frozenset({"gamma", "beta"})

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        return affine_weights(rec)

    def channel_axis_ok(self, rec: LayerRecord, rank: int) -> bool:
        return is_channel_axis(rec, int(rec.config.get("axis", -1)), rank)

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        (layout,) = super().flow(g, rec, call)
        g.group_checks.append(GroupCheck(rec, layout, int(rec.config.get("groups", 32))))
        return [layout]


class PReLUKind(ChannelWise):
    class_names = ("PReLU",)
    weight_roles: ClassVar[Roles] = {"alpha": {-1: IN}}

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        return ["alpha"]

    def roles(self, rec: LayerRecord) -> Roles:
        alpha = rec.weights.get("alpha")
        if alpha is None or not rec.calls:
            return {}
        axis = rec.channel_axis(len(rec.calls[0].in_shapes[0])) - 1  # alpha has no batch
        return {"alpha": {axis: IN}} if alpha.shape[axis] != 1 else {}


class NormalizationKind(ChannelWise):
    """Preprocessing Normalization over the channel axis: mean/variance per channel."""

    class_names = ("Normalization",)
    weight_roles: ClassVar[Roles] = {"mean": {-1: IN}, "variance": {-1: IN}, "count": {}}

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        # an adaptable layer (no mean/variance in its config) keeps them as weights
        if rec.config.get("mean") is None:
            return ["mean", "variance", "count"]
        return []

    def channel_axis_ok(self, rec: LayerRecord, rank: int) -> bool:
        axis = rec.config.get("axis", -1)
        if axis is None:
            return True  # one scalar mean/variance
        axes = [int(a) % rank for a in (axis if isinstance(axis, list | tuple) else [axis])]
        return axes == [rec.channel_axis(rank)]

    def roles(self, rec: LayerRecord) -> Roles:
        if rec.config.get("axis", -1) is None:
            return {}
        return super().roles(rec)

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        slice_channel_lists(config, ("mean", "variance"), in_idx)


class LayerScaleKind(ChannelWise):
    """ConvNeXt's LayerScale (keras.applications): x * gamma, one gamma per channel; its
    config's `projection_dim` is the channel count."""

    class_names = ("LayerScale",)
    modules = ("keras.src.applications.convnext", "tf_keras.src.applications.convnext")
    weight_roles: ClassVar[Roles] = {"gamma": {-1: IN}}
    masked_weights = frozenset({"gamma"})

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        return ["gamma"]

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        if "projection_dim" in config:
            config["projection_dim"] = len(in_idx)
