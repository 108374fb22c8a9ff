"""`--target-ratio R`: pick the pruning threshold whose plan comes closest to R from below.

Why it is fast: the retained set of a layer (or equalization group) only changes when
the threshold crosses one of its merged, normalized filter statistics (`keep = stat >
threshold`), and every retained count is non-increasing in the threshold, so the
parameter ratio is a non-increasing step function of it. The search therefore
bisects over the sorted distinct statistics: about log2(#filters) plans (ResNet50:
~26k filters -> ~15 plans), each planned and counted without touching the model
(no surgery, no Keras calls). Choosing a statistic itself as the threshold makes the
choice exact and reproducible: `-pth <reported threshold>` gives the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prunejob_contract.errors import InvalidArgument

if TYPE_CHECKING:  # annotations only: --target-ratio validation needs no numpy
    from pruner.core.plan import PreparedModel

Metric = Literal["params", "filters", "flops"]


@dataclass(frozen=True)
class TargetChoice:
    target: float  # the requested ratio R
    threshold: float  # the chosen threshold
    ratio: float  # the parameter ratio its plan reaches
    reached: bool  # ratio <= target; False when even the strongest pruning stays above
    plans_evaluated: int

    def to_json(self) -> dict[str, Any]:
        return {
            "targetRatio": self.target,
            "threshold": self.threshold,
            "ratio": self.ratio,
            "reached": self.reached,
            "plansEvaluated": self.plans_evaluated,
        }


def validate_target_ratio(value: float) -> float:
    if not (0.0 < value <= 1.0):  # also rejects NaN
        raise InvalidArgument(f"--target-ratio must be in (0, 1], got {value}")
    return value


def candidate_thresholds(stats: Iterable[float]) -> list[float]:
    """Sorted distinct thresholds at which some plan can change, starting at 0.

    0 keeps every filter whose statistic is positive (TAO's "-pth 0" = prune only
    exact zeros); each statistic s, used as the threshold, drops the filters at s.
    """
    values = {float(value) for value in stats if math.isfinite(value) and value >= 0.0}
    values.add(0.0)
    return sorted(values)


def search_threshold(
    ratio_at: Callable[[float], float], candidates: Sequence[float], target: float
) -> TargetChoice:
    """Smallest candidate threshold whose ratio is <= target, i.e. the largest
    reachable ratio not above the target.

    `ratio_at` must be non-increasing in the threshold and `candidates` sorted
    ascending. When no candidate reaches the target, the strongest pruning (the
    last candidate) is returned with `reached=False`.
    """
    if not candidates:
        raise InvalidArgument("the model has no prunable filters, so --target-ratio has no effect")
    cache: dict[int, float] = {}

    def ratio_of(index: int) -> float:
        if index not in cache:
            cache[index] = ratio_at(candidates[index])
        return cache[index]

    last = len(candidates) - 1
    if ratio_of(last) > target:
        return TargetChoice(target, candidates[last], ratio_of(last), False, len(cache))
    low, high = 0, last  # invariant: ratio_of(high) <= target
    while low < high:
        middle = (low + high) // 2
        if ratio_of(middle) <= target:
            high = middle
        else:
            low = middle + 1
    return TargetChoice(target, candidates[high], ratio_of(high), True, len(cache))


def plan_thresholds(prepared: PreparedModel) -> list[float]:
    """Candidate thresholds of a prepared model: the merged statistics of every
    equalization group that may be pruned (pinned groups keep everything anyway)."""
    stats = [stat for root, stat in prepared.group_stats.items() if root not in prepared.pinned]
    return candidate_thresholds(value for stat in stats for value in stat.tolist())


def choose_threshold(
    prepared: PreparedModel, target: float, metric: Metric = "params"
) -> TargetChoice:
    """The threshold whose plan's `metric` ratio (after/before) is closest to `target`
    from below, searched on plans only (no surgery)."""

    def ratio_at(threshold: float) -> float:
        counts = prepared.totals(prepared.plan(threshold))[metric]
        return counts["after"] / counts["before"] if counts["before"] else 1.0

    return search_threshold(ratio_at, plan_thresholds(prepared), target)
