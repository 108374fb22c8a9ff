"""Keras HDF5 model files (`.h5`/`.hdf5`), read into (config, weights) and written back edited.

As tf.keras 2.x, TAO's standalone Keras 2.2.4 and Keras 3's legacy writer write them.

The layout all three share: root attributes `model_config` (JSON), `keras_version`,
`backend` and (when compiled) `training_config`; a group `model_weights` with
attributes `layer_names`, `backend`, `keras_version` and one group per layer (in
`layer_names` order), whose `weight_names` attribute lists that layer's weights in
Keras order, each a dataset at `model_weights/<layer>/<weight name>`; and, when
compiled, `optimizer_weights`. Long name lists are split into `layer_names0`,
`layer_names1`, ... A nested model is one layer group holding every weight of its
layers, trainable ones first (`model.weights` order): its weight names
(`inner_layer/kernel:0`, or `outer/inner_layer/kernel` from Keras 3 for a
Sequential) tell which inner layer each belongs to, and each inner layer keeps its
own weights in their order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py

from prunejob_contract.errors import InvalidModel
from pruner.io import h5files, layerpaths
from pruner.io.h5files import Layout, Weights

WEIGHTS_GROUP = "model_weights"
TRAINING_CONFIG = "training_config"
OPTIMIZER_GROUP = "optimizer_weights"


def read(path: Path) -> tuple[dict[str, Any], Weights, str | None, Layout]:
    """(config, weights, keras_version, layout) of an HDF5 model file."""
    with h5py.File(path, "r") as handle:
        if "model_config" not in handle.attrs:
            # Keras 2's save_weights: layer_names at the root; Keras 3's .weights.h5: the
            # .keras archive's weights layout.
            names_at_root = "layer_names" in handle.attrs or "layer_names0" in handle.attrs
            if names_at_root or "layers" in handle or "vars" in handle:
                raise InvalidModel(
                    f"{path} holds weights only, not a model (no model config); save the whole "
                    "model (model.save), not model.save_weights"
                )
            raise InvalidModel(f"{path} is an HDF5 file but not a Keras model (no model_config)")
        try:
            config = json.loads(h5files.text(handle.attrs["model_config"]))
        except ValueError as err:
            raise InvalidModel(f"{path}: its model config is not valid JSON ({err})") from None
        if not isinstance(config, dict) or "config" not in config:
            raise InvalidModel(f"{path}: its model config is not a Keras model config")
        version = handle.attrs.get("keras_version")
        layout = Layout()
        if TRAINING_CONFIG in handle.attrs:
            layout.dropped.append("training config")
        if OPTIMIZER_GROUP in handle:
            layout.dropped.append("optimizer state")
        if WEIGHTS_GROUP not in handle:
            raise InvalidModel(f"{path} holds a model config but no weights ({WEIGHTS_GROUP})")
        weights = _read_weights(path, handle[WEIGHTS_GROUP], config, layout)
        return config, weights, None if version is None else h5files.text(version), layout


def _read_weights(path: Path, group: h5py.Group, config: dict[str, Any], layout: Layout) -> Weights:
    names = h5files.string_list(group, "layer_names")
    if names is None:
        raise InvalidModel(f"{path}: {WEIGHTS_GROUP} lists no layer_names; not a Keras model file")
    nested = {
        layerpaths.layer_name(entry): entry
        for entry in layerpaths.tracked_layers(config)
        if layerpaths.model_layers(entry) is not None
    }
    weights: Weights = {}
    for name in names:
        if name not in group:
            raise InvalidModel(f"{path}: layer {name!r} is listed but has no weights group")
        layer_group = group[name]
        weight_names = h5files.string_list(layer_group, "weight_names") or []
        owners = (
            _inner_owners(path, name, nested[name], weight_names)
            if name in nested
            else [name] * len(weight_names)
        )
        for weight_name, owner in zip(weight_names, owners, strict=True):
            if weight_name not in layer_group:
                raise InvalidModel(f"{path}: weight {weight_name!r} of layer {name!r} is missing")
            dataset = layer_group[weight_name]
            values = weights.setdefault(owner, [])
            layout.datasets[dataset.name.lstrip("/")] = (owner, len(values))
            values.append(dataset[()])
    return weights


def _inner_owners(
    path: Path, outer: str, entry: dict[str, Any], weight_names: list[str]
) -> list[str]:
    """The `outer/inner` path of the layer each weight of a nested model belongs to,
    told by the layer names in the weight's name (the rightmost one that names a layer
    of the nested model, before the variable's own name)."""
    by_name: dict[str, list[str]] = {}
    for inner_path, _ in layerpaths.leaf_paths(entry, outer + "/"):
        by_name.setdefault(inner_path.rpartition("/")[2], []).append(inner_path)
    owners = []
    for weight_name in weight_names:
        parts = weight_name.split("/")[:-1]
        found = None
        for index in range(len(parts) - 1, -1, -1):
            candidates = by_name.get(parts[index], [])
            if len(candidates) > 1:  # the same name in two inner models: the path decides
                prefix = "/".join(parts[: index + 1])
                candidates = [c for c in candidates if c.endswith(prefix)] or candidates
            if len(candidates) == 1:
                found = candidates[0]
                break
            if candidates:
                raise InvalidModel(
                    f"{path}: weight {weight_name!r} of nested model {outer!r} may belong to "
                    f"any of {', '.join(candidates)}; rename the layers so that names are unique"
                )
        if found is None:
            raise InvalidModel(
                f"{path}: cannot tell which layer of nested model {outer!r} weight "
                f"{weight_name!r} belongs to (its name names none of the model's layers)"
            )
        owners.append(found)
    return owners


def write(
    source: Path, target: Path, config: dict[str, Any], weights: Weights, layout: Layout
) -> None:
    """Write `source` to `target` with the model config replaced by `config` and each
    weight dataset by its value in `weights`; the training config and optimizer state
    are left out, everything else is copied as it is."""
    replacements = layout.replacements(weights)
    with h5py.File(source, "r") as original, h5files.create_like(target, original) as out:
        for name in original.attrs:
            if name == TRAINING_CONFIG:
                continue
            if name == "model_config":
                like = original.attrs.get_id(name)
                h5files.write_string_attr(out, name, json.dumps(config), like)
            else:
                attr = original.attrs.get_id(name)
                out.attrs.create(name, original.attrs[name], shape=attr.shape, dtype=attr.dtype)
        h5files.copy_edited(original, out, replacements, drop=frozenset({OPTIMIZER_GROUP}))
