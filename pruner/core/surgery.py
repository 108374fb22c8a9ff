"""Apply a plan to a model's config and weights, without Keras.

The same config with the pruned counts changed, and the weights sliced.

The config is the input's own JSON (a deep copy) with only what pruning changes
edited in place, so names, key order, custom metadata and the dialect stay as they
were: filters/units, Reshape targets, per-channel constants (Rescaling,
Normalization), LayerScale's projection_dim, and every shape the config stores along
a pruned channel axis (Keras 3 call tensors, `build_config` input shapes, nested
input shapes). A Keras 2 config also gets the few Keras-3-compatibility edits of
`pruner.core.dialect` (keys that say nothing), so the file loads in Keras 3 too.
Weights keep their structure: the same layer paths, the same order; arrays that lose
nothing are the input's own objects, not copies.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any

import numpy as np

from pruner.core.counting import layer_indices
from pruner.core.dialect import keras2_output_edits
from pruner.core.graph import ChannelGraph, KeptByRoot
from pruner.core.plan import PrunePlan, graph_for, kept_from_plan
from pruner.core.walk import Weights

NewWeights = dict[str, list[np.ndarray]]


def apply_plan(
    config: dict[str, Any], weights: Weights, plan: PrunePlan, *, consume: bool = False
) -> tuple[dict[str, Any], NewWeights]:
    """(pruned config, pruned weights); `config` and `weights` are not changed, unless
    `consume`: then `weights` (a dict) is emptied layer by layer as each layer is
    sliced, for a caller that needs the input's weights no more, so that the input's
    and the pruned arrays never all exist at once (the peak memory of a prune)."""
    consumed: MutableMapping[str, Any] | None = None
    if consume:
        if not isinstance(weights, MutableMapping):
            raise TypeError("apply_plan(consume=True) needs the weights as a mutable mapping")
        consumed = weights
    pruned = copy.deepcopy(config)
    slices = edit_config(pruned, weights, plan)  # the graph, holding the inputs, is gone
    new_weights: NewWeights = {path: list(values) for path, values in weights.items()}
    for path, axes in slices:
        values = new_weights[path]
        new_weights[path] = [
            slice_weight(np.asarray(value), ax) for value, ax in zip(values, axes, strict=True)
        ]
        del values
        if consumed is not None:
            del consumed[path]
    if consumed is not None:
        consumed.clear()  # the rest: the pruned weights share those arrays, uncopied
    return pruned, new_weights


def edit_config(
    pruned: dict[str, Any], weights: Weights, plan: PrunePlan
) -> list[tuple[str, list[dict[int, np.ndarray]]]]:
    """Edit `pruned` (a copy of the config) in place; return how to slice each layer's
    weights: (layer path, per weight in order {axis: kept indices})."""
    graph = graph_for(pruned, weights, plan.settings)
    kept = kept_from_plan(graph, plan)
    slices = []
    for path, rec in graph.records.items():
        if not rec.calls:
            continue
        in_idx, out_idx = layer_indices(graph, rec, kept)
        rec.kind.rewrite_config(rec, rec.config, in_idx, out_idx)
        if not rec.weights:
            continue
        index_map = rec.kind.index_map(rec, rec.weight_shapes(), in_idx, out_idx)
        slices.append((path, [index_map.get(name, {}) for name in rec.weight_names]))
    rewrite_shapes(graph, kept)
    keras2_output_edits(pruned)
    return slices


def rewrite_shapes(graph: ChannelGraph, kept: KeptByRoot) -> None:
    """Every stored shape along a pruned channel axis gets the pruned count."""
    for site in graph.shape_sites:
        count = len(graph.kept_indices(site.layout, kept))
        if count == graph.size(site.layout):
            continue
        value = site.container[site.key]
        if site.index is None:
            shape = list(value)
            shape[site.axis] = count
            site.container[site.key] = shape
        else:
            shapes = list(value)
            shape = list(shapes[site.index])
            shape[site.axis] = count
            shapes[site.index] = shape
            site.container[site.key] = shapes


def slice_weight(value: np.ndarray, axes: dict[int, np.ndarray]) -> np.ndarray:
    for axis, idx in axes.items():
        if len(idx) != value.shape[axis]:  # untouched axes are not copied
            value = np.take(value, idx, axis=axis)
    return value
