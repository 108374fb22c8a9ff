"""The TAO pruning semantics on hand-made numbers (expected indices worked out by hand).

Graph-level cases use 1x1 convolutions on a one-channel input: a filter's L2 norm is
then just the absolute value of its single kernel weight, so the stats are set exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers

from prunejob_contract.errors import InvalidArgument
from prunejob_contract.settings import PruneSettings
from pruner.core.plan import PreparedModel, PrunePlan
from pruner.core.plan import compute_plan as compute_plan_of
from pruner.core.plan import prepare as prepare_of
from pruner.core.stats import filter_norms, merge, normalize, retained_count, retained_indices
from tests.pruner.core.helpers import live

ONE_BY_ONE = PruneSettings(threshold=0.1, granularity=1, min_num_filters=1)


def one_by_one(**changes: Any) -> PruneSettings:
    """ONE_BY_ONE with `changes` (threshold 0.1, every filter counts on its own)."""
    return dataclasses.replace(ONE_BY_ONE, **changes)


def compute_plan(model: keras.Model, settings: PruneSettings) -> PrunePlan:
    return compute_plan_of(*live(model), settings)


def prepare(model: keras.Model, settings: PruneSettings) -> PreparedModel:
    return prepare_of(*live(model), settings)


# --- step 2: the retained count and indices ---------------------------------------------
@pytest.mark.parametrize(
    ("above", "total", "granularity", "min_filters", "expected"),
    [
        (3, 64, 8, 16, 16),  # min_num_filters wins, already a multiple of 8
        (17, 64, 8, 1, 24),  # rounded up to the granularity
        (63, 64, 8, 1, 64),  # rounding past the total is capped
        (0, 10, 8, 16, 10),  # min(min_num_filters, total) = 10, round 16, cap 10
        (5, 10, 1, 0, 5),
        (0, 10, 4, 0, 1),  # never an empty layer (documented deviation for -nf 0)
        (9, 12, 5, 2, 10),
    ],
)
def test_retained_count(
    above: int, total: int, granularity: int, min_filters: int, expected: int
) -> None:
    assert retained_count(above, total, granularity, min_filters) == expected


def test_threshold_is_strict() -> None:
    stat = np.array([0.1, 0.5, 0.1000001, 1.0, 0.0])
    assert retained_indices(stat, 0.1, 1, 1).tolist() == [1, 2, 3]


def test_ties_keep_the_lower_index() -> None:
    stat = np.array([0.5, 0.5, 0.5, 0.5, 1.0])
    # nothing but index 4 is above 0.9; min_num_filters 3 adds the first two 0.5s
    assert retained_indices(stat, 0.9, 1, 3).tolist() == [0, 1, 4]


def test_granularity_adds_the_next_largest() -> None:
    stat = np.array([0.9, 0.05, 0.3, 0.02, 0.8, 0.01])
    # above 0.5: {0, 4}; round 2 up to 4: add 0.3 (index 2) then 0.05 (index 1)
    assert retained_indices(stat, 0.5, 4, 1).tolist() == [0, 1, 2, 4]


def test_zero_threshold_keeps_all_positive() -> None:
    stat = np.array([0.3, 0.001, 1.0])
    assert retained_indices(stat, 0.0, 1, 1).tolist() == [0, 1, 2]


# --- step 1: statistics and normalizers -------------------------------------------------
def test_filter_norms_over_all_but_the_filter_axis() -> None:
    kernel = np.zeros((1, 2, 2, 3))
    kernel[0, :, :, 0] = [[3, 0], [0, 4]]  # norm 5
    kernel[0, 1, 1, 1] = -2  # norm 2
    assert filter_norms(kernel).tolist() == [5.0, 2.0, 0.0]
    # transposed convolutions keep their filters on axis -2
    assert filter_norms(np.moveaxis(kernel, -1, -2), -2).tolist() == [5.0, 2.0, 0.0]


@pytest.mark.parametrize(
    ("normalizer", "expected"),
    [("max", [0.75, 1.0]), ("L2", [1.2, 1.6]), ("off", [3.0, 4.0])],
)
def test_normalizers(normalizer: str, expected: list[float]) -> None:
    # L2: [3, 4] / ||[3, 4]|| * 2 filters
    assert normalize(np.array([3.0, 4.0]), normalizer).tolist() == pytest.approx(expected)


def test_all_zero_layer_normalizes_to_zero() -> None:
    for normalizer in ("max", "L2", "off"):
        assert normalize(np.zeros(3), normalizer).tolist() == [0.0, 0.0, 0.0]


def test_unknown_normalizer_and_criterion_are_invalid_arguments() -> None:
    with pytest.raises(InvalidArgument):
        normalize(np.ones(2), "foo")
    with pytest.raises(InvalidArgument):
        merge([np.ones(2)], "foo")


@pytest.mark.parametrize(
    ("criterion", "expected"),
    [
        ("union", [1.0, 0.4, 0.5]),
        ("intersection", [0.5, 0.2, 0.5]),
        ("arithmetic_mean", [0.75, 0.3, 0.5]),
        ("geometric_mean", [np.sqrt(0.5), np.sqrt(0.08), 0.5]),
    ],
)
def test_equalization_criteria(criterion: str, expected: list[float]) -> None:
    a, b = np.array([1.0, 0.2, 0.5]), np.array([0.5, 0.4, 0.5])
    assert merge([a, b], criterion).tolist() == pytest.approx(expected)


def test_geometric_mean_of_a_zero_is_zero() -> None:
    assert merge([np.array([0.0, 1.0]), np.array([1.0, 1.0])], "geometric_mean").tolist() == [
        0.0,
        1.0,
    ]


# --- graph-level: groups, broadcasts, exclusions, outputs, depthwise ----------------------
def set_norms(model: keras.Model, norms: dict[str, Sequence[float]]) -> None:
    """1x1 kernels on one input channel (or depthwise kernels): |value| is the filter norm."""
    for name, values in norms.items():
        layer = model.get_layer(name)
        shape = tuple(layer.weights[0].shape)
        layer.set_weights([np.asarray(values, dtype="float32").reshape(shape)])


def kept(plan: PrunePlan) -> dict[str, list[int]]:
    return {lp.name: lp.kept for lp in plan.layers}


def transitive_model() -> keras.Model:
    inp = keras.Input((4, 4, 1))
    a, b, c, d = (layers.Conv2D(4, 1, use_bias=False, name=n)(inp) for n in "abcd")
    s1 = layers.Add(name="ab")([a, b])
    s2 = layers.Add(name="bc")([b, c])
    merged = layers.Concatenate(name="cat")([s1, s2, d])
    out = layers.Conv2D(2, 1, name="head")(merged)
    return keras.Model(inp, out)


# The filter norms of a, b, c and d the graph-level cases start from (each case says
# what it changes).
GROUP_NORMS: dict[str, Sequence[float]] = {
    "a": [1.0, 0.05, 0.06, 0.5],
    "b": [0.5, 0.04, 1.0, 0.05],
    "c": [1.0, 0.03, 0.02, 0.05],
    "d": [1.0, 0.05, 0.02, 0.5],
}


def transitive_with(**changes: Sequence[float]) -> keras.Model:
    """`transitive_model` with GROUP_NORMS, but for the layers named in `changes`."""
    model = transitive_model()
    set_norms(model, {**GROUP_NORMS, **changes})
    return model


def test_groups_merge_transitively() -> None:
    model = transitive_with()
    plan = compute_plan(model, ONE_BY_ONE)
    # union over a, b, c (tied through b): [1, .05, 1, .5] -> {0, 2, 3}; d alone -> {0, 3}
    assert kept(plan) == {"a": [0, 2, 3], "b": [0, 2, 3], "c": [0, 2, 3], "d": [0, 3],
                          "head": [0, 1]}  # fmt: skip


def test_each_criterion_on_a_group() -> None:
    model = transitive_with(c=[1.0, 0.03, 0.01, 0.05], d=[1.0, 1.0, 1.0, 1.0])
    expected = {
        # min [.5, .03, .01, .05] -> {0}
        "intersection": [0],
        # mean [2.5/3, .04, 1.07/3, .2] -> {0, 2, 3}
        "arithmetic_mean": [0, 2, 3],
        # geometric: index 3 = (.5*.05*.05)^(1/3) = .108 > .1; index 2 = (.06*1*.01)^(1/3) = .084
        "geometric_mean": [0, 3],
    }
    for criterion, indices in expected.items():
        settings = one_by_one(equalization_criterion=criterion)
        assert kept(compute_plan(model, settings))["a"] == indices, criterion


def test_normalization_is_per_layer_before_merging() -> None:
    # b is 10x larger than a: raw union would be dominated by b; normalized it is not
    model = transitive_with(b=[5.0, 0.4, 0.5, 10.0], d=[1.0, 1.0, 1.0, 1.0])
    # b normalized by max 10: [.5, .04, .05, 1]; union [1, .05, .06, 1] -> {0, 3}
    assert kept(compute_plan(model, ONE_BY_ONE))["b"] == [0, 3]
    # with -n off the raw norms are compared: union [5, .4, .5, 10] -> all kept
    off = one_by_one(normalizer="off")
    assert kept(compute_plan(model, off))["b"] == [0, 1, 2, 3]


def test_broadcast_parent_is_dropped_from_the_group() -> None:
    inp = keras.Input((4, 4, 1))
    a = layers.Conv2D(4, 1, use_bias=False, name="a")(inp)
    gate = layers.Conv2D(1, 1, use_bias=False, name="gate")(inp)
    x = layers.Multiply(name="mul")([a, gate])
    out = layers.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inp, out)
    set_norms(model, {"a": [1.0, 0.05, 0.5, 0.01], "gate": [0.01]})
    plan = compute_plan(model, ONE_BY_ONE)
    assert kept(plan)["a"] == [0, 2]
    assert kept(plan)["gate"] == [0]


def test_an_excluded_member_keeps_the_whole_group() -> None:
    model = transitive_with()
    settings = one_by_one(excluded_layers=("c",))
    plan = kept(compute_plan(model, settings))
    assert plan["a"] == plan["b"] == plan["c"] == [0, 1, 2, 3]
    assert plan["d"] == [0, 3]


def test_model_outputs_are_never_pruned() -> None:
    inp = keras.Input((4, 4, 1))
    a = layers.Conv2D(4, 1, use_bias=False, name="a")(inp)
    b = layers.Conv2D(4, 1, use_bias=False, name="b")(inp)
    out = layers.ReLU(name="relu")(layers.Add(name="sum")([a, b]))
    side = layers.Conv2D(4, 1, use_bias=False, name="side")(a)
    model = keras.Model(inp, [out, side])
    set_norms(model, {"a": [1, 0, 0, 0], "b": [1, 0, 0, 0]})
    plan = kept(compute_plan(model, ONE_BY_ONE))
    # a and b feed the output through Add/ReLU; side is an output itself
    assert plan == {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3], "side": [0, 1, 2, 3]}


def depthwise_model() -> keras.Model:
    inp = keras.Input((4, 4, 1))
    p = layers.Conv2D(4, 1, use_bias=False, name="p")(inp)
    dw = layers.DepthwiseConv2D(1, use_bias=False, name="dw")(p)
    out = layers.Conv2D(2, 1, name="head")(dw)
    return keras.Model(inp, out)


@pytest.mark.parametrize(
    ("criterion", "expected"),
    [
        ("union", [0, 1, 2]),  # max: [1, 1, .5, .02]
        ("intersection", [0]),  # min: [.05, .05, .02, .01] -> nothing above, 1 kept, tie -> 0
    ],
)
def test_depthwise_is_tied_to_its_producer(criterion: str, expected: list[int]) -> None:
    model = depthwise_model()
    # p raw norms [2, .1, 1, .04] normalize (max) to [1, .05, .5, .02]
    set_norms(model, {"p": [2.0, 0.1, 1.0, 0.04], "dw": [0.05, 1.0, 0.02, 0.01]})
    settings = one_by_one(equalization_criterion=criterion)
    plan = kept(compute_plan(model, settings))
    assert plan["p"] == plan["dw"] == expected


def test_plan_json_round_trip_and_threshold_replan() -> None:
    model = depthwise_model()
    set_norms(model, {"p": [2.0, 0.1, 1.0, 0.04], "dw": [0.05, 1.0, 0.02, 0.01]})
    prepared = prepare(model, ONE_BY_ONE)
    plan = prepared.plan()
    again = PrunePlan.from_json(plan.to_json())
    assert again == plan
    assert plan.to_json()["settings"]["minNumFilters"] == 1
    assert plan.to_json()["layers"][0] == {
        "name": "p",
        "type": "Conv2D",
        "before": 4,
        "after": 3,
        "kept": [0, 1, 2],
    }
    # a higher threshold on the same prepared model: union [1, 1, .5, .02] > .6 -> {0, 1}
    high = prepared.plan(threshold=0.6)
    assert kept(high)["p"] == [0, 1]
    assert high.settings.threshold == 0.6
