"""The original weights with the plan's removed filters zeroed, for `--verify`.

Removed filters get a zero kernel slice and bias; per-channel affine layers on removed
channels (BatchNormalization, LayerNormalization, GroupNormalization gamma and beta,
LayerScale's gamma; depthwise kernels) are zeroed so the channel stays exactly 0 after
them. Where a removed channel still becomes non-zero further on (an activation with
f(0) != 0 feeding another layer, a Normalization layer), the masked model is not
comparable. Numpy only: build the masked model with `pruner.core.build.build_model`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pruner.core.counting import layer_indices
from pruner.core.graph import IN, LayerRecord
from pruner.core.plan import PrunePlan, graph_for, kept_from_plan
from pruner.core.walk import Weights


def mask_removed_filters(
    config: dict[str, Any], weights: Weights, plan: PrunePlan
) -> dict[str, list[np.ndarray]]:
    """The same weights (same paths, order and shapes) with the removed filters zeroed;
    masked arrays are copies, the others are the input's own objects."""
    graph = graph_for(config, weights, plan.settings)
    kept = kept_from_plan(graph, plan)
    masked = {path: list(values) for path, values in weights.items()}
    for path, rec in graph.records.items():
        if not (rec.weights and rec.calls and rec.kind.masked_weights):
            continue
        in_idx, out_idx = layer_indices(graph, rec, kept)
        masked[path] = _zero_removed(rec, in_idx, out_idx)
    return masked


def _zero_removed(rec: LayerRecord, in_idx: np.ndarray, out_idx: np.ndarray) -> list[np.ndarray]:
    kind = rec.kind
    kept_idx = in_idx if kind.mask_role == IN else out_idx
    roles = kind.roles(rec)
    values = []
    for name in rec.weight_names:
        value = rec.weights[name]
        if name in kind.masked_weights:
            for axis, role in roles.get(name, {}).items():
                if role != kind.mask_role:
                    continue
                axis %= value.ndim
                removed = np.setdiff1d(np.arange(value.shape[axis]), kept_idx)
                if removed.size:
                    value = np.array(value)  # a copy: the input stays as it was
                    index: list[slice | np.ndarray] = [slice(None)] * value.ndim
                    index[axis] = removed
                    value[tuple(index)] = 0
        values.append(value)
    return values
