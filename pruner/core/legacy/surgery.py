"""Apply a plan: rewrite layer configs, rebuild the model once, with sliced weights.

Creating a TensorFlow variable costs milliseconds, and a rebuilt ResNet50 has 320 of
them: building them with their random initializers and then assigning the sliced
values costs about twice as much as creating them from the sliced values directly.
So surgery hands each layer a `_Preset` initializer holding its sliced weight, and
after the rebuild puts the original initializers back on the layers (each layer keeps
its constructor initializers in public attributes of the same name, which is what its
`get_config` saves). Weights without a known initializer are set afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pruner.core.legacy.counting import layer_indices
from pruner.core.legacy.plan import PrunePlan, kept_from_plan
from pruner.core.legacy.walk import as_functional, build_graph

if TYPE_CHECKING:
    import keras


def apply_plan(model: keras.Model, plan: PrunePlan) -> keras.Model:
    """A new functional model with the plan's filters removed; `model` is not changed."""
    import keras  # lazy: importing the pruner must not load TensorFlow

    model = as_functional(model)
    graph = build_graph(model, plan.settings.excluded_layers)
    kept = kept_from_plan(graph, plan)
    originals: dict[str, dict[str, Any]] = {}  # path -> {initializer key: config}
    leftovers: dict[str, list[np.ndarray]] = {}  # path -> all sliced weights, set later
    for path, rec in graph.records.items():
        if not rec.calls:
            continue
        in_idx, out_idx = layer_indices(graph, rec, kept)
        rec.kind.rewrite_config(rec, rec.config, in_idx, out_idx)
        variables = getattr(rec.op, "weights", None)
        if not variables:
            continue
        shapes = {w.name: tuple(w.shape) for w in variables}
        index_map = rec.kind.index_map(rec, shapes, in_idx, out_idx)
        values = [slice_weight(w.numpy(), index_map.get(w.name, {})) for w in variables]
        keys = [rec.kind.initializer_key(w.name) for w in variables]
        if len(set(keys)) == len(keys) and all(key in rec.config for key in keys):
            originals[path] = {key: rec.config[key] for key in keys}
            for key, value in zip(keys, values, strict=True):
                rec.config[key] = _Preset(value)
        else:
            leftovers[path] = values
    strip_build_configs(graph.config)
    pruned = keras.Model.from_config(graph.config)
    for path, configs in originals.items():
        layer = find_layer(pruned, path)
        for key, config in configs.items():
            setattr(layer, key, keras.initializers.deserialize(config))
    for path, values in leftovers.items():
        find_layer(pruned, path).set_weights(values)
    return pruned


class _Preset:
    """An initializer that returns one given array (used once, during the rebuild)."""

    def __init__(self, value: np.ndarray):
        self.value = value

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        import keras  # lazy: importing the pruner must not load TensorFlow

        if tuple(shape) != self.value.shape:
            raise ValueError(f"preset weight has shape {self.value.shape}, layer wants {shape}")
        return keras.ops.convert_to_tensor(self.value, dtype=dtype)


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
