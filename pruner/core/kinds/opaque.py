"""Layers whose channels are never pruned.

Lambda and unknown classes (when excluded), Embedding."""

from __future__ import annotations

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.graph import Call, ChannelGraph, LayerKind, LayerRecord, Layout
from pruner.core.kinds.common import first_shape, fixed_output
from pruner.core.modelconfig import Shape, parse_shape
from pruner.core.shapes import ShapeUnknown


class LambdaKind(LayerKind):
    """Arbitrary code: only allowed when excluded (-el), which keeps its inputs whole."""

    class_names = ("Lambda",)

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
        return [fixed_output(g, rec, shape) for shape in call.out_shapes]

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        """Only what the config states (`output_shape` as a list of sizes, batch excluded)."""
        declared = rec.config.get("output_shape")
        if isinstance(declared, list | tuple) and all(
            d is None or isinstance(d, int) for d in declared
        ):
            batch = call.in_shapes[0][0] if call.in_shapes and call.in_shapes[0] else None
            return [(batch, *parse_shape(declared))]
        raise ShapeUnknown(
            "a Lambda's output shape is not in its config; give the Lambda an output_shape "
            "when building the model"
        )


class EmbeddingKind(LayerKind):
    """Token ids in, a fixed embedding width out (not pruned)."""

    class_names = ("Embedding",)

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        return ["embeddings"]

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        return [(*first_shape(call), int(rec.config["output_dim"]))]

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        return [g.new_source(int(rec.config["output_dim"]), pin=f"embedding '{rec.path}'")]


class ExcludedUnknown(LayerKind):
    """A class the pruner does not know, excluded with -el: its inputs stay whole, its
    outputs are fixed sources, its weights (whatever it has) are kept as they are. Its
    output shapes must be stored in the file (Keras 3 calls store them)."""

    class_names = ()  # never looked up by name: the walker uses it for excluded unknowns
    any_weights = True

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        for layout in call.in_layouts:
            g.pin(layout, f"input of excluded layer '{rec.path}'")
        return [fixed_output(g, rec, shape) for shape in call.out_shapes]

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        raise ShapeUnknown(
            f"the pruner does not know {rec.class_name}, and this config does not store its "
            "output shape"
        )
