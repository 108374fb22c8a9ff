"""Pruning settings: TAO tlt-prune's flags with TAO's defaults, validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from prunejob_contract.errors import InvalidArgument

Normalizer = Literal["max", "L2", "off"]
Criterion = Literal["union", "intersection", "arithmetic_mean", "geometric_mean"]
NORMALIZERS: tuple[str, ...] = ("max", "L2", "off")
CRITERIA: tuple[str, ...] = ("union", "intersection", "arithmetic_mean", "geometric_mean")


@dataclass(frozen=True)
class PruneSettings:
    normalizer: Normalizer = "max"
    equalization_criterion: Criterion = "union"
    granularity: int = 8
    threshold: float = 0.1
    min_num_filters: int = 16
    excluded_layers: tuple[str, ...] = field(default_factory=tuple)
    # Beyond TAO: TAO never prunes a Conv*Transpose's output filters (only its input
    # channels follow the layer before it); True prunes them like a Conv's.
    prune_transpose_filters: bool = False

    def __post_init__(self) -> None:
        if self.normalizer not in NORMALIZERS:
            raise InvalidArgument(
                f"normalizer {self.normalizer!r} is not one of {', '.join(NORMALIZERS)}"
            )
        if self.equalization_criterion not in CRITERIA:
            raise InvalidArgument(
                f"equalization criterion {self.equalization_criterion!r} is not one of "
                f"{', '.join(CRITERIA)}"
            )
        if self.granularity < 1:
            raise InvalidArgument(
                f"pruning granularity must be a positive integer, got {self.granularity}"
            )
        if not self.threshold >= 0:  # also rejects NaN
            raise InvalidArgument(f"pruning threshold must be >= 0, got {self.threshold}")
        if self.min_num_filters < 0:
            raise InvalidArgument(f"min_num_filters must be >= 0, got {self.min_num_filters}")
        if not isinstance(self.prune_transpose_filters, bool):
            raise InvalidArgument(
                "prune_transpose_filters must be true or false, got "
                f"{self.prune_transpose_filters!r}"
            )

    def to_json(self) -> dict[str, Any]:
        """camelCase, as in the report and the PruneJob spec. `pruneTransposeFilters`
        appears only when set, so TAO-default settings serialize as before."""
        data = asdict(self)
        out = {
            "normalizer": data["normalizer"],
            "equalizationCriterion": data["equalization_criterion"],
            "granularity": data["granularity"],
            "threshold": data["threshold"],
            "minNumFilters": data["min_num_filters"],
            "excludedLayers": list(data["excluded_layers"]),
        }
        if self.prune_transpose_filters:
            out["pruneTransposeFilters"] = True
        return out
