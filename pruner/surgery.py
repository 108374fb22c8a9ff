"""Apply a plan: rewrite layer configs, rebuild the model once, set sliced weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pruner.counting import layer_indices
from pruner.graph import as_functional, build_graph

if TYPE_CHECKING:
    import keras

    from pruner.plan import PrunePlan


def apply_plan(model: keras.Model, plan: PrunePlan) -> keras.Model:
    """A new functional model with the plan's filters removed; `model` is not changed."""
    import keras

    from pruner.plan import kept_from_plan

    model = as_functional(model)
    graph = build_graph(model, plan.settings.excluded_layers)
    kept = kept_from_plan(graph, plan)
    indices = {
        path: layer_indices(graph, rec, kept) for path, rec in graph.records.items() if rec.calls
    }
    for path, rec in graph.records.items():
        if path in indices:
            rec.kind.rewrite_config(rec, rec.config, *indices[path])
    strip_build_configs(graph.config)
    pruned = keras.Model.from_config(graph.config)

    for path, rec in graph.records.items():
        variables = getattr(rec.op, "weights", None)
        if not variables or path not in indices:
            continue
        shapes = {w.name: tuple(w.shape) for w in variables}
        index_map = rec.kind.index_map(rec, shapes, *indices[path])
        values = [slice_weight(w.numpy(), index_map.get(w.name, {})) for w in variables]
        find_layer(pruned, path).set_weights(values)
    return pruned


def slice_weight(value: np.ndarray, axes: dict[int, np.ndarray]) -> np.ndarray:
    for axis, idx in axes.items():
        if len(idx) != value.shape[axis]:  # untouched axes are not copied
            value = np.take(value, idx, axis=axis)
    return value


def find_layer(model: Any, path: str) -> Any:
    layer = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer


def strip_build_configs(config: Any) -> None:
    """Drop stale shapes recorded at build time; from_config then builds from the
    (rewritten) graph instead."""
    if isinstance(config, dict):
        for key in ("build_config", "build_input_shape", "compile_config"):
            config.pop(key, None)
        for value in config.values():
            strip_build_configs(value)
    elif isinstance(config, list):
        for value in config:
            strip_build_configs(value)
