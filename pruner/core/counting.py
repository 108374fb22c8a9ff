"""Parameter and FLOP counts, from a model's config and weights or from a plan.

FLOPs here are 2 x the multiply-accumulates of the layers that own kernels (Conv*,
Dense, DepthwiseConv*, SeparableConv*, Conv*Transpose), summed over every call of the
layer; normalization, activations, pooling and merges are not counted. Unknown
(None) spatial sizes count as 1, so such models get per-position FLOPs.
`count_flops(config, weights)` and `PreparedModel.totals(plan)["flops"]` use the same
formula.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pruner.core.graph import ChannelGraph, KeptByRoot, LayerRecord
from pruner.core.walk import Weights, build_graph


def count_params(weights: Weights) -> int:
    """All weights, trainable or not (BatchNormalization moving stats included), like
    Keras' `model.count_params()` and TAO's pruning ratio."""
    return sum(math.prod(np.shape(w)) for values in weights.values() for w in values)


def count_flops(config: dict[str, Any], weights: Weights) -> int:
    graph = build_graph(config, weights)
    full = {root: np.arange(graph.sources[root].size) for root in graph.groups()}
    return graph_totals(graph, full)["flops"]


def layer_indices(
    graph: ChannelGraph, rec: LayerRecord, kept: KeptByRoot
) -> tuple[np.ndarray, np.ndarray]:
    """Kept input and output channel indices of a layer (first call; shared calls match)."""
    call = rec.calls[0]
    empty = np.zeros(0, dtype=np.int64)
    in_idx = graph.kept_indices(call.in_layouts[0], kept) if call.in_layouts else empty
    out_idx = graph.kept_indices(call.out_layouts[0], kept) if call.out_layouts else empty
    return in_idx, out_idx


def weight_sizes(rec: LayerRecord, in_idx: np.ndarray, out_idx: np.ndarray) -> dict[str, int]:
    """Element count of each of the layer's weights after slicing."""
    shapes = rec.weight_shapes()
    index_map = rec.kind.index_map(rec, shapes, in_idx, out_idx) if shapes else {}
    sizes = {}
    for name, shape in shapes.items():
        axes = index_map.get(name, {})
        sizes[name] = math.prod(len(axes[a]) if a in axes else d for a, d in enumerate(shape))
    return sizes


def graph_totals(graph: ChannelGraph, kept: KeptByRoot) -> dict[str, int]:
    params = 0
    macs = 0
    for rec in graph.records.values():
        if not rec.calls or not rec.weights:
            continue
        in_idx, out_idx = layer_indices(graph, rec, kept)
        sizes = weight_sizes(rec, in_idx, out_idx)
        params += sum(sizes.values())
        per_position = sum(sizes.get(name, 0) for name in rec.kind.mac_weights)
        if per_position:
            macs += per_position * sum(rec.kind.positions(rec, call) for call in rec.calls)
    return {"params": params, "flops": 2 * macs}
