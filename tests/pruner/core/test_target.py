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
