"""The layers of a model config as the pruner names them, in any Keras dialect.

Plain `name`, and `outer/inner` for the layers of nested models (functional or Sequential).

Pure functions on the JSON-decoded config (Keras 3's `{"class_name", "config"}`,
tf.keras 2.x's and standalone Keras 2.2.4's alike); no Keras.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# Class names a nested model's config carries (Keras 3 / tf.keras "Functional", Keras
# 2.2.4 "Model", "Sequential" everywhere).
MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})


def layer_name(entry: dict[str, Any]) -> str:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return str(name if name is not None else entry.get("name", ""))


def model_layers(entry: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The layer configs of a (nested) model entry, or None when it is no model.

    Sequential configs are `{"name", "layers"}` (Keras >= 2.2.3) or a bare list (older).
    """
    config = entry.get("config")
    if entry.get("class_name") in MODEL_CLASSES or (
        isinstance(config, dict) and isinstance(config.get("layers"), list)
    ):
        layers = config if isinstance(config, list) else (config or {}).get("layers")
        if isinstance(layers, list):
            return [layer for layer in layers if isinstance(layer, dict)]
    return None


def is_sequential(entry: dict[str, Any]) -> bool:
    return entry.get("class_name") == "Sequential"


def tracked_layers(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers Keras tracks (and saves) for a model: `model.layers`, which for a
    Sequential leaves out the InputLayer its config may start with."""
    layers = model_layers(entry) or []
    if is_sequential(entry) and layers and layers[0].get("class_name") == "InputLayer":
        return layers[1:]
    return layers


def leaf_paths(entry: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, layer config) of every non-model layer under `entry`, depth first in
    layer order; nested models contribute their layers as `outer/inner`."""
    for layer in tracked_layers(entry):
        path = prefix + layer_name(layer)
        if model_layers(layer) is not None:
            yield from leaf_paths(layer, path + "/")
        else:
            yield path, layer


def snake_case(class_name: str, *, keras3: bool) -> str:
    """The group name Keras' `.keras` writer derives from a class name
    (`keras.src.utils.naming.to_snake_case`, or tf.keras' `generic_utils.to_snake_case`)."""
    name = re.sub(r"\W+", "", class_name) if keras3 else class_name
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    if not keras3 and name.startswith("_"):
        return "private" + name
    return name


def unique_names(names: list[str]) -> list[str]:
    """Keras' container naming: the first `conv2d`, then `conv2d_1`, `conv2d_2`, ..."""
    used: dict[str, int] = {}
    unique = []
    for name in names:
        if name in used:
            used[name] += 1
            unique.append(f"{name}_{used[name]}")
        else:
            used[name] = 0
            unique.append(name)
    return unique
