"""Tests of the layer kinds and one-line errors that issue 10 adds.

The layer kinds issue 10 adds (LayerScale, CustomScaleLayer, TimeDistributed, excluded
unknown classes) and the new one-line errors (weights that do not match their layer,
shapes that cannot be worked out).

Method as in test_layer_kinds: chosen filters zeroed by hand, prune the config and
weights, check the kept filters and that the pruned model computes the same outputs.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from keras import layers
from keras.src.applications.convnext import LayerScale
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

from prunejob_contract.errors import InvalidModel, UnsupportedLayer
from prunejob_contract.settings import PruneSettings
from pruner.core.build import build_model
from pruner.core.plan import PrunePlan, prepare
from pruner.core.surgery import apply_plan
from tests.pruner.core.helpers import build_k2, live, live_k2, randomize, run, walk

TINY = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1)


def zero(model: Any, path: str, channels: list[int], axis: int = -1) -> None:
    """Zero output channels of a kernel (and bias), or of a 1-D per-channel weight."""
    layer = dict(walk(model))[path]
    values = [np.array(v) for v in layer.get_weights()]
    for value in values:
        index: list[Any] = [slice(None)] * value.ndim
        index[axis if value.ndim > 1 else -1] = channels
        value[tuple(index)] = 0
    layer.set_weights(values)


def prune_and_compare(
    model: Any, expected: dict[str, list[int]], config_weights: Any = None
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]], keras.Model]:
    config, weights = config_weights or live(model)
    plan = prepare(config, weights, TINY).plan()
    assert {lp.name: lp.kept for lp in plan.layers if lp.name in expected} == expected
    new_config, new_weights = apply_plan(config, weights, plan)
    pruned = build_model(new_config, new_weights)
    shape = (2, *model.inputs[0].shape[1:])
    inputs = np.random.default_rng(0).normal(size=shape).astype("float32")
    want, got = run(model, inputs), run(pruned, inputs)
    assert float(np.max(np.abs(want))) > 0
    assert float(np.max(np.abs(want - got))) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))
    return new_config, new_weights, pruned


def apply_and_compare_k2(
    model: Any, config: dict[str, Any], weights: dict[str, Any], plan: PrunePlan, seed: int
) -> dict[str, list[np.ndarray]]:
    """Apply `plan`, rebuild the result with tf_keras and check it computes what the
    tf_keras `model` does on a random batch of 2 (from `seed`); the pruned weights."""
    new_config, new_weights = apply_plan(config, weights, plan)
    shape = (2, *tuple(model.inputs[0].shape[1:]))
    inputs = np.random.default_rng(seed).normal(size=shape).astype("float32")
    got = run(build_k2(new_config, new_weights), inputs)
    np.testing.assert_allclose(got, run(model, inputs), rtol=1e-5, atol=1e-5)
    return new_weights


def all_but(total: int, removed: list[int]) -> list[int]:
    return [i for i in range(total) if i not in removed]


def test_layer_scale_is_sliced_with_its_channels() -> None:
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    y = layers.Dense(16, activation="gelu", name="expand")(x)
    y = layers.Dense(8, name="project")(y)
    y = LayerScale(1e-6, 8, name="scale")(y)
    x = layers.Add(name="add")([x, y])
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(x))
    randomize(model, seed=2)
    for path in ("c1", "project", "scale"):
        zero(model, path, [1, 6])
    zero(model, "expand", [3])
    new_config, new_weights, _ = prune_and_compare(
        model, {"c1": all_but(8, [1, 6]), "project": all_but(8, [1, 6]),
                "expand": all_but(16, [3])},
    )  # fmt: skip
    scale = next(e for e in new_config["config"]["layers"] if e["name"] == "scale")
    assert scale["config"]["projection_dim"] == 6
    assert scale["module"] == "keras.src.applications.convnext"
    assert new_weights["scale"][0].shape == (6,)


def test_custom_scale_layer_ties_its_two_inputs() -> None:
    inp = keras.Input((6, 6, 3))
    a = layers.Conv2D(8, 3, padding="same", name="a")(inp)
    b = layers.Conv2D(8, 1, name="b")(inp)
    x = CustomScaleLayer(0.17, name="residual")([a, b])
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(x))
    randomize(model, seed=4)
    zero(model, "a", [2, 5])
    zero(model, "b", [5, 7])  # only 5 is dead in both
    prune_and_compare(model, {"a": all_but(8, [5]), "b": all_but(8, [5])})


def test_a_custom_class_named_like_a_keras_one_is_not_taken_for_it() -> None:
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 1, name="c1")(inp)
    config, weights = live(keras.Model(inp, LayerScale(1e-6, 8, name="scale")(x)))
    config["config"]["layers"][-1]["module"] = "my_models.blocks"
    with pytest.raises(UnsupportedLayer, match=r"'scale' has type LayerScale from my_models"):
        prepare(config, weights, TINY)


def time_distributed(k: Any) -> Any:
    L = k.layers
    inp = k.Input((3, 8, 8, 4))
    x = L.TimeDistributed(L.Conv2D(8, 3, padding="same"), name="td_c1")(inp)
    x = L.TimeDistributed(L.BatchNormalization(), name="td_bn")(x)
    x = L.TimeDistributed(L.ReLU(), name="td_relu")(x)
    x = L.TimeDistributed(L.DepthwiseConv2D(3, padding="same"), name="td_dw")(x)
    x = L.TimeDistributed(L.Conv2D(6, 1), name="td_c2")(x)
    x = L.TimeDistributed(L.MaxPooling2D(), name="td_pool")(x)
    x = L.TimeDistributed(L.Flatten(), name="td_flat")(x)
    x = L.TimeDistributed(L.Dense(5), name="td_fc")(x)
    return k.Model(inp, L.TimeDistributed(L.Dense(2), name="td_head")(x))


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_time_distributed_layers_prune_like_the_layers_they_wrap(flavour: str) -> None:
    k = keras if flavour == "keras3" else pytest.importorskip("tf_keras")
    model = time_distributed(k)
    randomize(model, seed=6)
    for path, axis in (("td_c1", -1), ("td_bn", -1), ("td_dw", -2)):
        zero(model, path, [0, 3], axis)
    zero(model, "td_c2", [4])
    source = live(model) if flavour == "keras3" else live_k2(model)
    new_config, new_weights, _ = prune_and_compare(
        model,
        {"td_c1": all_but(8, [0, 3]), "td_dw": all_but(8, [0, 3]), "td_c2": all_but(6, [4]),
         "td_fc": list(range(5)), "td_head": [0, 1]},
        source,
    )  # fmt: skip
    assert new_weights["td_bn"][0].shape == (6,)
    assert new_weights["td_fc"][0].shape == (16 * 5, 5)
    conv = next(e for e in new_config["config"]["layers"] if e["name"] == "td_c1")
    assert conv["config"]["layer"]["config"]["filters"] == 6


@keras.saving.register_keras_serializable(package="prunejob_tests")
class Tripler(layers.Layer):
    def call(self, x: Any) -> Any:
        return x * 3.0


def test_an_excluded_unknown_class_keeps_its_inputs_and_outputs_whole() -> None:
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = Tripler(name="triple")(x)
    x = layers.Conv2D(6, 1, name="c2")(x)
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(x))
    randomize(model, seed=1)
    zero(model, "c1", [1])
    zero(model, "c2", [2])
    config, weights = live(model)
    with pytest.raises(UnsupportedLayer, match=r"'triple'.*Tripler.*-el triple"):
        prepare(config, weights, TINY)
    settings = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1,
                             excluded_layers=("triple",))  # fmt: skip
    plan = prepare(config, weights, settings).plan()
    assert {lp.name: lp.kept for lp in plan.layers} == {
        "c1": list(range(8)), "c2": all_but(6, [2]), "head": [0, 1]}  # fmt: skip
    new_config, new_weights = apply_plan(config, weights, plan)
    inputs = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(
        run(build_model(new_config, new_weights), inputs), run(model, inputs), atol=1e-5
    )


def test_an_unknown_class_in_a_keras2_config_has_no_shape_to_go_on() -> None:
    tf_keras = pytest.importorskip("tf_keras")
    inp = tf_keras.Input((6, 6, 3))
    x = tf_keras.layers.Conv2D(8, 3, name="c1")(inp)
    config, weights = live_k2(tf_keras.Model(inp, tf_keras.layers.Flatten(name="flat")(x)))
    config["config"]["layers"][1]["class_name"] = "MyConv"
    with pytest.raises(UnsupportedLayer, match=r"'c1' has type MyConv.*-el c1"):
        prepare(config, weights, TINY)
    settings = PruneSettings(excluded_layers=("c1",))
    with pytest.raises(InvalidModel, match=r"output shape of layer 'c1' \(MyConv\) cannot"):
        prepare(config, weights, settings)


def test_a_keras2_lambda_without_an_output_shape_is_named() -> None:
    tf_keras = pytest.importorskip("tf_keras")
    inp = tf_keras.Input((6, 6, 3))
    x = tf_keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = tf_keras.layers.Lambda(lambda t: t * 2.0, name="lam")(x)
    config, weights = live_k2(tf_keras.Model(inp, tf_keras.layers.Flatten(name="flat")(x)))
    settings = PruneSettings(excluded_layers=("lam",))
    with pytest.raises(InvalidModel, match=r"'lam' \(Lambda\).*give the Lambda an output_shape"):
        prepare(config, weights, settings)


def test_tf_keras_nested_models_number_their_calls_from_one() -> None:
    """Keras 2 counts a nested model's own first node: the layers after it read node 1."""
    tf_keras = pytest.importorskip("tf_keras")
    L = tf_keras.layers
    inner_in = tf_keras.Input((8, 8, 6))
    y = L.BatchNormalization(name="inner_bn")(L.Conv2D(5, 1, name="inner_conv")(inner_in))
    inner = tf_keras.Model(inner_in, L.ReLU()(y), name="inner")
    seq = tf_keras.Sequential([tf_keras.Input((8, 8, 5)), L.Conv2D(4, 1, name="seq_conv")],
                              name="seq")  # fmt: skip
    inp = tf_keras.Input((8, 8, 3))
    x = seq(inner(L.Conv2D(6, 3, padding="same", name="outer_conv")(inp)))
    model = tf_keras.Model(inp, L.Conv2D(2, 1, name="head")(x))
    randomize(model, seed=3)
    zero(model, "outer_conv", [0])
    zero(model, "inner/inner_conv", [3])
    zero(model, "seq/seq_conv", [1])
    config, weights = live_k2(model)
    consumers = {e["name"]: e["inbound_nodes"] for e in config["config"]["layers"]}
    assert consumers["seq"] == [[["inner", 1, 0, {}]]]  # node 1: the first call of inner
    plan = prepare(config, weights, TINY).plan()
    assert {lp.name: lp.kept for lp in plan.layers} == {
        "outer_conv": all_but(6, [0]), "inner/inner_conv": all_but(5, [3]),
        "seq/seq_conv": all_but(4, [1]), "head": [0, 1]}  # fmt: skip
    new_weights = apply_and_compare_k2(model, config, weights, plan, seed=0)
    assert new_weights["inner/inner_bn"][0].shape == (4,)


def test_tf_keras_raw_ops_prune_like_the_layers_they_mean() -> None:
    """TFOpLambda: `a + b` ties a and b, `x * 3.0` and tf.nn.relu6 pass channels through."""
    tf_keras = pytest.importorskip("tf_keras")
    tf = pytest.importorskip("tensorflow")
    L = tf_keras.layers
    inp = tf_keras.Input((6, 6, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(inp)
    b = L.Conv2D(8, 1, name="b")(inp)
    x = tf.nn.relu6((a + b) * 3.0)
    x = 2.0 * x - tf.math.tanh(a)  # f(0) = 0: removed channels stay zero
    model = tf_keras.Model(inp, L.Conv2D(2, 1, name="head")(x))
    randomize(model, seed=8)
    zero(model, "a", [1, 4])
    zero(model, "b", [4, 6])
    config, weights = live_k2(model)
    functions = sorted(e["config"]["function"] for e in config["config"]["layers"]
                       if e["class_name"] == "TFOpLambda")  # fmt: skip
    assert functions == ["__operators__.add", "math.multiply", "math.multiply",
                         "math.subtract", "math.tanh", "nn.relu6"]  # fmt: skip
    plan = prepare(config, weights, TINY).plan()
    kept = {lp.name: lp.kept for lp in plan.layers}
    assert kept["a"] == kept["b"] == all_but(8, [4])
    apply_and_compare_k2(model, config, weights, plan, seed=1)


def test_a_tf_keras_raw_op_the_pruner_does_not_know_is_named() -> None:
    tf_keras = pytest.importorskip("tf_keras")
    tf = pytest.importorskip("tensorflow")
    inp = tf_keras.Input((6, 6, 3))
    x = tf.reshape(tf_keras.layers.Conv2D(8, 1, name="a")(inp), (-1, 36, 8))
    config, weights = live_k2(tf_keras.Model(inp, x))
    with pytest.raises(UnsupportedLayer, match=r"'tf.reshape' is the TensorFlow op tf.reshape"):
        prepare(config, weights, TINY)


# --- weights that do not match the config --------------------------------------------------
def small() -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, name="c1")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    return live(keras.Model(inp, layers.Conv2D(2, 1, name="head")(x)))


def test_weights_must_match_their_declaration() -> None:
    config, weights = small()
    with pytest.raises(InvalidModel, match=r"'c1' \(Conv2D\) has no weights.*kernel, bias"):
        prepare(config, {**weights, "c1": []}, TINY)
    with pytest.raises(UnsupportedLayer, match=r"'bn' \(BatchNormalization\) has 5 weights.*4"):
        prepare(config, {**weights, "bn": [*weights["bn"], np.ones(8)]}, TINY)
    wrong = [np.zeros((3, 3, 3, 7)), np.zeros(7)]
    with pytest.raises(InvalidModel, match=r"'c1' \(Conv2D\): weight kernel has shape"):
        prepare(config, {**weights, "c1": wrong}, TINY)
    with pytest.raises(InvalidModel, match=r"weight .* has shape \(7,\)"):
        prepare(config, {**weights, "bn": [np.ones(7)] * 4}, TINY)
    with pytest.raises(InvalidModel, match=r"the weights name layers .* not have: ghost"):
        prepare(config, {**weights, "ghost": [np.ones(2)]}, TINY)


def test_a_config_without_use_bias_declares_no_bias() -> None:
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, use_bias=False, name="c1")(inp)
    x = layers.BatchNormalization(scale=False, name="bn")(x)
    config, weights = live(keras.Model(inp, layers.Conv2D(2, 1, name="head")(x)))
    assert [w.shape for w in weights["bn"]] == [(8,)] * 3  # beta, moving mean and variance
    prepared = prepare(config, weights, TINY)
    assert prepared.graph.records["c1"].weight_names == ["kernel"]
    assert prepared.graph.records["bn"].weight_names == ["beta", "moving_mean", "moving_variance"]
