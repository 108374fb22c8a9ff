"""Walk a model's config and weights into its ChannelGraph, one layer call at a time.

Input: the model's config as its file stores it (either dialect, see
`pruner.core.modelconfig`) and its weights as `{layer path: [arrays in Keras order]}`.
Each layer's kind comes from the registry (`pruner.core.kinds.registry`); the kind
declares the layer's weights from its config and works out its output shape from its
input shapes (Keras 2 configs store no shapes; where a Keras 3 config stores one, that
one is used). Nested functional and Sequential models are walked in place, their
layers named `outer/inner`; Sequential models are walked as a chain.

Every shape the config stores (Keras 3 call tensors, `build_config` input shapes,
nested input shapes) is recorded as a `ShapeSite`, so surgery can keep them in step
with the pruned channel counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunejob_contract.errors import InvalidModel, UnsupportedLayer
from pruner.core.graph import (
    Call,
    ChannelGraph,
    LayerRecord,
    Layout,
    ShapeSite,
    channel_axis,
    channel_count,
)
from pruner.core.kinds.merges import ElementwiseMerge
from pruner.core.kinds.opaque import ExcludedUnknown
from pruner.core.kinds.registry import kind_for, lookup_kind
from pruner.core.kinds.wrappers import TimeDistributedKind
from pruner.core.modelconfig import (
    INPUT_SHAPE_KEYS,
    NESTED_MODEL_CLASSES,
    LayerEntry,
    ModelSpec,
    Shape,
    TensorRef,
    input_shape_of,
    parse_model,
    parse_shape,
)
from pruner.core.shapes import ShapeUnknown

Weights = Mapping[str, Sequence[np.ndarray]]
_EXCLUDED_UNKNOWN = ExcludedUnknown()


def build_graph(
    config: dict[str, Any],
    weights: Weights,
    excluded: Iterable[str] = (),
    *,
    prune_transpose_filters: bool = False,
    strict_shapes: bool = False,
) -> ChannelGraph:
    """The channel graph of a model config (`{"class_name", "config"}`) and its weights.

    `strict_shapes`: where a Keras 3 config stores a tensor's shape, check that the
    kinds' own shape inference agrees with it (InvalidModel otherwise); the tests use
    it to check inference against Keras itself.
    """
    spec = parse_model(config)
    graph = ChannelGraph(
        spec.config, excluded, {"prune_transpose_filters": bool(prune_transpose_filters)}
    )
    walker = _Walker(graph, weights, strict_shapes)
    if spec.sequential:
        walker.walk_top_sequential(spec)
    else:
        layouts, _ = walker.walk_functional(spec, "", None, None)
        graph.outputs = layouts
        for layout in layouts:
            graph.pin(layout, "model output")
    walker.check_all_weights_used()
    return graph


@dataclass
class _Scope:
    """One functional model being walked: its layers' path prefix and the layouts and
    shapes of its tensors (by `[layer, node, tensor]` reference)."""

    prefix: str
    spec: ModelSpec
    tensors: dict[TensorRef, Layout] = field(default_factory=dict)
    shapes: dict[TensorRef, Shape] = field(default_factory=dict)
    time_distributed: set[TensorRef] = field(default_factory=set)
    node_offsets: dict[str, int] = field(default_factory=dict)  # nested models, see below


def nested_node_offsets(spec: ModelSpec) -> dict[str, int]:
    """How a nested model's calls are numbered in the references to its outputs.

    Keras 2 keeps a nested model's own first node (its input linked to its output) out
    of the config but not out of the numbering: its k-th call in `inbound_nodes` is
    node k + 1 to the layers reading it (Keras 2.2.4 for every nested model, tf_keras
    for those built on an InputLayer). Keras 3 numbers from 0. Which one a config
    uses shows in the references: one past the last call means the offset."""
    nested = {e.name: len(e.nodes) for e in spec.layers if e.class_name in NESTED_MODEL_CLASSES}
    highest: dict[str, int] = {}
    refs = [ref for e in spec.layers for node in e.nodes for ref in node.refs] + spec.outputs
    for name, node, _ in refs:
        if name in nested:
            highest[name] = max(highest.get(name, -1), node)
    return {name: 1 if highest.get(name, -1) >= calls else 0 for name, calls in nested.items()}


class _Walker:
    def __init__(self, graph: ChannelGraph, weights: Weights, strict_shapes: bool):
        self.graph = graph
        self.weights = weights
        self.strict_shapes = strict_shapes

    # --- records and weights ------------------------------------------------------------
    def record(self, path: str, entry: LayerEntry) -> LayerRecord:
        rec = self.graph.records.get(path)
        if rec is not None:
            return rec
        graph = self.graph
        name = path.rsplit("/", 1)[-1]
        excluded = path in graph.excluded or name in graph.excluded
        kind = lookup_kind(entry.class_name, entry.module)
        if kind is None:
            if not excluded:
                kind_for(entry.class_name, entry.module, path)  # raises, naming the layer
            kind = _EXCLUDED_UNKNOWN
        rec = LayerRecord(
            path, entry.class_name, kind, entry.config, excluded, entry=entry.entry,
            module=entry.module, channels_first=graph.channels_first, options=graph.options,
        )  # fmt: skip
        if isinstance(kind, TimeDistributedKind):
            self.bind_wrapped(rec)
        rec.kind.check(rec)
        self.attach_weights(rec)
        graph.records[path] = rec
        return rec

    def bind_wrapped(self, rec: LayerRecord) -> None:
        layer = rec.config.get("layer")
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise InvalidModel(f"TimeDistributed '{rec.path}' has no wrapped layer in its config")
        class_name = str(layer.get("class_name"))
        module = layer.get("module") if isinstance(layer.get("module"), str) else ""
        if class_name in NESTED_MODEL_CLASSES or class_name == "TimeDistributed":
            raise UnsupportedLayer(
                f"TimeDistributed '{rec.path}' wraps a {class_name}; only single layers "
                "can be wrapped"
            )
        inner_kind = lookup_kind(class_name, module)
        if inner_kind is None:
            kind_for(class_name, module, rec.path)  # raises, naming the wrapper
            raise AssertionError  # pragma: no cover
        rec.inner = LayerRecord(
            rec.path, class_name, inner_kind, layer["config"], rec.excluded, entry=layer,
            module=module, channels_first=rec.channels_first, options=rec.options,
        )  # fmt: skip
        rec.kind = TimeDistributedKind.wrapping(inner_kind)

    def attach_weights(self, rec: LayerRecord) -> None:
        values = list(self.weights.get(rec.path) or ())
        if rec.kind.any_weights:
            names = [f"weight_{i}" for i in range(len(values))]
        else:
            names = rec.kind.declared_weights(rec)
        shown = f"layer '{rec.path}' ({rec.class_name})"
        if len(values) != len(names):
            if not values:
                raise InvalidModel(
                    f"{shown} has no weights in the model, its config says it has "
                    f"{', '.join(names)}"
                )
            if not names:
                raise UnsupportedLayer(
                    f"{shown} has {len(values)} weights the pruner does not know how to slice"
                )
            raise UnsupportedLayer(
                f"{shown} has {len(values)} weights, its config says {len(names)} "
                f"({', '.join(names)}); the pruner does not know how to slice the others"
            )
        rec.weight_names = names
        rec.weights = {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
        if rec.inner is not None:
            rec.inner.weight_names, rec.inner.weights = rec.weight_names, rec.weights

    def check_all_weights_used(self) -> None:
        unknown = sorted(p for p, v in self.weights.items() if v and p not in self.graph.records)
        if unknown:
            raise InvalidModel(
                f"the weights name layers the model config does not have: {', '.join(unknown[:5])}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )

    def check_weight_axes(self, rec: LayerRecord) -> None:
        """Weight axes that follow channels must have the channel counts the graph has."""
        if not rec.weights or not rec.calls:
            return
        call = rec.calls[0]
        graph = self.graph
        in_size = graph.size(call.in_layouts[0]) if call.in_layouts else 0
        out_size = graph.size(call.out_layouts[0]) if call.out_layouts else 0
        shapes = rec.weight_shapes()
        index_map = rec.kind.index_map(rec, shapes, np.arange(in_size), np.arange(out_size))
        for name, axes in index_map.items():
            for axis, indices in axes.items():
                if shapes[name][axis] != len(indices):
                    raise InvalidModel(
                        f"layer '{rec.path}' ({rec.class_name}): weight {name} has shape "
                        f"{shapes[name]}, but the model's config gives {len(indices)} "
                        f"channels on its axis {axis}; config and weights do not match"
                    )

    # --- shapes ---------------------------------------------------------------------------
    def output_shapes(self, rec: LayerRecord, call: Call, stored: list[Shape]) -> list[Shape]:
        try:
            inferred = rec.kind.output_shapes(rec, call)
        except (ShapeUnknown, KeyError, TypeError, ValueError) as err:
            if stored:
                return stored
            reason = str(err) if isinstance(err, ShapeUnknown) else f"bad config ({err!r})"
            raise InvalidModel(
                f"the output shape of layer '{rec.path}' ({rec.class_name}) cannot be worked "
                f"out from the model's config: {reason}"
            ) from None
        if stored:
            if self.strict_shapes and tuple(inferred[: len(stored)]) != tuple(stored):
                raise InvalidModel(
                    f"layer '{rec.path}' ({rec.class_name}): inferred output shapes "
                    f"{inferred} differ from the stored {stored}"
                )
            return stored + inferred[len(stored) :]
        return inferred

    def site(
        self,
        container: dict[str, Any],
        key: str,
        layout: Layout,
        time_distributed: bool = False,
        index: int | None = None,
    ) -> None:
        """Remember a stored shape whose channel axis follows `layout` (`index`: the one
        shape at that position of a list of shapes)."""
        value = container[key]
        if index is not None:
            value = value[index] if isinstance(value, list | tuple) and index < len(value) else None
        if not isinstance(value, list | tuple) or not value:
            return
        if isinstance(value[0], list | tuple):  # a list of shapes: not one tensor's
            return
        rank = len(value)
        if rank < 2:
            return
        axis = channel_axis(self.graph.channels_first, rank)
        if time_distributed and self.graph.channels_first and rank >= 4:
            axis = 2
        self.graph.shape_sites.append(ShapeSite(container, key, layout, axis, index))

    def input_shape_sites(
        self, entry: dict[str, Any], layouts: Sequence[Layout], td: Sequence[bool] = ()
    ) -> None:
        """`build_config.input_shape`: one shape, or one per input."""
        build = entry.get("build_config")
        if not isinstance(build, dict) or "input_shape" not in build:
            return
        shape = build["input_shape"]
        if not isinstance(shape, list | tuple) or not layouts:
            return
        if shape and isinstance(shape[0], list | tuple):
            for i, layout in enumerate(layouts[: len(shape)]):
                self.site(build, "input_shape", layout, bool(td[i]) if i < len(td) else False, i)
        else:
            self.site(build, "input_shape", layouts[0], bool(td[0]) if td else False)

    # --- calls ------------------------------------------------------------------------------
    def run(self, rec: LayerRecord, call: Call) -> list[Layout]:
        graph = self.graph
        first = rec.calls[0] if rec.calls else None
        rec.calls.append(call)
        call.out_layouts = rec.kind.flow(graph, rec, call)
        if first is None:
            self.check_weight_axes(rec)
        elif rec.kind.channel_weights(rec):
            # a shared layer has one set of weights: all its calls keep the same channels
            for a, b in zip(first.in_layouts, call.in_layouts, strict=False):
                graph.unify([a, b], f"shared layer '{rec.path}'")
        if rec.excluded:
            for layout in call.out_layouts:
                graph.pin(layout, f"layer '{rec.path}' is excluded")
        return call.out_layouts

    def walk_functional(
        self,
        spec: ModelSpec,
        prefix: str,
        bound: list[Layout] | None,
        bound_shapes: list[Shape] | None,
    ) -> tuple[list[Layout], list[Shape]]:
        scope = _Scope(prefix, spec, node_offsets=nested_node_offsets(spec))
        if bound is not None and len(bound) != len(spec.inputs):
            raise InvalidModel(
                f"nested model '{prefix[:-1]}' is called with {len(bound)} inputs, it has "
                f"{len(spec.inputs)}"
            )
        input_names = [ref[0] for ref in spec.inputs]
        # (entry, node index) in config order; a shared layer's later call may read a tensor
        # made further down the list, so calls whose inputs are not ready wait their turn
        pending: list[tuple[LayerEntry, int]] = []
        for entry in spec.layers:
            if entry.class_name == "InputLayer":
                self.input_layer(scope, entry, input_names, bound, bound_shapes)
            else:
                pending.extend((entry, i) for i in range(len(entry.nodes)))
        while pending:
            waiting: list[tuple[LayerEntry, int]] = []
            for entry, node_index in pending:
                refs = entry.nodes[node_index].refs
                if all(ref in scope.tensors for ref in refs):
                    self.call(scope, entry, node_index)
                else:
                    waiting.append((entry, node_index))
            if len(waiting) == len(pending):
                names = ", ".join(sorted({prefix + entry.name for entry, _ in waiting}))
                raise InvalidModel(f"layers {names} read tensors no layer produces")
            pending = waiting
        layouts, shapes = [], []
        for ref in spec.outputs:
            if ref not in scope.tensors:
                raise InvalidModel(f"model output {prefix}{ref[0]} is not produced by any layer")
            layouts.append(scope.tensors[ref])
            shapes.append(scope.shapes[ref])
        return layouts, shapes

    def input_layer(
        self,
        scope: _Scope,
        entry: LayerEntry,
        input_names: list[str],
        bound: list[Layout] | None,
        bound_shapes: list[Shape] | None,
    ) -> None:
        """A top-level input is a fixed (pinned) source; a nested model's input takes the
        layout its caller passes in."""
        path = scope.prefix + entry.name
        rec = self.record(path, entry)
        declared = input_shape_of(entry.config)
        if bound is None:
            if declared is None:
                raise InvalidModel(f"input '{path}' has no batch shape in the model config")
            shape = declared
            layout = self.graph.new_source(
                channel_count(self.graph.channels_first, shape), pin="model input"
            )
            rec.calls.append(Call([], [shape], [layout], [shape]))
        else:
            index = input_names.index(entry.name) if entry.name in input_names else 0
            layout = bound[index]
            shape = bound_shapes[index] if bound_shapes else (declared or ())
            rec.calls.append(Call([layout], [shape], [layout], [shape]))
        for key in INPUT_SHAPE_KEYS:
            if key in entry.config:
                self.site(entry.config, key, layout)
        scope.tensors[(entry.name, 0, 0)] = layout
        scope.shapes[(entry.name, 0, 0)] = shape

    def call(self, scope: _Scope, entry: LayerEntry, node_index: int) -> None:
        node = entry.nodes[node_index]
        path = scope.prefix + entry.name
        in_layouts = [scope.tensors[ref] for ref in node.refs]
        in_shapes = [scope.shapes[ref] for ref in node.refs]
        in_td = [ref in scope.time_distributed for ref in node.refs]
        for t, layout, td in zip(node.tensors or (), in_layouts, in_td, strict=False):
            self.site(t, "shape", layout, td)
        if entry.class_name in NESTED_MODEL_CLASSES:
            if node_index == 0:
                self.input_shape_sites(entry.entry, in_layouts, in_td)
            outs, out_shapes = self.walk_nested(path, entry, in_layouts, in_shapes)
            produced_td = False
        else:
            rec = self.record(path, entry)
            produced_td = isinstance(rec.kind, TimeDistributedKind)
            reads_td = any(in_td) and self.graph.channels_first and not produced_td
            if reads_td and not isinstance(rec.kind, ElementwiseMerge):
                raise UnsupportedLayer(
                    f"layer '{path}' ({entry.class_name}) reads the output of a "
                    "TimeDistributed layer in a channels_first model; only "
                    "TimeDistributed layers and element-wise merges can follow one there"
                )
            if not rec.calls:
                self.input_shape_sites(entry.entry, in_layouts, in_td)
                if rec.inner is not None:
                    self.input_shape_sites(rec.inner.entry, in_layouts)
            call = Call(in_layouts, in_shapes, constants=node.constants)
            stored: list[Shape] = []
            while (entry.name, node_index, len(stored)) in scope.spec.stored_shapes:
                stored.append(scope.spec.stored_shapes[(entry.name, node_index, len(stored))])
            call.out_shapes = self.output_shapes(rec, call, stored)
            outs = self.run(rec, call)
            out_shapes = call.out_shapes
            if len(outs) != len(out_shapes):
                raise InvalidModel(
                    f"layer '{path}' ({entry.class_name}) has {len(out_shapes)} outputs in "
                    f"the config, the pruner made {len(outs)}"
                )
        numbered = node_index + scope.node_offsets.get(entry.name, 0)
        for i, (layout, shape) in enumerate(zip(outs, out_shapes, strict=True)):
            ref = (entry.name, numbered, i)
            scope.tensors[ref] = layout
            scope.shapes[ref] = shape
            if produced_td:
                scope.time_distributed.add(ref)

    def walk_nested(
        self, path: str, entry: LayerEntry, in_layouts: list[Layout], in_shapes: list[Shape]
    ) -> tuple[list[Layout], list[Shape]]:
        spec = parse_model(entry.entry, where=path)
        if spec.sequential:
            if len(in_layouts) != 1:
                raise InvalidModel(
                    f"Sequential model '{path}' is called with {len(in_layouts)} inputs"
                )
            layout, shape = self.walk_sequential(spec, path + "/", in_layouts[0], in_shapes[0])
            return [layout], [shape]
        return self.walk_functional(spec, path + "/", in_layouts, in_shapes)

    # --- Sequential models ------------------------------------------------------------------
    def walk_top_sequential(self, spec: ModelSpec) -> None:
        shape = sequential_input_shape(spec)
        if shape is None:
            raise InvalidModel(
                f"Sequential model '{spec.name}' has no input shape; build it with "
                "keras.Input(...) as its first layer before saving"
            )
        layout = self.graph.new_source(
            channel_count(self.graph.channels_first, shape), pin="model input"
        )
        out, _ = self.walk_sequential(spec, "", layout, shape, top=True)
        self.graph.outputs = [out]
        self.graph.pin(out, "model output")

    def walk_sequential(
        self, spec: ModelSpec, prefix: str, layout: Layout, shape: Shape, top: bool = False
    ) -> tuple[Layout, Shape]:
        """A Sequential model's layers, in order, on its one input."""
        if "build_input_shape" in spec.config:
            self.site(spec.config, "build_input_shape", layout)
        first = True
        for entry in spec.layers:
            path = prefix + entry.name
            if entry.class_name == "InputLayer":
                rec = self.record(path, entry)
                rec.calls.append(Call([] if top else [layout], [shape], [layout], [shape]))
                for key in INPUT_SHAPE_KEYS:
                    if key in entry.config:
                        self.site(entry.config, key, layout)
                continue
            if first and "batch_input_shape" in entry.config:  # Keras 2: on the first layer
                self.site(entry.config, "batch_input_shape", layout)
            first = False
            self.input_shape_sites(entry.entry, [layout])
            if entry.class_name in NESTED_MODEL_CLASSES:
                outs, shapes = self.walk_nested(path, entry, [layout], [shape])
                layout, shape = outs[0], shapes[0]
                continue
            rec = self.record(path, entry)
            if rec.inner is not None and not rec.calls:
                self.input_shape_sites(rec.inner.entry, [layout])
            call = Call([layout], [shape])
            call.out_shapes = self.output_shapes(rec, call, [])
            outs = self.run(rec, call)
            layout, shape = outs[0], call.out_shapes[0]
        return layout, shape


def sequential_input_shape(spec: ModelSpec) -> Shape | None:
    """A top-level Sequential's input: its InputLayer, its first layer's Keras 2
    `batch_input_shape`, its `build_input_shape`, or its first layer's build_config."""
    for entry in spec.layers[:1]:
        declared = input_shape_of(entry.config)
        if declared is not None:
            return declared
    build = spec.config.get("build_input_shape")
    if isinstance(build, list | tuple) and build and not isinstance(build[0], list | tuple):
        return parse_shape(build)
    if spec.layers:
        first = spec.layers[0].entry.get("build_config")
        if isinstance(first, dict):
            shape = first.get("input_shape")
            if isinstance(shape, list | tuple) and shape and not isinstance(shape[0], list):
                return parse_shape(shape)
    return None
