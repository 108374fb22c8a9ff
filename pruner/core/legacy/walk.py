"""Walk a functional Keras model into its ChannelGraph, one layer call at a time.

The walk reads only public API: `model.get_config()` (each layer's `inbound_nodes`
name the producing `[layer, node, tensor]`) and `model.operations` for the objects.
Each layer's kind comes from the registry (`pruner.core.legacy.kinds.registry`); nested
functional and Sequential models are walked in place, their layers named
`outer/inner`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prunejob_contract.errors import InvalidModel, UnsupportedLayer
from pruner.core.legacy.graph import Call, ChannelGraph, LayerRecord, Layout, channel_count
from pruner.core.legacy.kinds.registry import kind_for
from pruner.core.legacy.modelconfig import (
    NESTED_MODEL_CLASSES,
    Shape,
    TensorRef,
    iter_keras_tensors,
    parse_shape,
    tensor_refs,
)

if TYPE_CHECKING:
    import keras


def as_functional(model: keras.Model) -> keras.Model:
    """Return a functional model: Sequential models are converted, subclassed ones refused."""
    import keras  # lazy: importing the pruner must not load TensorFlow

    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError):
            inputs = outputs = None
        if not inputs or not outputs:
            raise InvalidModel(
                f"Sequential model '{model.name}' has no input shape; build it with "
                "keras.Input(...) as its first layer before saving"
            )
        return keras.Model(inputs, outputs, name=model.name)
    config = model.get_config() if isinstance(model, keras.Model) else None
    if not isinstance(config, dict) or "layers" not in config or "input_layers" not in config:
        raise InvalidModel(
            f"model '{getattr(model, 'name', model)}' is not a functional or Sequential "
            "Keras model (subclassed models cannot be analysed)"
        )
    return model


def build_graph(model: keras.Model, excluded: Iterable[str] = ()) -> ChannelGraph:
    """Walk a functional model (use `as_functional` first) into a ChannelGraph."""
    graph = ChannelGraph(model, model.get_config(), excluded)
    _Walker(graph).walk_functional(model, graph.config, prefix="", bound=None)
    return graph


@dataclass
class _Scope:
    """One functional model being walked: its layers' path prefix and objects, and the
    layouts and shapes of its tensors (by `[layer, node, tensor]` reference)."""

    prefix: str
    ops: dict[str, Any]
    shapes: dict[TensorRef, Shape]
    tensors: dict[TensorRef, Layout] = field(default_factory=dict)


class _Walker:
    def __init__(self, graph: ChannelGraph):
        self.graph = graph

    def record(self, path: str, class_name: str, op: Any, entry: dict[str, Any]) -> LayerRecord:
        rec = self.graph.records.get(path)
        if rec is None:
            module = str(entry.get("module") or "")
            kind = kind_for(class_name, module, path)
            name = path.rsplit("/", 1)[-1]
            excluded = path in self.graph.excluded or name in self.graph.excluded
            rec = LayerRecord(path, class_name, kind, op, entry["config"], excluded)
            rec.channels_first = self.graph.channels_first
            kind.check(rec)
            self.graph.records[path] = rec
        return rec

    def run(self, rec: LayerRecord, call: Call) -> list[Layout]:
        graph = self.graph
        first = rec.calls[0] if rec.calls else None
        rec.calls.append(call)
        call.out_layouts = rec.kind.flow(graph, rec, call)
        if first is not None and rec.kind.channel_weights(rec):
            # a shared layer has one set of weights: all its calls keep the same channels
            for a, b in zip(first.in_layouts, call.in_layouts, strict=False):
                graph.unify([a, b], f"shared layer '{rec.path}'")
        if rec.excluded:
            for layout in call.out_layouts:
                graph.pin(layout, f"layer '{rec.path}' is excluded")
        return call.out_layouts

    def walk_functional(
        self, model: Any, config: dict[str, Any], prefix: str, bound: list[Layout] | None
    ) -> list[Layout]:
        graph = self.graph
        inputs = tensor_refs(config["input_layers"])
        outputs = tensor_refs(config["output_layers"])
        scope = _Scope(prefix, {op.name: op for op in model.operations}, {})
        shapes, tensors = scope.shapes, scope.tensors
        for entry in config["layers"]:
            for node in entry["inbound_nodes"]:
                for t in iter_keras_tensors(node):
                    shapes[tuple(t["keras_history"])] = parse_shape(t["shape"])  # type: ignore[index]
        for ref, tensor in zip(outputs, model.outputs, strict=True):
            shapes.setdefault(ref, parse_shape(tensor.shape))
        if bound is not None and len(bound) != len(inputs):
            raise InvalidModel(f"nested model '{prefix[:-1]}' is called with {len(bound)} inputs")

        input_names = [ref[0] for ref in inputs]
        # (entry, node index) in config order; a shared layer's later call may read a tensor
        # made further down the list, so calls whose inputs are not ready wait their turn
        pending: list[tuple[dict[str, Any], int]] = []
        for entry in config["layers"]:
            if entry["class_name"] == "InputLayer":
                layout = self.input_layer(scope, entry, input_names, bound)
                tensors[(entry["name"], 0, 0)] = layout
            else:
                pending.extend((entry, i) for i in range(len(entry["inbound_nodes"])))
        while pending:
            waiting: list[tuple[dict[str, Any], int]] = []
            for entry, node_index in pending:
                node = entry["inbound_nodes"][node_index]
                refs = [tuple(t["keras_history"]) for t in iter_keras_tensors(node)]
                if all(ref in tensors for ref in refs):
                    outs = self.call(scope, entry, node_index, refs)
                    for i, layout in enumerate(outs):
                        tensors[(entry["name"], node_index, i)] = layout
                else:
                    waiting.append((entry, node_index))
            if len(waiting) == len(pending):
                names = ", ".join(sorted({prefix + entry["name"] for entry, _ in waiting}))
                raise InvalidModel(f"layers {names} read tensors no layer produces")
            pending = waiting
        result = []
        for ref in outputs:
            if ref not in tensors:
                raise InvalidModel(f"model output {ref[0]} is not produced by any layer")
            result.append(tensors[ref])
        if bound is None:
            graph.outputs = result
            for layout in result:
                graph.pin(layout, "model output")
        return result

    def input_layer(
        self,
        scope: _Scope,
        entry: dict[str, Any],
        input_names: list[str],
        bound: list[Layout] | None,
    ) -> Layout:
        """A top-level input is a fixed (pinned) source; a nested model's input takes the
        layout its caller passes in."""
        name = entry["name"]
        rec = self.record(scope.prefix + name, "InputLayer", scope.ops.get(name), entry)
        shape = parse_shape(entry["config"]["batch_shape"])
        if bound is None:
            size = channel_count(self.graph.channels_first, shape)
            layout = self.graph.new_source(size, pin="model input")
            rec.calls.append(Call([], [shape], [layout], [shape]))
        else:
            index = input_names.index(name) if name in input_names else 0
            layout = bound[index]
            rec.calls.append(Call([layout], [shape], [layout], [shape]))
        return layout

    def call(
        self, scope: _Scope, entry: dict[str, Any], node_index: int, refs: list[Any]
    ) -> list[Layout]:
        name, class_name = entry["name"], entry["class_name"]
        path, op, shapes = scope.prefix + name, scope.ops.get(name), scope.shapes
        in_layouts = [scope.tensors[ref] for ref in refs]
        in_shapes = [shapes[ref] for ref in refs]
        out_shapes = []
        while (name, node_index, len(out_shapes)) in shapes:
            out_shapes.append(shapes[(name, node_index, len(out_shapes))])
        if class_name in NESTED_MODEL_CLASSES:
            return self.walk_nested(path, op, entry, in_layouts, in_shapes)
        rec = self.record(path, class_name, op, entry)
        node = entry["inbound_nodes"][node_index]
        return self.run(rec, Call(in_layouts, in_shapes, out_shapes=out_shapes, node=node))

    def walk_nested(
        self,
        path: str,
        model: Any,
        entry: dict[str, Any],
        in_layouts: list[Layout],
        in_shapes: list[Shape],
    ) -> list[Layout]:
        config = entry["config"]
        if entry["class_name"] == "Sequential":
            return self.walk_sequential(path, model, config, in_layouts[0], in_shapes[0])
        if "input_layers" not in config or "layers" not in config:
            raise UnsupportedLayer(
                f"nested model '{path}' (type {entry['class_name']}) is not functional"
            )
        return self.walk_functional(model, config, path + "/", in_layouts)

    def walk_sequential(
        self, path: str, model: Any, config: dict[str, Any], layout: Layout, shape: Shape
    ) -> list[Layout]:
        """A Sequential model's layers, in order, on its one input."""
        by_name = {layer.name: layer for layer in model.layers}
        for entry in config["layers"]:
            name, class_name = entry.get("name") or entry["config"]["name"], entry["class_name"]
            inner_path = f"{path}/{name}"
            if class_name == "InputLayer":
                rec = self.record(inner_path, class_name, None, entry)
                rec.calls.append(Call([layout], [shape], [layout], [shape]))
                continue
            op = by_name[name]
            if class_name in NESTED_MODEL_CLASSES:
                outs = self.walk_nested(inner_path, op, entry, [layout], [shape])
                out_shape = parse_shape(op.compute_output_shape(shape))
            else:
                out_shape = parse_shape(op.compute_output_shape(shape))
                rec = self.record(inner_path, class_name, op, entry)
                outs = self.run(rec, Call([layout], [shape], out_shapes=[out_shape]))
            layout, shape = outs[0], out_shape
        return [layout]
