"""The pruning plan: which output filters every layer keeps, as plain data.

`prepare(config, weights, settings)` builds the channel graph and the per-filter
statistics once (steps 1 and 3 of the semantics) from a model's config and weights;
`PreparedModel.plan(threshold)` re-runs only step 2, so searching many thresholds
(`--target-ratio`) is cheap. Nothing here builds a Keras model: surgery
(`pruner.core.surgery.apply_plan`) consumes the plan.

Layer names in a plan are graph paths: the layer name for top-level layers and
`outer/inner` for layers inside nested models.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from prunejob_contract.errors import InvalidArgument, UnsupportedLayer
from prunejob_contract.settings import PruneSettings
from pruner.core.counting import graph_totals
from pruner.core.graph import ChannelGraph, KeptByRoot, Piece
from pruner.core.stats import merge, normalize, retained_indices
from pruner.core.walk import Weights, build_graph


@dataclass
class LayerPlan:
    name: str  # graph path ("outer/inner" inside nested models)
    type: str  # Keras class name
    before: int  # output filters/units before pruning
    kept: list[int]  # retained output indices, ascending

    @property
    def after(self) -> int:
        return len(self.kept)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "before": self.before,
            "after": self.after,
            "kept": list(self.kept),
        }


@dataclass
class PrunePlan:
    settings: PruneSettings
    layers: list[LayerPlan] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings.to_json(), "layers": [lp.to_json() for lp in self.layers]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrunePlan:
        try:
            s = data["settings"]
            settings = PruneSettings(
                normalizer=s["normalizer"],
                equalization_criterion=s["equalizationCriterion"],
                granularity=int(s["granularity"]),
                threshold=float(s["threshold"]),
                min_num_filters=int(s["minNumFilters"]),
                excluded_layers=tuple(s.get("excludedLayers", ())),
                prune_transpose_filters=bool(s.get("pruneTransposeFilters", False)),
            )
            layers = [
                LayerPlan(str(lp["name"]), str(lp["type"]), int(lp["before"]), list(lp["kept"]))
                for lp in data["layers"]
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidArgument(f"not a pruning plan: missing or bad field {err}") from None
        return cls(settings, layers)

    def filters(self) -> dict[str, int]:
        return {
            "before": sum(lp.before for lp in self.layers),
            "after": sum(lp.after for lp in self.layers),
        }


def graph_for(config: dict[str, Any], weights: Weights, settings: PruneSettings) -> ChannelGraph:
    """The channel graph these settings see (exclusions, transposed-filter switch)."""
    return build_graph(
        config,
        weights,
        settings.excluded_layers,
        prune_transpose_filters=settings.prune_transpose_filters,
    )


class PreparedModel:
    """A model's channel graph and merged group statistics, computed once."""

    def __init__(self, config: dict[str, Any], weights: Weights, settings: PruneSettings):
        self.config = config
        self.weights = weights
        self.settings = settings
        self.graph = graph_for(config, weights, settings)
        graph = self.graph
        records = graph.records
        layer_stats: dict[str, np.ndarray] = {}
        for rec in records.values():
            if rec.kind.owns_filters:
                raw = rec.kind.stat(rec)
                if raw is not None:
                    layer_stats[rec.path] = normalize(raw, settings.normalizer)
        self.layer_stats = layer_stats
        by_root: dict[int, list[np.ndarray]] = {}
        for c in graph.contributions:
            if c.path in layer_stats:
                values = layer_stats[c.path][c.start : c.start + c.length]
                by_root.setdefault(graph.find(c.source), []).append(values)
        self.group_stats = {
            root: merge(values, settings.equalization_criterion) for root, values in by_root.items()
        }
        self.root_sizes = {root: graph.sources[root].size for root in graph.groups()}
        self.pinned = graph.pinned_roots()
        self._totals_before: dict[str, int] | None = None

    @property
    def unknown_excluded(self) -> list[str]:
        """`-el` names that match no layer (callers warn about them)."""
        names = {rec.path for rec in self.graph.records.values()}
        names |= {rec.name for rec in self.graph.records.values()}
        return [name for name in self.settings.excluded_layers if name not in names]

    def layer_names(self) -> list[str]:
        return list(self.graph.records)

    def plan(self, threshold: float | None = None) -> PrunePlan:
        settings = self.settings
        if threshold is not None:
            settings = replace(settings, threshold=float(threshold))
        pinned = dict(self.pinned)
        kept = self._retained(settings, pinned)
        _check_group_norms(self.graph, kept, pinned, self.root_sizes)
        _check_unpruned(self.graph, kept)
        return PrunePlan(settings, layer_plans(self.graph, kept))

    def _retained(self, settings: PruneSettings, pinned: dict[int, str]) -> KeptByRoot:
        kept: KeptByRoot = {}
        for root, size in self.root_sizes.items():
            stat = self.group_stats.get(root)
            if root in pinned or stat is None:
                kept[root] = np.arange(size)
            else:
                kept[root] = retained_indices(
                    stat, settings.threshold, settings.granularity, settings.min_num_filters
                )
        return kept

    def totals(self, plan: PrunePlan) -> dict[str, dict[str, int]]:
        """Params, filters and FLOPs before/after `plan`, computed without surgery."""
        if self._totals_before is None:
            full = {root: np.arange(size) for root, size in self.root_sizes.items()}
            self._totals_before = graph_totals(self.graph, full)
        after = graph_totals(self.graph, kept_from_plan(self.graph, plan))
        filters = plan.filters()
        before = self._totals_before
        return {
            "params": {"before": before["params"], "after": after["params"]},
            "filters": filters,
            "flops": {"before": before["flops"], "after": after["flops"]},
        }


def prepare(config: dict[str, Any], weights: Weights, settings: PruneSettings) -> PreparedModel:
    """Build the channel graph and per-filter stats once from a model's config (as its
    file stores it, either dialect) and weights (`{layer path: [arrays in Keras
    order]}`). Raises UnsupportedLayer, InvalidModel etc. with one-line messages."""
    return PreparedModel(config, weights, settings)


def compute_plan(config: dict[str, Any], weights: Weights, settings: PruneSettings) -> PrunePlan:
    return prepare(config, weights, settings).plan()


def layer_plans(graph: ChannelGraph, kept: KeptByRoot) -> list[LayerPlan]:
    """Every layer that owns output filters, in model order."""
    out = []
    for rec in graph.records.values():
        if rec.kind.owns_filters and rec.calls:
            layout = rec.calls[0].out_layouts[0]
            indices = graph.kept_indices(layout, kept)
            out.append(LayerPlan(rec.path, rec.class_name, graph.size(layout), indices.tolist()))
    return out


def kept_from_plan(graph: ChannelGraph, plan: PrunePlan) -> KeptByRoot:
    """Turn a plan back into kept indices per group, checking it fits this model."""
    by_name = {lp.name: lp for lp in plan.layers}
    kept: KeptByRoot = {}
    known = set()
    for rec in graph.records.values():
        if not (rec.kind.owns_filters and rec.calls):
            continue
        known.add(rec.path)
        lp = by_name.get(rec.path)
        layout = rec.calls[0].out_layouts[0]
        if lp is None:
            raise InvalidArgument(f"the plan has no entry for layer '{rec.path}'")
        if lp.before != graph.size(layout):
            raise InvalidArgument(
                f"the plan says layer '{rec.path}' has {lp.before} filters, the model "
                f"has {graph.size(layout)}"
            )
        indices = np.asarray(lp.kept, dtype=np.int64)
        offset = 0
        for piece in layout:
            for sid in piece.segments:
                size = graph.sources[sid].size
                mine = indices[(indices >= offset) & (indices < offset + size)] - offset
                root = graph.find(sid)
                if root in kept and not np.array_equal(kept[root], mine):
                    others = ", ".join(f"'{p}'" for p in graph.producers_of((Piece((sid,)),)))
                    raise InvalidArgument(
                        f"the plan keeps different channels in layers that must match: "
                        f"'{rec.path}' and {others}"
                    )
                kept[root] = mine
                offset += size
    unknown = sorted(set(by_name) - known)
    if unknown:
        raise InvalidArgument(f"the plan names layers the model does not have: {unknown}")
    for root in graph.groups():
        if root not in kept:
            kept[root] = np.arange(graph.sources[root].size)
    for root, reason in graph.pinned_roots().items():
        if len(kept[root]) != graph.sources[root].size:
            raise InvalidArgument(f"the plan prunes channels that must be kept ({reason})")
    _check_unpruned(graph, kept)
    return kept


def _check_group_norms(
    graph: ChannelGraph, kept: KeptByRoot, pinned: dict[int, str], sizes: dict[int, int]
) -> None:
    """GroupNormalization needs the same kept count in each of its groups; where the plan
    breaks that, the channels feeding it are kept whole (documented limitation)."""
    changed = True
    while changed:
        changed = False
        for check in graph.group_checks:
            indices = graph.kept_indices(check.layout, kept)
            total = graph.size(check.layout)
            if check.groups <= 0 or total % check.groups:
                continue
            counts = np.bincount(indices // (total // check.groups), minlength=check.groups)
            if len(indices) < total and (counts.min() != counts.max() or counts.min() == 0):
                for sid in (s for p in check.layout for s in p.segments):
                    root = graph.find(sid)
                    if len(kept[root]) != sizes[root]:
                        kept[root] = np.arange(sizes[root])
                        pinned[root] = f"GroupNormalization '{check.record.path}'"
                        changed = True


def _check_unpruned(graph: ChannelGraph, kept: KeptByRoot) -> None:
    for check in graph.unpruned_checks:
        pruned = [
            sid
            for p in check.layout
            for sid in p.segments
            if len(kept[graph.find(sid)]) != graph.sources[sid].size
        ]
        if pruned:
            producers = sorted(set(graph.producers_of((Piece(tuple(pruned)),))))
            names = ", ".join(f"'{p}'" for p in producers)
            raise UnsupportedLayer(
                f"layer '{check.record.path}' ({check.record.class_name}) {check.what} after "
                f"pruned layer(s) {names}; exclude them (-el) or exclude "
                f"'{check.record.name}' to keep its input whole"
            )
