"""Layers that combine several inputs: element-wise merges and concatenation."""

from __future__ import annotations

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.graph import Call, ChannelGraph, LayerKind, LayerRecord, Layout, concat_layouts
from pruner.core.kinds.common import is_channel_axis
from pruner.core.modelconfig import Shape
from pruner.core.shapes import ShapeUnknown, broadcast


def _has_array_constant(call: Call) -> bool:
    """A non-scalar constant argument (e.g. `x * [..per channel..]`) pins the channels."""
    return any(isinstance(a, list | tuple | dict) for a in call.constants)


class ElementwiseMerge(LayerKind):
    """All inputs must keep the same channels; 1-channel inputs broadcast and stay out."""

    # layers and the raw ops of the same names
    class_names = (
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Divide", "TrueDivide",
    )  # fmt: skip

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

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        if not call.in_shapes:
            raise ShapeUnknown("the layer has no tensor input")
        return [broadcast(call.in_shapes)]


class CustomScaleKind(ElementwiseMerge):
    """InceptionResNetV2's CustomScaleLayer (keras.applications): `x[0] + x[1] * scale`,
    an element-wise merge of its two inputs."""

    class_names = ("CustomScaleLayer",)
    modules = (
        "keras.src.applications.inception_resnet_v2",
        "tf_keras.src.applications.inception_resnet_v2",
    )


class ConcatenateKind(LayerKind):
    """On the channel axis: channels of each input, shifted by its offset. On another
    axis the inputs must keep identical channels, like an element-wise merge."""

    class_names = ("Concatenate",)

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        rank = len(call.in_shapes[0])
        if is_channel_axis(rec, int(rec.config.get("axis", -1)), rank):
            return [concat_layouts(call.in_layouts)]
        g.unify(call.in_layouts, f"concatenation '{rec.path}'")
        return [call.in_layouts[0]]

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        if not call.in_shapes:
            raise ShapeUnknown("the layer has no tensor input")
        rank = len(call.in_shapes[0])
        axis = int(rec.config.get("axis", -1)) % rank
        out = list(call.in_shapes[0])
        dims = [s[axis] for s in call.in_shapes]
        out[axis] = None if any(d is None for d in dims) else sum(dims)  # type: ignore[misc]
        return [tuple(out)]
