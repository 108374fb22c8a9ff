"""Tests that one model gives the same plan and weights from each of five kinds of input.

One model, five ways in: the plan from a live Keras 3 model, from it saved as `.keras` and
`.h5`, from the same model in tf_keras and from that saved as `.hdf5` must be the same.

The configs are the files' own (`config.json`, the `model_config` attribute) in their
own dialects: Keras 3 stores shapes in its calls, Keras 2 stores none (the kinds
infer them). The weights are those of the model Keras loads from each file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from prunejob_contract.settings import PruneSettings
from pruner.core.modelconfig import dialect
from pruner.core.plan import prepare
from pruner.core.surgery import apply_plan
from tests.pruner.core.helpers import live, live_k2, randomize, saved, weights_of, zero_quarter

tf_keras = pytest.importorskip("tf_keras")
SETTINGS = PruneSettings(threshold=1e-3, granularity=2, min_num_filters=2)


def build(layers: Any, model_class: Any, input_fn: Any) -> Any:
    """A MobileNet/ResNet-style model with a squeeze-and-excite gate and a concatenation,
    written once for both Keras versions (same layer names)."""
    inp = input_fn((12, 12, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.Conv2D(16, 1, name="project")(y)
    x = layers.Add(name="add")([x, y])
    se = layers.GlobalAveragePooling2D(name="se_gap")(x)
    se = layers.Reshape((1, 1, 16), name="se_reshape")(se)
    se = layers.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    x = layers.Multiply(name="se_excite")([x, se])
    a = layers.Conv2D(8, 3, strides=2, padding="same", name="branch_a")(x)
    b = layers.SeparableConv2D(12, 3, strides=2, padding="same", name="branch_b")(x)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(10, activation="relu", name="fc")(x)
    return model_class(inp, layers.Dense(3, name="logits")(x), name="five_ways")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Any]]:
    tmp = tmp_path_factory.mktemp("five_ways")
    model = build(keras.layers, keras.Model, keras.Input)
    randomize(model, seed=11)
    zero_quarter(model, keep={"logits"})
    twin = build(tf_keras.layers, tf_keras.Model, tf_keras.Input)
    for path, values in weights_of(model).items():
        twin.get_layer(path).set_weights(values)
    out: dict[str, tuple[dict[str, Any], Any]] = {
        "live": live(model),
        "tf_keras live": live_k2(twin),
    }
    for suffix in (".keras", ".h5"):
        path = tmp / f"model{suffix}"
        model.save(path)
        out[suffix] = saved(path)
    path = tmp / "model.hdf5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twin.save(path, include_optimizer=False)
    out[".hdf5"] = saved(path, lambda p: tf_keras.models.load_model(p, compile=False))
    return out


def test_the_files_have_their_own_dialects(sources: dict[str, Any]) -> None:
    assert {name: dialect(config) for name, (config, _) in sources.items()} == {
        "live": "keras3",
        "tf_keras live": "keras2",
        ".keras": "keras3",
        ".h5": "keras3",
        ".hdf5": "keras2",
    }


def test_every_way_in_gives_the_same_plan_and_totals(sources: dict[str, Any]) -> None:
    results = {}
    for name, (config, weights) in sources.items():
        prepared = prepare(config, weights, SETTINGS)
        plan = prepared.plan()
        results[name] = (plan.to_json(), prepared.totals(plan))
    reference = results["live"]
    assert sum(lp["after"] for lp in reference[0]["layers"]) < sum(
        lp["before"] for lp in reference[0]["layers"]
    )
    for name, result in results.items():
        assert result == reference, name


def test_every_way_in_gives_the_same_pruned_weights(sources: dict[str, Any]) -> None:
    pruned = {}
    for name, (config, weights) in sources.items():
        plan = prepare(config, weights, SETTINGS).plan()
        pruned[name] = apply_plan(config, weights, plan)[1]
    reference = pruned["live"]
    for name, weights in pruned.items():
        assert weights.keys() == reference.keys(), name
        for path, values in weights.items():
            assert len(values) == len(reference[path]), (name, path)
            for got, want in zip(values, reference[path], strict=True):
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {path}")


def test_saved_pruned_keras3_config_is_what_keras_saves(
    sources: dict[str, Any], tmp_path: Path
) -> None:
    """The pruned .keras config matches the config Keras itself writes for a model built
    from it (the shapes we edit are the ones Keras would store)."""
    from pruner.core.build import build_model

    config, weights = sources[".keras"]
    plan = prepare(config, weights, SETTINGS).plan()
    new_config, new_weights = apply_plan(config, weights, plan)
    rebuilt = build_model(new_config, new_weights)
    rebuilt.save(tmp_path / "again.keras")
    again, _ = saved(tmp_path / "again.keras")
    assert without_ids(again["config"]["layers"]) == without_ids(new_config["config"]["layers"])


def without_ids(value: Any) -> Any:
    """Keras numbers shared objects (dtype policies) per save: not part of the model."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


EDITABLE = {"filters", "units", "shape", "input_shape", "batch_shape", "batch_input_shape",
            "target_shape", "build_input_shape"}  # fmt: skip


def changed_keys(a: Any, b: Any, key: str = "") -> set[str]:
    """The keys under which two JSON values differ (a list element counts as its key; a
    dropped key as "-key"); the keys left must come in the same order."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert list(b) == [k for k in a if k in b], f"keys of {key!r} moved or were added"
        dropped = {f"-{k}" for k in a if k not in b}
        return dropped.union(*(changed_keys(a[k], b[k], k) for k in b))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(*(changed_keys(x, y, key) for x, y in zip(a, b, strict=True)))
    return set() if a == b else {key}


@pytest.mark.parametrize("source", [".keras", ".h5", ".hdf5"])
def test_the_pruned_config_changes_only_pruned_counts(sources: dict[str, Any], source: str) -> None:
    config, weights = sources[source]
    plan = prepare(config, weights, SETTINGS).plan()
    new_config, _ = apply_plan(config, weights, plan)
    changed = changed_keys(config, new_config)
    assert {"filters", "units"} <= changed
    if source == ".keras":  # Keras 3 stores the shapes of calls and of builds
        assert {"shape", "input_shape"} <= changed
    elif source == ".h5":  # Keras 3's HDF5 config has no build configs
        assert "shape" in changed
    else:  # Keras 2 stores none; the Keras-3-compatibility drops of pruner.core.dialect
        assert {"-groups", "-kernel_initializer"} <= changed
        changed -= {"-groups", "-kernel_initializer", "-kernel_regularizer", "-kernel_constraint"}
    assert changed <= EDITABLE, changed - EDITABLE
