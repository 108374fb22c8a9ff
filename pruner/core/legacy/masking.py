"""The original model with the plan's removed filters zeroed, for `--verify`.

Removed filters get a zero kernel slice and bias; per-channel affine layers on removed
channels (BatchNormalization, LayerNormalization, GroupNormalization gamma and beta;
depthwise kernels) are zeroed so the channel stays exactly 0 after them. Where a
removed channel still becomes non-zero further on (an activation with f(0) != 0 feeding
another layer, a Normalization layer), the masked model is not comparable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pruner.core.legacy.counting import layer_indices
from pruner.core.legacy.graph import IN, LayerRecord
from pruner.core.legacy.plan import PrunePlan, kept_from_plan
from pruner.core.legacy.surgery import find_layer, strip_build_configs
from pruner.core.legacy.walk import as_functional, build_graph

if TYPE_CHECKING:
    import keras


def mask_removed_filters(model: keras.Model, plan: PrunePlan) -> keras.Model:
    """A copy of `model` (same architecture) whose removed filters are zeroed."""
    import keras  # lazy: importing the pruner must not load TensorFlow

    model = as_functional(model)
    graph = build_graph(model, plan.settings.excluded_layers)
    kept = kept_from_plan(graph, plan)
    config = model.get_config()
    strip_build_configs(config)
    masked = keras.Model.from_config(config)
    for path, rec in graph.records.items():
        variables = getattr(rec.op, "weights", None)
        if not variables:
            continue
        values = [w.numpy() for w in variables]
        if rec.calls and rec.kind.masked_weights:
            in_idx, out_idx = layer_indices(graph, rec, kept)
            _zero_removed(rec, values, in_idx, out_idx)
        find_layer(masked, path).set_weights(values)
    return masked


def _zero_removed(
    rec: LayerRecord, values: list[np.ndarray], in_idx: np.ndarray, out_idx: np.ndarray
) -> None:
    kind = rec.kind
    kept_idx = in_idx if kind.mask_role == IN else out_idx
    roles = kind.roles(rec)
    for w, value in zip(rec.op.weights, values, strict=True):
        if w.name not in kind.masked_weights:
            continue
        for axis, role in roles.get(w.name, {}).items():
            if role != kind.mask_role:
                continue
            axis %= value.ndim
            removed = np.setdiff1d(np.arange(value.shape[axis]), kept_idx)
            if removed.size:
                index: list[slice | np.ndarray] = [slice(None)] * value.ndim
                index[axis] = removed
                value[tuple(index)] = 0
