"""Layers whose channels are never pruned: Lambda (when excluded) and Embedding."""

from __future__ import annotations

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.legacy.graph import Call, ChannelGraph, LayerKind, LayerRecord, Layout
from pruner.core.legacy.kinds.common import fixed_output


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


class EmbeddingKind(LayerKind):
    """Token ids in, a fixed embedding width out (not pruned)."""

    class_names = ("Embedding",)

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        return [g.new_source(int(rec.config["output_dim"]), pin=f"embedding '{rec.path}'")]
