"""Keras 2 configs that Keras 3 must also load: the few edits that make them loadable.

A Keras 2 file (tf_keras 2.x, TAO's Keras 2.2.4) stays a Keras 2 file: surgery keeps
its dialect and changes only pruned counts, plus `keras2_output_edits`, which drops
keys Keras 3 refuses but that say nothing (their value is the default, or the layer
never reads them), so the pruned file loads in tf_keras and in Keras 3 alike. Found
by saving every supported layer kind with tf_keras 2.21 and loading it with Keras 3.15
(tests/pruner/core/test_dialect.py does it again):

- `groups: 1` on DepthwiseConv1D/2D, Conv1D/2D/3DTranspose, SeparableConv1D/2D (tf_keras
  writes it, its Conv base class has it; Keras 3 has no such argument there).
- `kernel_initializer`, `kernel_regularizer`, `kernel_constraint` on SeparableConv1D/2D
  (inherited from Conv in tf_keras; a separable convolution uses its depthwise_ and
  pointwise_ keys, so these are never read, whatever their value).
- `trainable: true` and `noise_shape: null` on SpatialDropout1D/2D/3D (Keras 3's takes
  neither).
- a one-element list `axis` on a layer wrapped in TimeDistributed (Keras 3's legacy
  loader turns `[3]` into `3` for top-level layers only): written as the integer.

`keras3_config` goes further, for building the model in Keras 3 only (`--verify`):
the edits above wherever values allow, and ThresholdedReLU (removed in Keras 3) as
ReLU(threshold=theta) (equal but at x == theta).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from pruner.core.modelconfig import NESTED_MODEL_CLASSES, dialect

GROUPS_DEFAULT = {"groups": 1}
DROP_WHEN_DEFAULT: dict[str, dict[str, Any]] = {
    "DepthwiseConv1D": GROUPS_DEFAULT,
    "DepthwiseConv2D": GROUPS_DEFAULT,
    "Conv1DTranspose": GROUPS_DEFAULT,
    "Conv2DTranspose": GROUPS_DEFAULT,
    "Conv3DTranspose": GROUPS_DEFAULT,
    "SeparableConv1D": GROUPS_DEFAULT,
    "SeparableConv2D": GROUPS_DEFAULT,
    "SpatialDropout1D": {"trainable": True, "noise_shape": None},
    "SpatialDropout2D": {"trainable": True, "noise_shape": None},
    "SpatialDropout3D": {"trainable": True, "noise_shape": None},
}
DROP_ALWAYS: dict[str, tuple[str, ...]] = {
    "SeparableConv1D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
    "SeparableConv2D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
}


def iter_layers(
    model: dict[str, Any], wrapped: bool = False
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every layer entry of a model config (nested models and wrapped layers included),
    with whether it sits inside a wrapper (TimeDistributed)."""
    config = model.get("config")
    layers = config.get("layers") if isinstance(config, dict) else config
    for entry in layers if isinstance(layers, list) else ():
        if not isinstance(entry, dict):
            continue
        yield entry, wrapped
        inner = entry.get("config")
        if entry.get("class_name") in NESTED_MODEL_CLASSES:
            yield from iter_layers(entry, wrapped)
        elif isinstance(inner, dict) and isinstance(inner.get("layer"), dict):
            yield from _wrapped(inner["layer"])


def _wrapped(entry: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
    yield entry, True
    inner = entry.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("layer"), dict):
        yield from _wrapped(inner["layer"])


def _edit_entry(entry: dict[str, Any], wrapped: bool) -> None:
    config = entry.get("config")
    if not isinstance(config, dict):
        return
    class_name = entry.get("class_name")
    for key, default in DROP_WHEN_DEFAULT.get(str(class_name), {}).items():
        if key in config and config[key] == default:
            del config[key]
    for key in DROP_ALWAYS.get(str(class_name), ()):
        config.pop(key, None)
    axis = config.get("axis")
    if wrapped and isinstance(axis, list) and len(axis) == 1 and isinstance(axis[0], int):
        config["axis"] = axis[0]


def keras2_output_edits(model: dict[str, Any]) -> list[str]:
    """Apply the Keras-3-compatibility edits to a Keras 2 config in place; returns what
    changed (`layer: key`), for tests and logs. Keras 3 configs are left alone."""
    if dialect(model) != "keras2":
        return []
    changed: list[str] = []
    for entry, wrapped in iter_layers(model):
        before = dict(entry.get("config") or {})
        _edit_entry(entry, wrapped)
        after = entry.get("config") or {}
        name = entry.get("name") or before.get("name") or entry.get("class_name")
        changed += [f"{name}: {key}" for key in before if before[key] != after.get(key, _GONE)]
    return changed


_GONE = object()


def _thresholded_relu(entry: dict[str, Any]) -> None:
    config = entry["config"]
    theta = float(config.pop("theta", 1.0))
    entry["class_name"] = "ReLU"
    for key in ("negative_slope", "max_value"):
        config.setdefault(key, 0.0 if key == "negative_slope" else None)
    config["threshold"] = theta


VERIFY_ONLY: dict[str, Callable[[dict[str, Any]], None]] = {
    "ThresholdedReLU": _thresholded_relu,
}


def keras3_config(model: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config that Keras 3 can build (for `--verify`): Keras 3 configs as
    they are; Keras 2 configs with the output edits and the verify-only rewrites."""
    model = copy.deepcopy(model)
    if dialect(model) != "keras2":
        return model
    keras2_output_edits(model)
    for entry, _ in iter_layers(model):
        rewrite = VERIFY_ONLY.get(str(entry.get("class_name")))
        if rewrite is not None and isinstance(entry.get("config"), dict):
            rewrite(entry)
    return model
