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

from pruner.counting import layer_indices
from pruner.graph import as_functional, build_graph
from pruner.surgery import find_layer

if TYPE_CHECKING:
    import keras

    from pruner.plan import PrunePlan


def mask_removed_filters(model: keras.Model, plan: PrunePlan) -> keras.Model:
    import keras

    from pruner.layers import IN
    from pruner.plan import kept_from_plan

    model = as_functional(model)
    graph = build_graph(model, plan.settings.excluded_layers)
    kept = kept_from_plan(graph, plan)
    masked = keras.Model.from_config(model.get_config())
    masked.set_weights(model.get_weights())
    for path, rec in graph.records.items():
        kind = rec.kind
        variables = getattr(rec.op, "weights", None)
        if not rec.calls or not variables or not kind.masked_weights:
            continue
        in_idx, out_idx = layer_indices(graph, rec, kept)
        kept_idx = in_idx if kind.mask_role == IN else out_idx
        roles = kind.roles(rec)
        values = [np.array(w) for w in variables]
        changed = False
        for w, value in zip(variables, values, strict=True):
            if w.name not in kind.masked_weights:
                continue
            for axis, role in roles.get(w.name, {}).items():
                if role != kind.mask_role:
                    continue
                removed = np.setdiff1d(np.arange(value.shape[axis]), kept_idx)
                if removed.size:
                    index = [slice(None)] * value.ndim
                    index[axis] = removed
                    value[tuple(index)] = 0
                    changed = True
        if changed:
            find_layer(masked, path).set_weights(values)
    return masked
