"""Tests that pruned Keras 2 configs stay Keras 2 and load in tf_keras and in Keras 3.

Keras 2 in, Keras 2 out: tf_keras (and TAO-style Keras 2.2.4) configs keep their dialect,
change only what pruning changes, and the pruned config loads in tf_keras and in Keras 3.

Method: small tf_keras models with the layer kinds whose tf_keras configs Keras 3
refuses (found by saving each supported kind with tf_keras and loading it with
Keras 3), dead channels in the layer before them, pruned from the config as tf_keras
writes it into an HDF5 file. The pruned config is then built by tf_keras and by the
loader Keras 3's load_model uses for Keras 2 HDF5 files, with the pruned weights; both
must compute the original's outputs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from prunejob_contract.settings import PruneSettings
from pruner.core.build import build_model
from pruner.core.dialect import keras2_output_edits, keras3_config
from pruner.core.modelconfig import dialect
from pruner.core.plan import prepare
from pruner.core.surgery import apply_plan
from tests.pruner.core.helpers import build_k2, live, live_k2, randomize, run, zero_quarter

tf_keras = pytest.importorskip("tf_keras")
L = tf_keras.layers
TINY = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1)


def keras3_legacy_build(config: dict[str, Any], weights: dict[str, list[np.ndarray]]) -> Any:
    """What keras.models.load_model does with a Keras 2 HDF5 file's config (no edits)."""
    from keras.src.legacy.saving import saving_utils

    model = saving_utils.model_from_config(copy.deepcopy(config))
    set_weights(model, weights)
    return model


def tf_keras_build(config: dict[str, Any], weights: dict[str, list[np.ndarray]]) -> Any:
    return build_k2(config, weights)


def set_weights(model: Any, weights: dict[str, list[np.ndarray]]) -> None:
    for path, values in weights.items():
        layer = model
        for name in path.split("/"):
            layer = layer.get_layer(name)
        layer.set_weights(values)


def conv_then(layer: Callable[[], Any], shape: tuple[int, ...] = (8, 8, 3)) -> Any:
    """Conv2D(8) -> the layer -> a head, in tf_keras."""
    inp = tf_keras.Input(shape)
    conv = L.Conv2D if len(shape) == 3 else L.Conv1D
    x = conv(8, 3, padding="same", name="c1")(inp)
    x = layer()(x)
    if len(x.shape) > 2:
        x = L.Flatten()(x)
    return tf_keras.Model(inp, L.Dense(3, name="head")(x))


def td_then(layer: Callable[[], Any]) -> Any:
    inp = tf_keras.Input((2, 6, 6, 3))
    x = L.TimeDistributed(L.Conv2D(8, 3, padding="same"), name="td_c1")(inp)
    x = L.TimeDistributed(layer(), name="td_x")(x)
    x = L.TimeDistributed(L.Flatten(), name="td_flat")(x)
    return tf_keras.Model(inp, L.TimeDistributed(L.Dense(3), name="td_head")(x))


# each case: the model, and the keys Keras 3 refuses that the output must not carry
CASES: dict[str, tuple[Callable[[], Any], dict[str, list[str]]]] = {
    "DepthwiseConv2D": (
        lambda: conv_then(lambda: L.DepthwiseConv2D(3, padding="same", name="x")),
        {"x": ["groups"]},
    ),
    "Conv2DTranspose": (
        lambda: conv_then(lambda: L.Conv2DTranspose(4, 3, strides=2, name="x")),
        {"x": ["groups"]},
    ),
    "SeparableConv2D": (
        lambda: conv_then(lambda: L.SeparableConv2D(4, 3, name="x")),
        {"x": ["groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint"]},
    ),
    "SeparableConv1D": (
        lambda: conv_then(lambda: L.SeparableConv1D(4, 3, name="x"), (8, 3)),
        {"x": ["groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint"]},
    ),
    "SpatialDropout2D": (
        lambda: conv_then(lambda: L.SpatialDropout2D(0.5, name="x")),
        {"x": ["trainable", "noise_shape"]},
    ),
    "TimeDistributed(BatchNormalization)": (
        lambda: td_then(lambda: L.BatchNormalization()),
        {},
    ),
    "TimeDistributed(DepthwiseConv2D)": (
        lambda: td_then(lambda: L.DepthwiseConv2D(3, padding="same")),
        {"td_x.layer": ["groups"]},
    ),
}


def layer_configs(model: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in model["config"]["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        yield name, entry["config"]
        inner = entry["config"].get("layer")
        if isinstance(inner, dict):
            yield f"{name}.layer", inner["config"]


@pytest.mark.parametrize("case", list(CASES))
def test_keras2_out_loads_in_tf_keras_and_keras3(case: str) -> None:
    build, refused = CASES[case]
    model = build()
    randomize(model, seed=5)
    alive = zero_quarter(model, keep={"head", "td_head"})
    config, weights = live_k2(model)
    assert dialect(config) == "keras2"
    plan = prepare(config, weights, TINY).plan()
    kept = {lp.name: lp.kept for lp in plan.layers}
    first = "c1" if "c1" in kept else "td_c1"
    assert kept[first] == alive[first] and len(alive[first]) == 6
    new_config, new_weights = apply_plan(config, weights, plan)

    # the Keras 2 dialect is kept: list calls, batch_input_shape, no Keras 3 keys
    assert dialect(new_config) == "keras2"
    text, original = json.dumps(new_config), json.dumps(config)
    assert "batch_input_shape" in text and "__keras_tensor__" not in text
    for key in ('"batch_shape"', '"module"', '"registered_name"', '"build_config"'):
        assert text.count(key) <= original.count(key), key  # no Keras 3 keys added
    for name, layer in layer_configs(new_config):
        for key in refused.get(name, []):
            assert key not in layer, (name, key)
    # the refused keys were there in the input
    for name, layer in layer_configs(config):
        for key in refused.get(name, []):
            assert key in layer, (name, key)

    inputs = np.random.default_rng(2).normal(size=(2, *model.inputs[0].shape[1:]))
    inputs = inputs.astype("float32")
    want = run(model, inputs)
    assert float(np.max(np.abs(want))) > 0
    for builder in (tf_keras_build, keras3_legacy_build):
        got = run(builder(new_config, new_weights), inputs)
        assert float(np.max(np.abs(want - got))) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))


def test_keras2_input_that_keras3_refuses_is_analysed_without_keras() -> None:
    """The issue's first complaint: a tf_keras DepthwiseConv2D (config with `groups`)."""
    from keras.src.legacy.saving import saving_utils

    model = conv_then(lambda: L.DepthwiseConv2D(3, padding="same", name="x"))
    config, weights = live_k2(model)
    with pytest.raises(TypeError, match="groups"):
        saving_utils.model_from_config(copy.deepcopy(config))
    assert {lp.name for lp in prepare(config, weights, TINY).plan().layers} == {"c1", "x", "head"}


def test_only_the_refused_keys_change_and_only_at_their_defaults() -> None:
    inp = tf_keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="c1")(inp)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.Conv2D(4, 1, groups=2, name="grouped")(x)  # Conv2D keeps groups: Keras 3 has it
    config, _ = live_k2(tf_keras.Model(inp, L.Flatten()(x)))
    edited = copy.deepcopy(config)
    assert keras2_output_edits(edited) == ["dw: groups"]
    dw = next(c for n, c in layer_configs(edited) if n == "dw")
    dw["groups"] = 3  # not the default: meaningful, so kept
    assert keras2_output_edits(dw_model := copy.deepcopy(edited)) == []
    assert next(c for n, c in layer_configs(dw_model) if n == "dw")["groups"] == 3


def test_keras3_configs_are_never_edited() -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inp)
    config, _ = live(keras.Model(inp, keras.layers.SpatialDropout2D(0.5)(x)))
    before = copy.deepcopy(config)
    assert dialect(config) == "keras3"
    assert keras2_output_edits(config) == []
    assert config == before
    assert keras3_config(config) == before


def test_dialects_are_told_apart() -> None:
    import keras

    inp = tf_keras.Input((4,))
    k2_model = tf_keras.Model(inp, L.Dense(2)(inp))
    assert dialect(live_k2(k2_model)[0]) == "keras2"
    assert dialect(json.loads(k2_model.to_json())) == "keras2"  # tf_keras' newer JSON
    k2_seq, _ = live_k2(tf_keras.Sequential([L.Dense(2, input_shape=(4,))]))
    assert dialect(k2_seq) == "keras2"
    k3_seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert dialect(live(k3_seq)[0]) == "keras3"
    old_seq = {"class_name": "Sequential", "config": k2_seq["config"]["layers"]}  # Keras <= 2.1
    assert dialect(old_seq) == "keras2"


def test_thresholded_relu_builds_in_keras3_for_verify() -> None:
    """Keras 3 has no ThresholdedReLU: --verify builds it as ReLU(threshold=theta)."""
    model = conv_then(lambda: L.ThresholdedReLU(theta=0.3, name="x"))
    randomize(model, seed=1)
    config, weights = live_k2(model)
    built = build_model(config, weights)
    inputs = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(run(built, inputs), run(model, inputs), rtol=1e-5, atol=1e-5)
    theta = next(c for n, c in layer_configs(config) if n == "x")["theta"]
    assert theta == pytest.approx(0.3)  # the config itself is not changed


# --- TAO's dialect: standalone Keras 2.2.4 (written by hand after its serialization) ------
def keras224_config() -> dict[str, Any]:
    """A channels_first conv/BN/ReLU/pool/flatten/dense model as Keras 2.2.4 stores it in
    `model_config`: class Model, no dtype keys, initializers without module, BN axis an
    int, DepthwiseConv2D without groups."""

    def init(name: str) -> dict[str, Any]:
        return {"class_name": name, "config": {}}

    def conv(name: str, filters: int, inbound: str) -> dict[str, Any]:
        return {
            "name": name, "class_name": "Conv2D",
            "config": {"name": name, "trainable": True, "filters": filters,
                       "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                       "data_format": "channels_first", "dilation_rate": [1, 1],
                       "activation": "linear", "use_bias": True,
                       "kernel_initializer": init("Zeros"), "bias_initializer": init("Zeros"),
                       "kernel_regularizer": None, "bias_regularizer": None,
                       "activity_regularizer": None, "kernel_constraint": None,
                       "bias_constraint": None},
            "inbound_nodes": [[[inbound, 0, 0, {}]]],
        }  # fmt: skip

    def simple(name: str, class_name: str, inbound: str, **config: Any) -> dict[str, Any]:
        return {
            "name": name, "class_name": class_name,
            "config": {"name": name, "trainable": True, **config},
            "inbound_nodes": [[[inbound, 0, 0, {}]]],
        }  # fmt: skip

    layers = [
        {"name": "input_1", "class_name": "InputLayer",
         "config": {"batch_input_shape": [None, 3, 8, 8], "dtype": "float32",
                    "sparse": False, "name": "input_1"}, "inbound_nodes": []},
        conv("conv1", 8, "input_1"),
        simple("bn1", "BatchNormalization", "conv1", axis=1, momentum=0.99, epsilon=0.001,
               center=True, scale=True, beta_initializer=init("Zeros"),
               gamma_initializer=init("Ones"), moving_mean_initializer=init("Zeros"),
               moving_variance_initializer=init("Ones"), beta_regularizer=None,
               gamma_regularizer=None, beta_constraint=None, gamma_constraint=None),
        simple("relu1", "ReLU", "bn1", max_value=None, negative_slope=0.0, threshold=0.0),
        simple("dw", "DepthwiseConv2D", "relu1", kernel_size=[3, 3], strides=[1, 1],
               padding="same", data_format="channels_first", dilation_rate=[1, 1],
               activation="linear", use_bias=True, bias_initializer=init("Zeros"),
               bias_regularizer=None, activity_regularizer=None, bias_constraint=None,
               depth_multiplier=1, depthwise_initializer=init("Zeros"),
               depthwise_regularizer=None, depthwise_constraint=None),
        conv("conv2", 4, "dw"),
        simple("pool", "MaxPooling2D", "conv2", pool_size=[2, 2], padding="valid",
               strides=[2, 2], data_format="channels_first"),
        simple("flatten", "Flatten", "pool", data_format="channels_first"),
        {"name": "fc", "class_name": "Dense",
         "config": {"name": "fc", "trainable": True, "units": 3, "activation": "linear",
                    "use_bias": True, "kernel_initializer": init("Zeros"),
                    "bias_initializer": init("Zeros"), "kernel_regularizer": None,
                    "bias_regularizer": None, "activity_regularizer": None,
                    "kernel_constraint": None, "bias_constraint": None},
         "inbound_nodes": [[["flatten", 0, 0, {}]]]},
    ]  # fmt: skip
    return {
        "class_name": "Model",
        "config": {"name": "tao_model", "layers": layers,
                   "input_layers": [["input_1", 0, 0]], "output_layers": [["fc", 0, 0]]},
    }  # fmt: skip


def test_tao_keras224_config_prunes_and_keeps_its_dialect() -> None:
    config = keras224_config()
    rng = np.random.default_rng(0)
    weights = {
        "conv1": [rng.normal(size=(3, 3, 3, 8)), rng.normal(size=8)],
        "bn1": [rng.uniform(0.5, 1.5, 8), np.zeros(8), np.zeros(8), rng.uniform(0.5, 1.5, 8)],
        "dw": [rng.normal(size=(3, 3, 8, 1)), rng.normal(size=8)],
        "conv2": [rng.normal(size=(3, 3, 8, 4)), rng.normal(size=4)],
        "fc": [rng.normal(size=(4 * 4 * 4, 3)), rng.normal(size=3)],
    }
    weights["conv1"][0][..., [2, 5]] = 0  # channels 2 and 5 dead, conv2's filter 1 too
    weights["conv1"][1][[2, 5]] = 0
    weights["dw"][0][..., [2, 5], :] = 0
    weights["dw"][1][[2, 5]] = 0
    weights["conv2"][0][..., [1]] = 0
    weights["conv2"][1][[1]] = 0
    assert dialect(config) == "keras2"
    plan = prepare(config, weights, TINY).plan()
    kept = {lp.name: lp.kept for lp in plan.layers}
    assert kept == {"conv1": [0, 1, 3, 4, 6, 7], "dw": [0, 1, 3, 4, 6, 7],
                    "conv2": [0, 2, 3], "fc": [0, 1, 2]}  # fmt: skip
    new_config, new_weights = apply_plan(config, weights, plan)
    # only the counts changed: the same JSON but filters 8 -> 6 and 4 -> 3
    expected = keras224_config()
    expected["config"]["layers"][1]["config"]["filters"] = 6
    expected["config"]["layers"][5]["config"]["filters"] = 3
    assert new_config == expected
    assert json.dumps(new_config) == json.dumps(expected)  # key order too
    # channels_first Flatten (Keras transposes to channels-last order first): the kept
    # channels' positions, p * 4 + c over the 16 positions
    rows = [p * 4 + c for p in range(16) for c in (0, 2, 3)]
    np.testing.assert_array_equal(new_weights["fc"][0], weights["fc"][0][rows])
    np.testing.assert_array_equal(new_weights["bn1"][0], weights["bn1"][0][[0, 1, 3, 4, 6, 7]])
    assert new_weights["dw"][0].shape == (3, 3, 6, 1)
