"""The channel-dependency graph of a functional Keras model.

Every tensor's channel axis is described by a `Layout`: the channel spaces
("sources") it is made of, in order. A source is the set of output channels of one
producing layer (Conv/Dense...) or a fixed set that is never pruned (a model input,
the output of an opaque layer). Layer kinds (`pruner.layers`) say how layouts flow
through each layer; element-wise merges tie sources together with a union-find, so
a group of tied sources ends up keeping the same channel indices.

The walk reads only public API: `model.get_config()` (each layer's `inbound_nodes`
name the producing `[layer, node, tensor]`) and `model.operations` for the objects.
Layer paths are the layer name for top-level layers and `outer/inner` inside nested
models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from prunejob_contract.errors import InvalidModel, UnsupportedLayer

if TYPE_CHECKING:
    import keras

    from pruner.layers import LayerKind

NESTED_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class Piece:
    """A run of channels: `segments` are source ids in channel order. `repeat` > 1 after a
    Flatten: flat index = position * channels + channel (channels-last order), or
    channel * positions + position when `channel_major` (a channels_first tensor)."""

    segments: tuple[int, ...]
    repeat: int = 1
    channel_major: bool = False


Layout = tuple[Piece, ...]


@dataclass
class Source:
    size: int
    owner: str | None  # path of the producing layer; None for fixed sources


@dataclass
class Call:
    """One call of a layer (a node): the layouts and shapes going in and out."""

    in_layouts: list[Layout]
    in_shapes: list[Shape]
    out_layouts: list[Layout] = field(default_factory=list)
    out_shapes: list[Shape] = field(default_factory=list)
    node: dict[str, Any] | None = None  # the serialized call (args/kwargs), for constants


@dataclass
class LayerRecord:
    path: str
    class_name: str
    kind: LayerKind
    op: Any  # the Keras layer or operation object
    config: dict[str, Any]  # this layer's entry config inside the model config tree
    excluded: bool
    calls: list[Call] = field(default_factory=list)
    source: int | None = None  # for producers: the source of their output channels
    channels_first: bool = False  # the model's data format

    def channel_axis(self, rank: int) -> int:
        return channel_axis(self.channels_first, rank)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def weight(self, name: str) -> np.ndarray:
        for w in self.op.weights:
            if w.name == name:
                return w.numpy()
        raise KeyError(f"layer '{self.path}' has no weight {name!r}")


@dataclass
class UnprunedCheck:
    """A layer that cannot follow pruned channels (Reshape that moves them, Permute...)."""

    record: LayerRecord
    layout: Layout
    what: str


@dataclass
class GroupCheck:
    """GroupNormalization: kept channels must spread evenly over its groups."""

    record: LayerRecord
    layout: Layout
    groups: int


@dataclass
class Contribution:
    """`length` values of layer `path`'s stat, from `start`, describe source `source`."""

    path: str
    source: int
    start: int
    length: int


class ChannelGraph:
    """Sources, their union-find, pins, stat contributions and per-layer records."""

    def __init__(self, model: keras.Model, config: dict[str, Any], excluded: Iterable[str]):
        self.model = model
        self.config = config
        self.channels_first = model_data_format(config) == "channels_first"
        self.excluded = frozenset(excluded)
        self.sources: list[Source] = []
        self._parent: list[int] = []
        self.pins: dict[int, str] = {}
        self.contributions: list[Contribution] = []
        self.records: dict[str, LayerRecord] = {}
        self.unpruned_checks: list[UnprunedCheck] = []
        self.group_checks: list[GroupCheck] = []
        self.outputs: list[Layout] = []

    # --- sources and the union-find -------------------------------------------------
    def new_source(self, size: int, owner: str | None = None, pin: str | None = None) -> Layout:
        self.sources.append(Source(int(size), owner))
        self._parent.append(len(self._parent))
        sid = len(self.sources) - 1
        if pin is not None:
            self.pins[sid] = pin
        return (Piece((sid,)),)

    def find(self, source: int) -> int:
        parent = self._parent
        root = source
        while parent[root] != root:
            root = parent[root]
        while parent[source] != root:  # path compression
            parent[source], source = root, parent[source]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)  # lowest id = model order root

    def unify(self, layouts: Sequence[Layout], where: str) -> None:
        """Tie layouts that must keep identical channels (element-wise merge, shared layer)."""
        first = layouts[0]
        for other in layouts[1:]:
            if self.segment_sizes(first) == self.segment_sizes(other):
                for pa, pb in zip(first, other, strict=True):
                    for sa, sb in zip(pa.segments, pb.segments, strict=True):
                        self.union(sa, sb)
            else:  # channel runs do not line up: keep every channel involved
                self.pin(first, f"channels of {where} cannot be aligned")
                self.pin(other, f"channels of {where} cannot be aligned")

    def pin(self, layout: Layout, reason: str) -> None:
        for sid in sources_of(layout):
            self.pins.setdefault(sid, reason)

    def pinned_roots(self) -> dict[int, str]:
        roots: dict[int, str] = {}
        for sid, reason in self.pins.items():
            roots.setdefault(self.find(sid), reason)
        return roots

    def groups(self) -> dict[int, list[int]]:
        """Root source id -> member source ids, roots in ascending (model) order."""
        out: dict[int, list[int]] = {}
        for sid in range(len(self.sources)):
            out.setdefault(self.find(sid), []).append(sid)
        return out

    # --- layouts --------------------------------------------------------------------
    def segment_sizes(self, layout: Layout) -> list[tuple[int, tuple[int, ...]]]:
        return [
            (p.repeat, p.channel_major, tuple(self.sources[s].size for s in p.segments))
            for p in layout
        ]

    def size(self, layout: Layout) -> int:
        return sum(p.repeat * sum(self.sources[s].size for s in p.segments) for p in layout)

    def kept_indices(self, layout: Layout, kept_by_root: dict[int, np.ndarray]) -> np.ndarray:
        """Retained channel indices of a tensor with this layout, ascending."""
        parts: list[np.ndarray] = []
        offset = 0
        for piece in layout:
            block: list[np.ndarray] = []
            width = 0
            for sid in piece.segments:
                block.append(kept_by_root[self.find(sid)] + width)
                width += self.sources[sid].size
            kept = np.concatenate(block) if block else np.zeros(0, dtype=np.int64)
            if piece.repeat > 1 and piece.channel_major:
                kept = (kept[:, None] * piece.repeat + np.arange(piece.repeat)[None, :]).ravel()
            elif piece.repeat > 1:
                kept = (np.arange(piece.repeat)[:, None] * width + kept[None, :]).ravel()
            parts.append(kept + offset)
            offset += width * piece.repeat
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    # --- constraints ----------------------------------------------------------------
    def add_contribution(self, path: str, layout: Layout) -> None:
        """Layer `path`'s stat (one value per channel of `layout`) describes these sources."""
        start = 0
        for piece in layout:
            if piece.repeat != 1:
                raise UnsupportedLayer(f"layer '{path}' cannot follow a Flatten")
            for sid in piece.segments:
                size = self.sources[sid].size
                self.contributions.append(Contribution(path, sid, start, size))
                start += size

    def require_unpruned(self, record: LayerRecord, layout: Layout, what: str) -> None:
        if record.excluded:  # excluding the layer keeps its input whole instead
            self.pin(layout, f"input of excluded layer '{record.path}'")
        else:
            self.unpruned_checks.append(UnprunedCheck(record, layout, what))

    def producers_of(self, layout: Layout) -> list[str]:
        roots = {self.find(s) for s in sources_of(layout)}
        return [
            src.owner
            for sid, src in enumerate(self.sources)
            if src.owner is not None and self.find(sid) in roots
        ]


def sources_of(layout: Layout) -> Iterator[int]:
    for piece in layout:
        yield from piece.segments


def concat_layouts(layouts: Sequence[Layout]) -> Layout:
    """Channel-axis concatenation: adjacent un-flattened runs merge into one piece."""
    pieces: list[Piece] = []
    for layout in layouts:
        for piece in layout:
            if pieces and pieces[-1].repeat == 1 and piece.repeat == 1:
                pieces[-1] = Piece(pieces[-1].segments + piece.segments)
            else:
                pieces.append(piece)
    return tuple(pieces)


def flatten_layout(layout: Layout, positions: int, channel_major: bool = False) -> Layout:
    if any(p.repeat != 1 for p in layout) or positions == 1:
        return layout
    segments = tuple(s for p in layout for s in p.segments)
    return (Piece(segments, positions, channel_major),)


def channel_axis(channels_first: bool, rank: int) -> int:
    """The (positive) channel axis of a tensor of this rank, batch axis included."""
    return 1 if channels_first and rank >= 3 else rank - 1


def channel_count(channels_first: bool, shape: Shape) -> int:
    return shape[channel_axis(channels_first, len(shape))] or 0


def model_data_format(config: Any) -> str:
    """channels_first when the model's layers say so; mixing both is an error. Flatten's
    data_format means something else (the order to flatten in) and does not count."""
    formats: set[str] = set()

    def scan(value: Any) -> None:
        if isinstance(value, dict):
            inner = value.get("config")
            fmt = inner.get("data_format") if isinstance(inner, dict) else None
            if value.get("class_name") != "Flatten" and fmt in ("channels_first", "channels_last"):
                formats.add(fmt)
            for item in value.values():
                scan(item)
        elif isinstance(value, list):
            for item in value:
                scan(item)

    scan(config.get("layers", []))
    if len(formats) > 1:
        raise UnsupportedLayer(
            "the model mixes channels_first and channels_last layers; only one data format "
            "per model is supported"
        )
    return formats.pop() if formats else "channels_last"


# --- the walk ---------------------------------------------------------------------------
def as_functional(model: keras.Model) -> keras.Model:
    """Return a functional model: Sequential models are converted, subclassed ones refused."""
    import keras

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


def iter_keras_tensors(value: Any) -> Iterator[dict[str, Any]]:
    """The serialized keras tensors inside a node's args/kwargs, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            yield value["config"]
        else:
            for item in value.values():
                yield from iter_keras_tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_keras_tensors(item)


def _tensor_refs(refs: Any) -> list[tuple[str, int, int]]:
    """`input_layers`/`output_layers` are `[name, node, tensor]` or a list of those."""
    if refs and isinstance(refs[0], str):
        return [(refs[0], int(refs[1]), int(refs[2]))]
    return [(r[0], int(r[1]), int(r[2])) for r in refs]


def _shape(value: Any) -> Shape:
    return tuple(None if d is None else int(d) for d in value)


class _Walker:
    def __init__(self, graph: ChannelGraph):
        from pruner.layers import kind_for  # layers.py builds on this module's types

        self.graph = graph
        self.kind_for = kind_for

    def record(self, path: str, class_name: str, op: Any, entry: dict[str, Any]) -> LayerRecord:
        rec = self.graph.records.get(path)
        if rec is None:
            module = str(entry.get("module") or "")
            kind = self.kind_for(class_name, module, path)
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
        ops = {op.name: op for op in model.operations}
        inputs = _tensor_refs(config["input_layers"])
        outputs = _tensor_refs(config["output_layers"])
        shapes: dict[tuple[str, int, int], Shape] = {}
        for entry in config["layers"]:
            for node in entry["inbound_nodes"]:
                for t in iter_keras_tensors(node):
                    shapes[tuple(t["keras_history"])] = _shape(t["shape"])  # type: ignore[index]
        for ref, tensor in zip(outputs, model.outputs, strict=True):
            shapes.setdefault(ref, _shape(tensor.shape))
        if bound is not None and len(bound) != len(inputs):
            raise InvalidModel(f"nested model '{prefix[:-1]}' is called with {len(bound)} inputs")

        tensors: dict[tuple[str, int, int], Layout] = {}
        input_names = [ref[0] for ref in inputs]
        # (entry, node index) in config order; a shared layer's later call may read a tensor
        # made further down the list, so calls whose inputs are not ready wait their turn
        pending: list[tuple[dict[str, Any], int]] = []
        for entry in config["layers"]:
            if entry["class_name"] == "InputLayer":
                layout = self.input_layer(prefix, ops, entry, input_names, bound)
                tensors[(entry["name"], 0, 0)] = layout
            else:
                pending.extend((entry, i) for i in range(len(entry["inbound_nodes"])))
        while pending:
            waiting: list[tuple[dict[str, Any], int]] = []
            for entry, node_index in pending:
                node = entry["inbound_nodes"][node_index]
                refs = [tuple(t["keras_history"]) for t in iter_keras_tensors(node)]
                if all(ref in tensors for ref in refs):
                    outs = self.call(prefix, ops, entry, node_index, refs, tensors, shapes)
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
        prefix: str,
        ops: dict[str, Any],
        entry: dict[str, Any],
        input_names: list[str],
        bound: list[Layout] | None,
    ) -> Layout:
        """A top-level input is a fixed (pinned) source; a nested model's input takes the
        layout its caller passes in."""
        name = entry["name"]
        rec = self.record(prefix + name, "InputLayer", ops.get(name), entry)
        shape = _shape(entry["config"]["batch_shape"])
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
        self,
        prefix: str,
        ops: dict[str, Any],
        entry: dict[str, Any],
        node_index: int,
        refs: list[Any],
        tensors: dict[tuple[str, int, int], Layout],
        shapes: dict[tuple[str, int, int], Shape],
    ) -> list[Layout]:
        name, class_name = entry["name"], entry["class_name"]
        path = prefix + name
        in_layouts = [tensors[ref] for ref in refs]
        in_shapes = [shapes[ref] for ref in refs]
        out_shapes = []
        while (name, node_index, len(out_shapes)) in shapes:
            out_shapes.append(shapes[(name, node_index, len(out_shapes))])
        if class_name in NESTED_MODEL_CLASSES:
            return self.walk_nested(path, ops.get(name), entry, in_layouts, in_shapes)
        rec = self.record(path, class_name, ops.get(name), entry)
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
            return self.walk_sequential(path, model, config, in_layouts, in_shapes)
        if "input_layers" not in config or "layers" not in config:
            raise UnsupportedLayer(
                f"nested model '{path}' (type {entry['class_name']}) is not functional"
            )
        return self.walk_functional(model, config, path + "/", in_layouts)

    def walk_sequential(
        self,
        path: str,
        model: Any,
        config: dict[str, Any],
        in_layouts: list[Layout],
        in_shapes: list[Shape],
    ) -> list[Layout]:
        by_name = {layer.name: layer for layer in model.layers}
        layout, shape = in_layouts[0], in_shapes[0]
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
                out_shape = _shape(op.compute_output_shape(shape))
            else:
                out_shape = _shape(op.compute_output_shape(shape))
                rec = self.record(inner_path, class_name, op, entry)
                outs = self.run(rec, Call([layout], [shape], out_shapes=[out_shape]))
            layout, shape = outs[0], out_shape
        return [layout]
