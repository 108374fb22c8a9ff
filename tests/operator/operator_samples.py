"""Sample data the operator tests and the operator bench share: worker reports, conditions.

A worker's report (the counts a success termination message carries) and the
conditions a Succeeded PruneJob reads, in one place for the unit tests, the
cluster tests and bench/operator_bench.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Counts = tuple[int, int]  # (before, after)


def before_after(counts: Counts) -> dict[str, int]:
    before, after = counts
    return {"before": before, "after": after}


def report(
    layers: Iterable[tuple[str, int, int]] = (("c1", 120, 80),),
    *,
    params: Counts = (5000, 3000),
    filters: Counts = (120, 80),
    flops: Counts = (900000, 500000),
    pruning_ratio: float = 0.6,
) -> dict[str, Any]:
    """A worker's report: model-wide counts and `(name, before, after)` per layer."""
    return {
        "params": before_after(params),
        "filters": before_after(filters),
        "flops": before_after(flops),
        "pruningRatio": pruning_ratio,
        "layers": [{"name": name, **before_after((b, a))} for name, b, a in layers],
    }


REPORT = report()

# Condition type -> status of a PruneJob whose run succeeded.
SUCCEEDED_CONDITIONS = {
    "Ready": "True",
    "Reconciling": "False",
    "Stalled": "False",
    "Complete": "True",
    "Failed": "False",
    "Suspended": "False",
}
