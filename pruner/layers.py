"""Layer kinds: one small class per family of Keras layers (or raw `keras.ops` calls).

A kind says how channels flow through a layer (`flow`), which weight axes follow the
input or the output channels (`weight_roles`), the per-filter statistic of layers that
own filters (`stat`), and how surgery rewrites the layer's config (`rewrite_config`).
Adding support for a layer type means adding one class decorated with `@register`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from prunejob_contract.errors import UnsupportedLayer
from pruner.graph import (
    Call,
    ChannelGraph,
    GroupCheck,
    LayerRecord,
    Layout,
    Piece,
    Shape,
    channel_count,
    concat_layouts,
    flatten_layout,
    iter_keras_tensors,
)
from pruner.stats import filter_norms

IN = "in"  # the axis indexes the layer's input channels
OUT = "out"  # the axis indexes the layer's output channels
Roles = dict[str, dict[int, str]]  # weight name -> {axis: IN | OUT}

_REGISTRY: dict[str, LayerKind] = {}


def register(*class_names: str):
    """Class decorator: the kind handles Keras classes (layers or ops) of these names."""

    def wrap(cls: type[LayerKind]) -> type[LayerKind]:
        instance = cls()
        for name in class_names:
            if name in _REGISTRY:
                raise RuntimeError(f"layer kind for {name} registered twice")
            _REGISTRY[name] = instance
        cls.class_names = class_names
        return cls

    return wrap


def kind_for(class_name: str, module: str, path: str) -> LayerKind:
    """The kind of a layer, or UnsupportedLayer naming it (custom classes never match a
    built-in kind, even when their class name does)."""
    kind = _REGISTRY.get(class_name)
    if kind is None or (module and not module.startswith("keras")):
        raise UnsupportedLayer(
            f"layer '{path}' has type {class_name}, which the pruner does not know how "
            "channels flow through; it is not supported"
        )
    return kind


def supported_types() -> list[str]:
    return sorted(_REGISTRY)


def _rank(shape: Shape) -> int:
    return len(shape)


def _is_channel_axis(rec: LayerRecord, axis: int, rank: int) -> bool:
    return axis % rank == rec.channel_axis(rank)


def _positions(rec: LayerRecord, shape: Shape) -> int:
    """Spatial positions of a tensor: all but the batch and channel axes (unknown = 1)."""
    skip = (0, rec.channel_axis(len(shape)))
    return math.prod(d or 1 for i, d in enumerate(shape) if i not in skip)


def _fixed_output(g: ChannelGraph, rec: LayerRecord, shape: Shape) -> Layout:
    return g.new_source(channel_count(rec.channels_first, shape), pin=f"output of '{rec.path}'")


class LayerKind:
    class_names: ClassVar[tuple[str, ...]] = ()
    owns_filters: ClassVar[bool] = False  # listed in the plan with its output filters
    weight_roles: ClassVar[Roles] = {}
    mask_role: ClassVar[str] = OUT  # masking zeroes removed channels along this role...
    masked_weights: ClassVar[frozenset[str]] = frozenset()  # ...in these weights
    mac_weights: ClassVar[tuple[str, ...]] = ()  # MACs = positions * size of these

    def initializer_key(self, weight: str) -> str:
        """The config key of the initializer that creates weight `weight`."""
        return f"{weight}_initializer"

    def check(self, rec: LayerRecord) -> None:
        """Static validation once per layer; raise UnsupportedLayer."""
        roles = self.weight_roles
        if roles:
            unknown = sorted({w.name for w in getattr(rec.op, "weights", [])} - set(roles))
            if unknown:
                raise UnsupportedLayer(
                    f"layer '{rec.path}' ({rec.class_name}) has weights {unknown} the "
                    "pruner does not know how to slice"
                )

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        raise NotImplementedError

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        """Raw per-output-filter L2 norms (producers and depthwise layers only)."""
        return None

    def roles(self, rec: LayerRecord) -> Roles:
        return self.weight_roles

    def channel_weights(self, rec: LayerRecord) -> bool:
        return bool(self.roles(rec))

    def index_map(
        self, rec: LayerRecord, shapes: dict[str, Shape], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> dict[str, dict[int, np.ndarray]]:
        """For each weight, the kept indices along each sliced axis (positive axes)."""
        out: dict[str, dict[int, np.ndarray]] = {}
        for name, axes in self.roles(rec).items():
            if name in shapes:
                ndim = len(shapes[name])
                out[name] = {a % ndim: in_idx if r == IN else out_idx for a, r in axes.items()}
        return out

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        """Rewrite the layer's config in place for the pruned channel counts."""

    def positions(self, rec: LayerRecord, call: Call) -> int:
        return _positions(rec, call.out_shapes[0]) if call.out_shapes else 1


def _single_input(rec: LayerRecord, call: Call) -> Layout:
    if len(call.in_layouts) != 1:
        raise UnsupportedLayer(
            f"layer '{rec.path}' ({rec.class_name}) has {len(call.in_layouts)} tensor inputs; "
            "expected one"
        )
    return call.in_layouts[0]


# --- layers that produce new channels -----------------------------------------------------
@register("Conv1D", "Conv2D", "Conv3D", "Dense")
class Producer(LayerKind):
    """Consumes its input channels (kernel axis -2) and produces new ones (axis -1)."""

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
        layout_in = _single_input(rec, call)
        if rec.channels_first and "units" in rec.config and _rank(call.in_shapes[0]) > 2:
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


@register("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
class TransposedConv(Producer):
    """Kernel is (..., out, in): the output axis is -2. MACs count input positions."""

    weight_roles: ClassVar[Roles] = {"kernel": {-2: OUT, -1: IN}, "bias": {-1: OUT}}
    filter_axis = -2

    def positions(self, rec: LayerRecord, call: Call) -> int:
        return _positions(rec, call.in_shapes[0])


@register("SeparableConv1D", "SeparableConv2D")
class SeparableConv(Producer):
    """Depthwise kernel (..., C, dm) then pointwise (1, 1, C*dm, F); the filters are F."""

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


@register("DepthwiseConv1D", "DepthwiseConv2D")
class Depthwise(LayerKind):
    """Passes channels through one-to-one; its stat is tied to its producer (step 3)."""

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
        layout = _single_input(rec, call)
        if len(rec.calls) == 1:
            g.add_contribution(rec.path, layout)
        return [layout]

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        return filter_norms(rec.weight("kernel"), -2)  # over kernel h, w and the multiplier


# --- layers that pass channels through ----------------------------------------------------
@register(
    # activations, regularization, noise
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "ThresholdedReLU", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "Masking",
    # spatial-only layers
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
    # raw keras.ops calls recorded in functional models
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu", "Tanh", "Elu",
    "Selu", "Celu", "Softplus", "Softsign", "LeakyRelu", "Mish", "LogSigmoid", "Abs",
    "Negative", "Square",
)  # fmt: skip
class PassThrough(LayerKind):
    """Channel i out is channel i in; no channel weights."""

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        return [_single_input(rec, call)]


@register("InputLayer")
class InputKind(PassThrough):
    """Top-level inputs are fixed sources (set by the walker); inside a nested model the
    input takes the caller's layout, so its `batch_shape` follows the pruned count."""

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        shape = list(config.get("batch_shape") or [])
        if shape:
            shape[rec.channel_axis(len(shape))] = len(out_idx)
            config["batch_shape"] = shape


class ChannelWise(PassThrough):
    """Passes channels through and holds per-channel weights along the last axis."""

    mask_role = IN

    def channel_axis_ok(self, rec: LayerRecord, rank: int) -> bool:
        return True

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = _single_input(rec, call)
        if not self.channel_axis_ok(rec, _rank(call.in_shapes[0])):
            g.require_unpruned(rec, layout, "normalizes over an axis other than channels")
        return [layout]

    def roles(self, rec: LayerRecord) -> Roles:
        if not rec.calls or not self.channel_axis_ok(rec, _rank(rec.calls[0].in_shapes[0])):
            return {}
        return self.weight_roles


@register("BatchNormalization")
class BatchNorm(ChannelWise):
    weight_roles: ClassVar[Roles] = {
        name: {-1: IN} for name in ("gamma", "beta", "moving_mean", "moving_variance")
    }
    masked_weights = frozenset({"gamma", "beta"})  # gamma = beta = 0 -> the channel is 0

    def channel_axis_ok(self, rec: LayerRecord, rank: int) -> bool:
        axis = rec.config.get("axis", -1)
        axes = axis if isinstance(axis, list | tuple) else [axis]
        return len(axes) == 1 and _is_channel_axis(rec, int(axes[0]), rank)


@register("LayerNormalization")
class LayerNorm(ChannelWise):
    """Normalizing over the channel axis: gamma/beta are sliced, but the mean and variance
    then run over fewer channels, so outputs change (not output-preserving)."""

    weight_roles: ClassVar[Roles] = {"gamma": {-1: IN}, "beta": {-1: IN}}
    masked_weights = frozenset({"gamma", "beta"})

    def _axes(self, rec: LayerRecord, rank: int) -> list[int]:
        axis = rec.config.get("axis", -1)
        return [int(a) % rank for a in (axis if isinstance(axis, list | tuple) else [axis])]

    def roles(self, rec: LayerRecord) -> Roles:
        if not rec.calls:
            return {}
        rank = _rank(rec.calls[0].in_shapes[0])
        axes = sorted(self._axes(rec, rank))
        channel = rec.channel_axis(rank)
        if channel not in axes:
            return {}
        position = axes.index(channel)  # gamma/beta span the normalized axes, in order
        return {"gamma": {position: IN}, "beta": {position: IN}}


@register("GroupNormalization")
class GroupNorm(ChannelWise):
    """gamma/beta sliced; the plan keeps a group whole unless kept channels spread evenly
    over the GroupNormalization's groups (see PreparedModel.plan)."""

    weight_roles: ClassVar[Roles] = {"gamma": {-1: IN}, "beta": {-1: IN}}
    masked_weights = frozenset({"gamma", "beta"})

    def channel_axis_ok(self, rec: LayerRecord, rank: int) -> bool:
        return _is_channel_axis(rec, int(rec.config.get("axis", -1)), rank)

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        (layout,) = super().flow(g, rec, call)
        g.group_checks.append(GroupCheck(rec, layout, int(rec.config.get("groups", 32))))
        return [layout]


@register("PReLU")
class PReLUKind(ChannelWise):
    weight_roles: ClassVar[Roles] = {"alpha": {-1: IN}}

    def roles(self, rec: LayerRecord) -> Roles:
        alpha = [w for w in rec.op.weights if w.name == "alpha"]
        if not alpha or not rec.calls:
            return {}
        axis = rec.channel_axis(_rank(rec.calls[0].in_shapes[0])) - 1  # alpha has no batch
        return {"alpha": {axis: IN}} if alpha[0].shape[axis] != 1 else {}


@register("Normalization")
class NormalizationKind(ChannelWise):
    """Preprocessing Normalization over the channel axis: mean/variance per channel."""

    weight_roles: ClassVar[Roles] = {"mean": {-1: IN}, "variance": {-1: IN}, "count": {}}

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
        for key in ("mean", "variance"):
            value = config.get(key)
            if isinstance(value, list | tuple) and len(value) > 1:
                config[key] = [value[i] for i in in_idx]


@register("Rescaling")
class RescalingKind(PassThrough):
    """Scale/offset may be per-channel lists in the config."""

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        for key in ("scale", "offset"):
            value = config.get(key)
            if isinstance(value, list | tuple) and len(value) > 1:
                config[key] = [value[i] for i in in_idx]


# --- merges -------------------------------------------------------------------------------
def _has_array_constant(call: Call) -> bool:
    """A non-scalar constant argument (e.g. `x * [..per channel..]`) pins the channels."""
    if call.node is None:
        return False
    args = [a for a in call.node.get("args", []) if not list(iter_keras_tensors(a))]
    return any(isinstance(a, list | tuple | dict) for a in args)


@register(
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Divide", "TrueDivide"
)  # layers and the raw ops of the same names
class ElementwiseMerge(LayerKind):
    """All inputs must keep the same channels; 1-channel inputs broadcast and stay out."""

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layouts = call.in_layouts
        if not layouts:
            raise UnsupportedLayer(f"layer '{rec.path}' ({rec.class_name}) has no tensor input")
        if _has_array_constant(call):
            for layout in layouts:
                g.require_unpruned(rec, layout, "combines channels with a constant array")
        wide = [layout for layout in layouts if g.size(layout) != 1] or list(layouts)
        if len(wide) > 1:
            g.unify(wide, f"element-wise merge '{rec.path}'")
        return [wide[0]]


@register("Concatenate")
class ConcatenateKind(LayerKind):
    """On the channel axis: channels of each input, shifted by its offset. On another
    axis the inputs must keep identical channels, like an element-wise merge."""

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        rank = _rank(call.in_shapes[0])
        if _is_channel_axis(rec, int(rec.config.get("axis", -1)), rank):
            return [concat_layouts(call.in_layouts)]
        g.unify(call.in_layouts, f"concatenation '{rec.path}'")
        return [call.in_layouts[0]]


# --- shape changes ------------------------------------------------------------------------
@register("Flatten")
class FlattenKind(LayerKind):
    """Channels-last tensors: kept flat indices are the kept channels tiled per position.
    Channels_first tensors: each kept channel repeated over the positions, unless the
    Flatten says data_format=channels_first (Keras then flattens in channels-last order)."""

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = _single_input(rec, call)
        shape = call.in_shapes[0]
        if _rank(shape) <= 2:
            return [layout]
        if any(d is None for d in shape[1:]):
            raise UnsupportedLayer(f"Flatten '{rec.path}' has unknown spatial size {shape}")
        transposes = rec.config.get("data_format") == "channels_first"
        if transposes and not rec.channels_first:  # moves axis 1 of a channels-last tensor
            g.require_unpruned(rec, layout, "reorders channels-last data")
            return [_fixed_output(g, rec, call.out_shapes[0])]
        channel_major = rec.channels_first and not transposes
        return [flatten_layout(layout, _positions(rec, shape), channel_major)]


@register("Reshape")
class ReshapeKind(LayerKind):
    """Passes channels through when the last axis keeps its size: in channels-last memory
    order the channel index then stays the same (this covers (C,) <-> (1, 1, C) and also
    (H, W, C) -> (H*W, C)). A reshape to one axis acts as a Flatten. Anything else needs
    unpruned input (or the Reshape excluded with -el)."""

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
        layout = _single_input(rec, call)
        mode = self.mode(rec, call)
        if mode == "channels":
            return [layout]
        if mode == "flatten":
            positions = _positions(rec, call.in_shapes[0])
            return [flatten_layout(layout, positions, rec.channels_first)]
        g.require_unpruned(rec, layout, "moves the channel axis")
        return [_fixed_output(g, rec, call.out_shapes[0])]

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


@register("Permute")
class PermuteKind(LayerKind):
    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        layout = _single_input(rec, call)
        dims = list(rec.config["dims"])  # 1-based, batch excluded
        channel = rec.channel_axis(len(dims) + 1)
        if dims[channel - 1] == channel:  # the channel axis stays where it was
            return [layout]
        g.require_unpruned(rec, layout, "moves the channel axis")
        return [_fixed_output(g, rec, call.out_shapes[0])]


# --- opaque layers ------------------------------------------------------------------------
@register("Lambda")
class LambdaKind(LayerKind):
    """Arbitrary code: only allowed when excluded (-el), which keeps its inputs whole."""

    def check(self, rec: LayerRecord) -> None:
        if not rec.excluded:
            raise UnsupportedLayer(
                f"Lambda layer '{rec.path}' cannot be analysed; exclude it with "
                f"-el {rec.name} to keep its inputs unpruned (loading a model with Lambda "
                "layers needs safe mode off: --no-safe-mode)"
            )

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        for layout in call.in_layouts:
            g.pin(layout, f"input of excluded layer '{rec.path}'")
        return [_fixed_output(g, rec, shape) for shape in call.out_shapes]


@register("Embedding")
class EmbeddingKind(LayerKind):
    """Token ids in, a fixed embedding width out (not pruned)."""

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        return [g.new_source(int(rec.config["output_dim"]), pin=f"embedding '{rec.path}'")]
