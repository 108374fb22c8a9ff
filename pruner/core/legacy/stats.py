"""Steps 1-3 of the pruning semantics as pure numpy functions (no Keras here).

See /work/shared/pruning-semantics.md: per-filter L2 norms, per-layer normalization,
merging the stats of layers that must keep the same channels, and the retained-index
rule. Everything the planner decides goes through these functions, so the tests can
check them on hand-made numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prunejob_contract.errors import InvalidArgument


def filter_norms(kernel: np.ndarray, filter_axis: int = -1) -> np.ndarray:
    """L2 norm of each output filter: over every axis of `kernel` except `filter_axis`.

    Computed in the kernel's own float type, as TAO does, without a squared copy of the
    kernel (VGG16's first Dense kernel alone is 400 MB).
    """
    moved = np.moveaxis(np.asarray(kernel), filter_axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    if not np.issubdtype(flat.dtype, np.floating):
        flat = flat.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->j", flat, flat))


def normalize(stat: np.ndarray, normalizer: str) -> np.ndarray:
    """Normalize one layer's filter norms (`-n`).

    `max`: divide by the largest norm; `L2`: divide by the L2 norm of the whole vector
    and multiply by the number of filters (so a layer of equal norms reads 1.0 per
    filter, whatever its width, like `max`); `off`: unchanged. An all-zero layer stays
    all zero instead of turning into NaN.
    """
    stat = np.asarray(stat, dtype=np.float64)
    if normalizer == "off":
        return stat.copy()
    if normalizer == "max":
        scale = float(np.max(stat)) if stat.size else 0.0
    elif normalizer == "L2":
        norm = float(np.sqrt(np.sum(np.square(stat))))
        scale = norm / stat.size if stat.size else 0.0
    else:
        raise InvalidArgument(f"normalizer {normalizer!r} is not one of max, L2, off")
    if scale == 0.0:
        return np.zeros_like(stat)
    return stat / scale


def merge(stats: Sequence[np.ndarray], criterion: str) -> np.ndarray:
    """Merge the normalized stats of the members of one equalization group, filter by filter."""
    if not stats:
        raise ValueError("an equalization group needs at least one member stat")
    stacked = np.stack([np.asarray(s, dtype=np.float64) for s in stats])
    if criterion == "union":
        return stacked.max(axis=0)
    if criterion == "intersection":
        return stacked.min(axis=0)
    if criterion == "arithmetic_mean":
        return stacked.mean(axis=0)
    if criterion == "geometric_mean":
        with np.errstate(divide="ignore"):  # log(0) = -inf -> exp(-inf) = 0, as intended
            return np.exp(np.log(stacked).mean(axis=0))
    raise InvalidArgument(
        f"equalization criterion {criterion!r} is not one of "
        "union, intersection, arithmetic_mean, geometric_mean"
    )


def retained_count(num_above: int, total: int, granularity: int, min_num_filters: int) -> int:
    """How many filters survive: the count above threshold, at least `min(min_num_filters,
    total)`, rounded up to a multiple of `granularity`, capped at `total`.

    Deviation from the bare formula: never 0 for a non-empty layer (a Keras layer with
    zero filters cannot be built), which only matters with `-nf 0`.
    """
    count = max(num_above, min(min_num_filters, total))
    count = -(-count // granularity) * granularity  # round up
    count = min(count, total)
    return max(count, 1) if total else 0


def retained_indices(
    stat: np.ndarray, threshold: float, granularity: int, min_num_filters: int
) -> np.ndarray:
    """Step 2: the indices (ascending) of the filters a layer or group keeps.

    A filter is above threshold when its stat is strictly greater than `threshold`;
    the kept ones are the `retained_count` largest stats, ties broken by a stable sort
    on the negated stat (the lower index wins).
    """
    stat = np.asarray(stat, dtype=np.float64)
    count = retained_count(
        int(np.count_nonzero(stat > threshold)), stat.size, granularity, min_num_filters
    )
    order = np.argsort(-stat, kind="stable")
    return np.sort(order[:count])
