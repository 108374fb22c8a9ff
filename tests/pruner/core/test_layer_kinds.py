"""Every supported layer kind on a small hand-built model.

Method: random weights, chosen filters zeroed by hand (BN beta and moving mean are 0,
so a zero channel stays zero), prune the model's config and weights with a tiny
threshold; the expected filters must go and the pruned model (built from the pruned
config and weights) must compute the same outputs. Plus the error cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers, ops

from prunejob_contract.errors import InvalidModel, UnsupportedLayer
from prunejob_contract.settings import PruneSettings
from pruner.core.build import build_model
from pruner.core.counting import count_flops, count_params
from pruner.core.plan import PrunePlan, prepare
from pruner.core.plan import compute_plan as compute_plan_of
from pruner.core.surgery import apply_plan
from tests.pruner.builders import (
    find_layer,
    max_abs_diff,
    max_abs_output,
    random_inputs,
    randomize_weights,
    small_resnet,
    small_vgg,
    zero_filters,
)
from tests.pruner.core.helpers import live

TINY = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1)


def compute_plan(model: keras.Model, settings: PruneSettings) -> PrunePlan:
    return compute_plan_of(*live(model), settings)


def prune_model(model: keras.Model, plan: PrunePlan) -> keras.Model:
    """The pruned config and weights, built as a Keras model to run and inspect."""
    return build_model(*apply_plan(*live(model), plan))


def prune_and_compare(
    model: keras.Model,
    zeroed: Mapping[str, Sequence[int]],
    expected: Mapping[str, Sequence[int]],
    settings: PruneSettings = TINY,
) -> tuple[PrunePlan, keras.Model]:
    """Zero `zeroed`, prune, check `expected` kept indices, equal outputs, equal counts."""
    randomize_weights(model, seed=7)
    zero_filters(model, zeroed)
    config, weights = live(model)
    prepared = prepare(config, weights, settings)
    plan = prepared.plan()
    kept = {lp.name: lp.kept for lp in plan.layers}
    for name, indices in expected.items():
        assert kept[name] == list(indices), name
    new_config, new_weights = apply_plan(config, weights, plan)
    consumed = dict(weights)  # the CLI's way: each layer's input weights freed once sliced
    assert apply_plan(config, consumed, plan, consume=True)[0] == new_config
    assert consumed == {}
    for path, values in apply_plan(config, dict(weights), plan, consume=True)[1].items():
        for got, want in zip(values, new_weights[path], strict=True):
            np.testing.assert_array_equal(got, want)
    pruned = build_model(new_config, new_weights)
    inputs = random_inputs(model)
    reference = max_abs_output(model, inputs)
    assert reference > 0
    assert max_abs_diff(model, pruned, inputs) <= 1e-5 * max(1.0, reference)
    totals = prepared.totals(plan)
    assert totals["params"] == {"before": count_params(weights), "after": count_params(new_weights)}
    assert totals["params"]["before"] == model.count_params()
    assert totals["params"]["after"] == pruned.count_params()
    assert totals["flops"] == {
        "before": count_flops(config, weights),
        "after": count_flops(new_config, new_weights),
    }
    return plan, pruned


def all_but(total: int, removed: Sequence[int]) -> list[int]:
    return [i for i in range(total) if i not in removed]


def test_conv2d_bn_add_gap_dense() -> None:
    model = small_resnet((16, 16, 3))
    stage0 = ["stem_conv", "b0_conv2"]  # tied by the first residual Add
    stage1 = ["b1_proj", "b1_conv2"]
    zeroed = {name: [1, 30] for name in stage0} | {name: [0, 63] for name in stage1}
    zeroed["b0_conv1"] = [5]
    expected = {name: all_but(32, [1, 30]) for name in stage0}
    expected |= {name: all_but(64, [0, 63]) for name in stage1}
    expected["b0_conv1"] = all_but(32, [5])
    expected["b1_conv1"] = list(range(64))
    expected["logits"] = list(range(10))
    _, pruned = prune_and_compare(model, zeroed, expected)
    assert pruned.get_layer("b0_bn1").weights[0].shape == (31,)
    for name in ("stem_conv", "b0_bn1", "logits"):  # the config survives surgery
        before, after = model.get_layer(name).get_config(), pruned.get_layer(name).get_config()
        for key in before:
            if key.endswith("_initializer"):
                assert after[key] == before[key], (name, key)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_pruned_model_saves_and_loads(tmp_path: Path, suffix: str) -> None:
    model = small_resnet((8, 8, 3))
    _, pruned = prune_and_compare(model, {"b0_conv1": [0, 1]}, {"b0_conv1": all_but(32, [0, 1])})
    path = tmp_path / f"pruned{suffix}"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    inputs = random_inputs(model)
    assert max_abs_diff(pruned, loaded, inputs) == 0.0
    assert loaded.get_layer("b0_conv1").get_config()["filters"] == 30


def test_flatten_then_dense_slices_tiled_channels() -> None:
    model = small_vgg((8, 8, 3))
    _, pruned = prune_and_compare(
        model, {"conv2": [0, 7, 31], "fc1": [3]}, {"conv2": all_but(32, [0, 7, 31])}
    )
    # 2x2 positions after two poolings: 4 * 29 inputs
    assert pruned.get_layer("fc1").weights[0].shape == (4 * 29, 31)


def test_sequential_stays_sequential() -> None:
    """Changed on purpose (issue 10): a Sequential model is pruned as it is, no longer
    converted to a functional one."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(8, 3, name="c1"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(4, name="out"),
        ]
    )
    _, pruned = prune_and_compare(model, {"c1": [2]}, {"c1": all_but(8, [2])})
    assert isinstance(pruned, keras.Sequential)
    assert pruned.get_layer("out").weights[0].shape == (6 * 6 * 7, 4)


def test_sequential_without_input_layer_uses_its_build_shape() -> None:
    model = keras.Sequential([layers.Conv2D(8, 3, name="c1"), layers.Dense(4, name="out")])
    model.build((None, 6, 6, 3))
    _, pruned = prune_and_compare(model, {"c1": [0, 5]}, {"c1": all_but(8, [0, 5])})
    assert pruned.get_layer("out").weights[0].shape == (6, 4)


def test_conv1d_pooling1d_dense() -> None:
    inp = keras.Input((16, 4))
    x = layers.Conv1D(8, 3, name="c1")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling1D()(x)
    x = layers.AveragePooling1D(2)(x)
    x = layers.ZeroPadding1D()(x)
    x = layers.Cropping1D((1, 1))(x)
    x = layers.UpSampling1D()(x)
    x = layers.Conv1D(6, 1, name="c2")(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(5, name="d1", activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(2, name="out")(x)
    prune_and_compare(
        keras.Model(inp, out),
        {"c1": [0, 5], "c2": [1], "d1": [4]},
        {"c1": all_but(8, [0, 5]), "c2": all_but(6, [1]), "d1": all_but(5, [4])},
    )


def test_depthwise_is_pruned_with_its_producer() -> None:
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 1, name="expand")(inp)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    out = layers.Conv2D(4, 1, name="project")(x)
    zeroed = {"expand": [2, 3], "dw": [2, 3]}
    _, pruned = prune_and_compare(
        keras.Model(inp, out), zeroed, {"expand": all_but(8, [2, 3]), "dw": all_but(8, [2, 3])}
    )
    assert pruned.get_layer("dw").weights[0].shape == (3, 3, 6, 1)


def test_depthwise_alone_does_not_remove_a_filter() -> None:
    """A filter zero in the depthwise only is still alive in the producer (union)."""
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 1, name="expand")(inp)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    out = layers.Conv2D(4, 1, name="project")(x)
    prune_and_compare(keras.Model(inp, out), {"dw": [1]}, {"dw": list(range(8))})


def test_separable_conv_with_depth_multiplier() -> None:
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 1, name="c1")(inp)
    x = layers.SeparableConv2D(5, 3, depth_multiplier=2, name="sep")(x)
    out = layers.Conv2D(3, 1, name="head")(x)
    _, pruned = prune_and_compare(
        keras.Model(inp, out),
        {"c1": [1, 4], "sep": [0]},
        {"c1": all_but(6, [1, 4]), "sep": all_but(5, [0])},
    )
    assert pruned.get_layer("sep").weights[1].shape == (1, 1, 8, 4)


def test_separable_conv1d() -> None:
    inp = keras.Input((10, 3))
    x = layers.Conv1D(6, 1, name="c1")(inp)
    x = layers.SeparableConv1D(5, 3, name="sep")(x)
    out = layers.Conv1D(3, 1, name="head")(x)
    prune_and_compare(keras.Model(inp, out), {"c1": [5], "sep": [2]}, {"c1": all_but(6, [5])})


def transpose_model() -> keras.Model:
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="up")(x)
    x = layers.LeakyReLU()(x)
    out = layers.Conv2D(3, 1, name="head")(x)
    return keras.Model(inp, out)


def test_conv2d_transpose_as_consumer_and_producer() -> None:
    """Beyond TAO, with prune_transpose_filters: the output filters are pruned too."""
    settings = PruneSettings(
        threshold=1e-4, granularity=1, min_num_filters=1, prune_transpose_filters=True
    )
    plan, pruned = prune_and_compare(
        transpose_model(),
        {"c1": [0, 3], "up": [4]},
        {"c1": all_but(6, [0, 3]), "up": all_but(5, [4])},
        settings,
    )
    assert pruned.get_layer("up").weights[0].shape == (3, 3, 4, 4)
    assert plan.to_json()["settings"]["pruneTransposeFilters"] is True
    assert PrunePlan.from_json(plan.to_json()) == plan


def test_conv2d_transpose_keeps_its_filters_by_default_as_tao() -> None:
    """Changed on purpose (issue 10, TAO parity): TAO never prunes a transposed
    convolution's output filters, only its input channels."""
    plan, pruned = prune_and_compare(
        transpose_model(),
        {"c1": [0, 3], "up": [4]},
        {"c1": all_but(6, [0, 3]), "up": list(range(5))},
    )
    assert pruned.get_layer("up").weights[0].shape == (3, 3, 5, 4)
    assert "pruneTransposeFilters" not in plan.to_json()["settings"]


@pytest.mark.parametrize(
    "merge", [layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum]
)
def test_elementwise_merges_tie_their_inputs(merge: Callable[..., layers.Layer]) -> None:
    inp = keras.Input((6, 6, 3))
    a = layers.Conv2D(6, 3, padding="same", name="a")(inp)
    b = layers.Conv2D(6, 1, name="b")(inp)
    x = merge(name="merge")([a, b])
    out = layers.Conv2D(3, 1, name="head")(x)
    prune_and_compare(
        keras.Model(inp, out),
        {"a": [1, 2], "b": [2, 5]},  # only filter 2 is zero in both
        {"a": all_but(6, [2]), "b": all_but(6, [2])},
    )


def test_concatenate_shifts_indices_and_flatten_tiles_them() -> None:
    inp = keras.Input((4, 4, 3))
    a = layers.Conv2D(4, 1, name="a")(inp)
    b = layers.Conv2D(6, 1, name="b")(inp)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.BatchNormalization(name="bn")(x)
    c = layers.Conv2D(3, 1, name="c")(x)
    flat = layers.Flatten(name="flat")(layers.MaxPooling2D()(x))
    gmp = layers.GlobalMaxPooling2D()(c)
    both = layers.Concatenate(name="vec")([flat, gmp])
    out = layers.Dense(2, name="out")(both)
    _, pruned = prune_and_compare(
        keras.Model(inp, out),
        {"a": [1], "b": [0, 5], "c": [2]},
        {"a": all_but(4, [1]), "b": all_but(6, [0, 5]), "c": all_but(3, [2])},
    )
    assert pruned.get_layer("bn").weights[0].shape == (7,)
    assert pruned.get_layer("out").weights[0].shape == (4 * 7 + 2, 2)


def test_pass_through_layers_and_raw_ops() -> None:
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Cropping2D(1)(x)
    x = layers.UpSampling2D()(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.SpatialDropout2D(0.3)(x)
    x = layers.Activation("swish")(x)
    x = layers.ELU()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.PReLU(name="prelu")(x)
    x = layers.Rescaling(2.0)(x)
    x = ops.relu(x)
    x = x * 3.0
    x = ops.silu(x) + ops.tanh(x)
    x = layers.MaxPooling2D()(x)
    out = layers.Conv2D(2, 1, name="head")(x)
    _, pruned = prune_and_compare(keras.Model(inp, out), {"c1": [0, 4]}, {"c1": all_but(6, [0, 4])})
    assert pruned.get_layer("prelu").weights[0].shape == (8, 8, 4)


def test_per_channel_rescaling_and_normalization_are_sliced() -> None:
    inp = keras.Input((4, 4, 3))
    x = layers.Conv2D(4, 1, name="c1")(inp)
    x = layers.Rescaling(scale=[1.0, 2.0, 3.0, 4.0], name="scale")(x)
    x = layers.Normalization(mean=[0.5, 0.0, 0.2, 0.1], variance=[1, 2, 3, 4], name="norm")(x)
    out = layers.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inp, out)
    _, pruned = prune_and_compare(model, {"c1": [1]}, {"c1": [0, 2, 3]})
    assert pruned.get_layer("scale").get_config()["scale"] == [1.0, 3.0, 4.0]
    assert pruned.get_layer("norm").get_config()["mean"] == [0.5, 0.2, 0.1]


def se_conv_block(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """keras.applications.EfficientNet style: GAP -> Reshape -> Conv 1x1 -> Conv 1x1."""
    channels = x.shape[-1]
    se = layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    se = layers.Reshape((1, 1, channels), name=f"{name}_reshape")(se)
    se = layers.Conv2D(4, 1, activation="swish", name=f"{name}_reduce")(se)
    se = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(se)
    return layers.Multiply(name=f"{name}_excite")([x, se])


def se_dense_block(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """The Dense -> Dense -> Reshape variant."""
    channels = x.shape[-1]
    se = layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    se = layers.Dense(4, activation="relu", name=f"{name}_reduce")(se)
    se = layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(se)
    se = layers.Reshape((1, 1, channels), name=f"{name}_reshape")(se)
    return layers.Multiply(name=f"{name}_excite")([x, se])


@pytest.mark.parametrize("block", [se_conv_block, se_dense_block])
def test_squeeze_and_excite(block: Callable[..., keras.KerasTensor]) -> None:
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="feat")(inp)
    x = layers.BatchNormalization(name="feat_bn")(x)
    x = layers.Activation("swish")(x)
    x = block(x, "se")
    out = layers.Conv2D(3, 1, name="head")(x)
    model = keras.Model(inp, out)
    _, pruned = prune_and_compare(
        model,
        {"feat": [1, 6], "se_expand": [1, 6], "se_reduce": [2]},
        {"feat": all_but(8, [1, 6]), "se_expand": all_but(8, [1, 6]), "se_reduce": [0, 1, 3]},
    )
    assert pruned.get_layer("se_reshape").get_config()["target_shape"] == (1, 1, 6)


def test_nested_functional_and_sequential_models() -> None:
    inner_in = keras.Input((8, 8, 6))
    y = layers.Conv2D(5, 1, name="inner_conv")(inner_in)
    y = layers.BatchNormalization(name="inner_bn")(y)
    inner = keras.Model(inner_in, layers.ReLU()(y), name="inner")
    seq = keras.Sequential([layers.Conv2D(4, 1, name="seq_conv"), layers.ReLU()], name="seq")
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", name="outer_conv")(inp)
    x = inner(x)
    x = seq(x)
    out = layers.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inp, out)
    _, pruned = prune_and_compare(
        model,
        {"outer_conv": [0], "inner/inner_conv": [3], "seq/seq_conv": [1]},
        {
            "outer_conv": all_but(6, [0]),
            "inner/inner_conv": all_but(5, [3]),
            "seq/seq_conv": all_but(4, [1]),
        },
    )
    assert find_layer(pruned, "inner/inner_conv").weights[0].shape == (1, 1, 5, 4)


def test_shared_layer_ties_its_inputs_and_multiple_inputs_outputs() -> None:
    in1, in2 = keras.Input((6, 6, 3), name="in1"), keras.Input((6, 6, 2), name="in2")
    a = layers.Conv2D(6, 1, name="a")(in1)
    b = layers.Conv2D(6, 1, name="b")(in2)
    shared = layers.Conv2D(4, 1, name="shared")
    out1 = layers.Conv2D(2, 1, name="out1")(shared(a))
    out2 = layers.GlobalAveragePooling2D(name="out2")(shared(b))
    model = keras.Model([in1, in2], [out1, out2])
    prune_and_compare(
        model,
        {"a": [1, 2], "b": [2], "shared": [0]},
        # shared sees a and b on the same weights: only filter 2 is zero in both;
        # shared feeds the output out2 directly, so it keeps all its filters
        {"a": all_but(6, [2]), "b": all_but(6, [2]), "shared": [0, 1, 2, 3]},
    )


def test_shared_layer_called_again_downstream() -> None:
    """The second call reads a tensor made after the layer's first call."""
    inp = keras.Input((6, 6, 3))
    a = layers.Conv2D(6, 1, name="a")(inp)
    shared = layers.Conv2D(6, 1, name="shared")
    x = shared(a)
    x = layers.Conv2D(6, 1, name="mid")(layers.ReLU()(x))
    x = shared(x)
    out = layers.Conv2D(2, 1, name="head")(x)
    prune_and_compare(
        keras.Model(inp, out),
        {"a": [0, 3], "mid": [3, 4], "shared": [5]},
        # a and mid both feed `shared`: only filter 3 is zero in both
        {"a": all_but(6, [3]), "mid": all_but(6, [3]), "shared": all_but(6, [5])},
    )


def test_group_normalization_prunes_only_evenly() -> None:
    def build() -> keras.Model:
        inp = keras.Input((4, 4, 3))
        x = layers.Conv2D(8, 1, name="c1")(inp)
        x = layers.GroupNormalization(groups=2, name="gn")(x)
        return keras.Model(inp, layers.Conv2D(2, 1, name="head")(x))

    even = build()
    randomize_weights(even)
    zero_filters(even, {"c1": [0, 4]})  # one per group of 4
    plan = compute_plan(even, TINY)
    assert plan.layers[0].kept == [1, 2, 3, 5, 6, 7]
    pruned = prune_model(even, plan)
    gn = pruned.get_layer("gn")
    assert gn.weights[0].shape == (6,) and gn.get_config()["groups"] == 2

    uneven = build()
    randomize_weights(uneven)
    zero_filters(uneven, {"c1": [0, 1]})  # both in group 0: kept whole instead
    assert compute_plan(uneven, TINY).layers[0].kept == list(range(8))


def test_layer_normalization_slices_gamma_and_beta() -> None:
    inp = keras.Input((4, 4, 3))
    x = layers.Conv2D(8, 1, name="c1")(inp)
    x = layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(x))
    randomize_weights(model)
    zero_filters(model, {"c1": [3]})
    plan = compute_plan(model, TINY)
    pruned = prune_model(model, plan)
    kept = [0, 1, 2, 4, 5, 6, 7]
    for original, sliced in zip(
        model.get_layer("ln").weights, pruned.get_layer("ln").weights, strict=True
    ):
        np.testing.assert_array_equal(original.numpy()[kept], sliced.numpy())


# --- errors ---------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="prunejob_tests")
class Doubler(layers.Layer):
    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        return x * 2.0


def one_conv_then(layer: layers.Layer, shape: tuple[int, ...] = (4, 4, 3)) -> keras.Model:
    inp = keras.Input(shape)
    x = layers.Conv2D(8, 1, name="c1")(inp)
    x = layer(x)
    return keras.Model(inp, layers.Dense(2, name="out")(layers.Flatten()(x)))


def test_unknown_layer_type_is_named() -> None:
    model = one_conv_then(Doubler(name="doubler"))
    with pytest.raises(UnsupportedLayer, match=r"'doubler'.*Doubler.*-el doubler"):
        prepare(*live(model), TINY)


def test_lambda_needs_exclusion() -> None:
    model = one_conv_then(layers.Lambda(lambda t: t * 2.0, name="lam"))
    with pytest.raises(UnsupportedLayer, match=r"Lambda layer 'lam'.*-el lam.*safe mode"):
        prepare(*live(model), TINY)
    randomize_weights(model)
    zero_filters(model, {"c1": [1]})
    settings = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1,
                             excluded_layers=("lam",))  # fmt: skip
    plan = compute_plan(model, settings)
    assert plan.layers[0].kept == list(range(8))  # the Lambda's input stays whole


def test_reshape_that_moves_channels_after_a_pruned_layer() -> None:
    model = one_conv_then(layers.Reshape((4, 32), name="fold"))
    randomize_weights(model)
    assert compute_plan(model, TINY).layers[0].kept == list(range(8))  # unpruned: fine
    zero_filters(model, {"c1": [1]})
    with pytest.raises(UnsupportedLayer, match=r"'fold' \(Reshape\).*'c1'"):
        compute_plan(model, TINY)
    excluded = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1,
                             excluded_layers=("fold",))  # fmt: skip
    assert compute_plan(model, excluded).layers[0].kept == list(range(8))


def test_permute_moving_channels_after_a_pruned_layer() -> None:
    model = one_conv_then(layers.Permute((3, 1, 2), name="perm"))
    randomize_weights(model)
    zero_filters(model, {"c1": [1]})
    with pytest.raises(UnsupportedLayer, match=r"'perm' \(Permute\)"):
        compute_plan(model, TINY)


def test_permute_keeping_channels_last_passes_through() -> None:
    model = one_conv_then(layers.Permute((2, 1, 3), name="perm"))
    prune_and_compare(model, {"c1": [1]}, {"c1": all_but(8, [1])})


def test_depth_multiplier_is_rejected() -> None:
    model = one_conv_then(layers.DepthwiseConv2D(1, depth_multiplier=2, name="dw"))
    with pytest.raises(UnsupportedLayer, match=r"'dw'.*depth_multiplier=2"):
        prepare(*live(model), TINY)


def test_subclassed_model_is_invalid() -> None:
    class Tiny(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 3), dtype="float32"))
    with pytest.raises(InvalidModel, match="subclassed"):
        prepare(*live(model), TINY)


# --- channels_first (TAO's default layout; TensorFlow cannot run it on CPU, so the
# checks compare sliced weights with indices worked out by hand) --------------------------
@pytest.mark.parametrize("flatten_format", ["channels_last", "channels_first"])
def test_channels_first_model_slices_by_hand(flatten_format: str) -> None:
    cf = "channels_first"
    inp = keras.Input((3, 6, 6))
    x = layers.Conv2D(8, 3, padding="same", data_format=cf, name="c1")(inp)
    x = layers.BatchNormalization(axis=1, name="bn")(x)
    x = layers.ReLU()(x)
    a = layers.Conv2D(4, 1, data_format=cf, name="c2")(x)
    b = layers.Conv2D(4, 1, data_format=cf, name="c3")(x)
    x = layers.Add()([a, b])
    x = layers.MaxPooling2D(data_format=cf)(x)  # 4 x 3 x 3
    x = layers.Flatten(data_format=flatten_format)(x)
    x = layers.Dense(5, name="fc")(x)
    model = keras.Model(inp, layers.Dense(2, name="out")(x))
    randomize_weights(model)
    zero_filters(model, {"c1": [1, 6], "c2": [2], "c3": [2], "fc": [0]})
    config, weights = live(model)
    prepared = prepare(config, weights, TINY)
    plan = prepared.plan()
    kept = {lp.name: lp.kept for lp in plan.layers}
    kept1, kept2 = all_but(8, [1, 6]), all_but(4, [2])
    assert kept == {"c1": kept1, "c2": kept2, "c3": kept2, "fc": all_but(5, [0]),
                    "out": [0, 1]}  # fmt: skip
    new_config, new_weights = apply_plan(config, weights, plan)
    pruned = build_model(new_config, new_weights)

    def weight(m: keras.Model, layer: str, i: int = 0) -> np.ndarray:
        return m.get_layer(layer).weights[i].numpy()

    np.testing.assert_array_equal(weight(pruned, "c1"), weight(model, "c1")[..., kept1])
    np.testing.assert_array_equal(weight(pruned, "bn"), weight(model, "bn")[kept1])
    np.testing.assert_array_equal(
        weight(pruned, "c2"), weight(model, "c2")[:, :, kept1][..., kept2]
    )
    if flatten_format == "channels_last":  # NCHW flattened as is: channel-major
        rows = [c * 9 + p for c in kept2 for p in range(9)]
    else:  # Keras moves the channels last before flattening
        rows = [p * 4 + c for p in range(9) for c in kept2]
    np.testing.assert_array_equal(weight(pruned, "fc"), weight(model, "fc")[rows][:, 1:])
    assert prepared.totals(plan)["params"]["after"] == count_params(new_weights)
    assert prepared.totals(plan)["params"]["after"] == pruned.count_params()
    assert prepared.totals(plan)["flops"]["after"] == count_flops(new_config, new_weights)


def test_mixed_data_formats_are_rejected() -> None:
    inp = keras.Input((3, 6, 6))
    x = layers.Conv2D(4, 1, data_format="channels_first", name="c1")(inp)
    x = layers.Conv2D(4, 1, data_format="channels_last", name="c2")(x)
    with pytest.raises(UnsupportedLayer, match="mixes channels_first and channels_last"):
        prepare(*live(keras.Model(inp, x)), TINY)
