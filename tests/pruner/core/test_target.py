"""--target-ratio search on hand-made step functions (the real-model case is in test_cli)."""

from __future__ import annotations

import bisect

import pytest

from prunejob_contract.errors import InvalidArgument
from pruner.core.target import candidate_thresholds, search_threshold, validate_target_ratio

STATS = [0.05, 0.2, 0.2, 0.4, 0.9, 1.0]


def kept_fraction(threshold: float) -> float:
    """A ratio like a plan's: the fraction of STATS strictly above the threshold."""
    return sum(stat > threshold for stat in STATS) / len(STATS)


def test_candidates_are_sorted_distinct_and_start_at_zero() -> None:
    assert candidate_thresholds([0.4, 0.2, float("nan"), 0.2, 1.0, -1.0]) == [0.0, 0.2, 0.4, 1.0]


@pytest.mark.parametrize("target", [1.0, 0.99, 5 / 6, 0.7, 0.5, 0.34, 1 / 6, 0.01])
def test_search_finds_largest_ratio_not_above_target(target: float) -> None:
    candidates = candidate_thresholds(STATS)
    choice = search_threshold(kept_fraction, candidates, target)
    reachable = sorted({kept_fraction(t) for t in candidates})
    below = [ratio for ratio in reachable if ratio <= target]
    assert choice.ratio == kept_fraction(choice.threshold)
    if below:
        assert choice.reached
        assert choice.ratio == max(below)
        # and it is the mildest threshold that gets there
        assert all(kept_fraction(t) > target for t in candidates if t < choice.threshold)
    else:
        assert not choice.reached
        assert choice.ratio == min(reachable)


def test_search_needs_only_logarithmically_many_plans() -> None:
    stats = [index / 10_000 for index in range(1, 10_001)]
    calls: list[float] = []

    def ratio_at(threshold: float) -> float:
        calls.append(threshold)
        return (len(stats) - bisect.bisect_right(stats, threshold)) / len(stats)

    choice = search_threshold(ratio_at, candidate_thresholds(stats), 0.25)
    assert choice.ratio == pytest.approx(0.25)
    assert choice.plans_evaluated == len(set(calls)) <= 16


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, float("nan")])
def test_target_ratio_out_of_range_is_invalid(value: float) -> None:
    with pytest.raises(InvalidArgument, match="target-ratio"):
        validate_target_ratio(value)


def test_target_ratio_on_a_model_config_and_weights() -> None:
    """The search runs on the new PreparedModel (config + weights, no Keras model)."""
    import keras
    from keras import layers

    from prunejob_contract.settings import PruneSettings
    from pruner.core.plan import prepare
    from pruner.core.target import choose_threshold
    from tests.pruner.core.helpers import live, randomize

    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(32, 3, padding="same", name="c1")(inp)
    x = layers.Conv2D(32, 3, padding="same", name="c2")(x)
    model = keras.Model(inp, layers.Conv2D(4, 1, name="head")(layers.ReLU()(x)))
    randomize(model, seed=9)
    prepared = prepare(*live(model), PruneSettings(granularity=1, min_num_filters=1))
    choice = choose_threshold(prepared, 0.6)
    assert choice.reached and choice.ratio <= 0.6
    plan = prepared.plan(choice.threshold)
    totals = prepared.totals(plan)["params"]
    assert totals["after"] / totals["before"] == choice.ratio
    assert 1 < choice.plans_evaluated <= 8  # log2 of the 64 candidate statistics + 2
