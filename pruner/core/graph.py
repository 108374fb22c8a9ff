"""The channel-dependency graph of a Keras model's config, and the layer-kind interface.

Every tensor's channel axis is described by a `Layout`: the channel spaces
("sources") it is made of, in order. A source is the set of output channels of one
producing layer (Conv/Dense...) or a fixed set that is never pruned (a model input,
the output of an opaque layer). Layer kinds (`LayerKind`, implemented per family in
`pruner.core.kinds`) say how layouts flow through each layer, what its output shape
is and which weights it has; element-wise merges tie sources together with a
union-find, so a group of tied sources ends up keeping the same channel indices.
`pruner.core.walk` builds the graph from a model's config and weights.

Layer paths are the layer name for top-level layers and `outer/inner` inside nested
models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.modelconfig import Shape, model_data_format
from pruner.core.shapes import ShapeUnknown


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
    constants: list[Any] = field(default_factory=list)  # non-tensor arguments of the call


@dataclass
class LayerRecord:
    path: str
    class_name: str
    kind: LayerKind
    config: dict[str, Any]  # this layer's config inside the model config tree
    excluded: bool
    entry: dict[str, Any] = field(default_factory=dict)  # the whole entry (build_config)
    module: str = ""
    calls: list[Call] = field(default_factory=list)
    source: int | None = None  # for producers: the source of their output channels
    channels_first: bool = False  # the model's data format
    weight_names: list[str] = field(default_factory=list)  # declared, in Keras order
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # by declared name
    inner: LayerRecord | None = None  # the wrapped layer of a TimeDistributed
    options: dict[str, Any] = field(default_factory=dict)  # graph-wide switches

    def channel_axis(self, rank: int) -> int:
        return channel_axis(self.channels_first, rank)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def weight(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise KeyError(f"layer '{self.path}' has no weight {name!r}")
        return self.weights[name]

    def weight_shapes(self) -> dict[str, Shape]:
        return {name: tuple(w.shape) for name, w in self.weights.items()}


@dataclass
class ShapeSite:
    """A shape stored in the config (a Keras 3 call's tensor, a build_config input shape, a
    nested input's batch shape) whose channel axis follows the tensor with `layout`."""

    container: dict[str, Any]
    key: str
    layout: Layout
    axis: int  # the channel axis within that shape
    index: int | None = None  # container[key] is a list of shapes: this one


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


KeptByRoot = dict[int, np.ndarray]  # union-find root source -> kept channel indices


class ChannelGraph:
    """Sources, their union-find, pins, stat contributions and per-layer records."""

    def __init__(
        self,
        config: dict[str, Any],
        excluded: Iterable[str],
        options: dict[str, Any] | None = None,
    ):
        self.config = config  # the model's own config dict ({"layers": ...})
        self.channels_first = model_data_format(config) == "channels_first"
        self.excluded = frozenset(excluded)
        self.options = dict(options or {})
        self.sources: list[Source] = []
        self._parent: list[int] = []
        self.pins: dict[int, str] = {}
        self.contributions: list[Contribution] = []
        self.records: dict[str, LayerRecord] = {}
        self.unpruned_checks: list[UnprunedCheck] = []
        self.group_checks: list[GroupCheck] = []
        self.outputs: list[Layout] = []
        self.shape_sites: list[ShapeSite] = []

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


# --- the layer-kind interface --------------------------------------------------------------
IN = "in"  # the axis indexes the layer's input channels
OUT = "out"  # the axis indexes the layer's output channels
Roles = dict[str, dict[int, str]]  # weight name -> {axis: IN | OUT}


def spatial_positions(rec: LayerRecord, shape: Shape) -> int:
    """Spatial positions of a tensor: all but the batch and channel axes (unknown = 1)."""
    skip = (0, rec.channel_axis(len(shape)))
    return math.prod(d or 1 for i, d in enumerate(shape) if i not in skip)


class LayerKind:
    """How one family of Keras layers (or raw `keras.ops` calls) handles channels.

    `flow` says how channels flow through a call, `output_shapes` what shape comes out
    (Keras 2 configs store none), `declared_weights` which weights the layer has in
    Keras order (what `layer.get_weights()` returns), `weight_roles`/`roles` which
    weight axes follow the input or the output channels, `stat` the per-filter
    statistic of layers that own filters, and `rewrite_config` how surgery changes
    the config.
    """

    class_names: ClassVar[tuple[str, ...]] = ()  # the Keras classes this kind handles
    # where those classes may come from, when the config says (`module`); () = Keras' own
    # layer modules. A class of the same name from elsewhere is a custom class.
    modules: ClassVar[tuple[str, ...]] = ()
    owns_filters: ClassVar[bool] = False  # listed in the plan with its output filters
    any_weights: ClassVar[bool] = False  # True: keeps whatever weights it has, unsliced
    weight_roles: ClassVar[Roles] = {}
    mask_role: ClassVar[str] = OUT  # masking zeroes removed channels along this role...
    masked_weights: ClassVar[frozenset[str]] = frozenset()  # ...in these weights
    mac_weights: ClassVar[tuple[str, ...]] = ()  # MACs = positions * size of these

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        """The layer's weights, in Keras order, as its config says it has them."""
        return []

    def check(self, rec: LayerRecord) -> None:
        """Static validation once per layer; raise UnsupportedLayer."""

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        raise NotImplementedError

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        """The shapes of the call's outputs, from the config and the input shapes (raise
        ShapeUnknown when they cannot be worked out). Default: the first input's."""
        if not call.in_shapes:
            raise ShapeUnknown("the layer has no tensor input")
        return [call.in_shapes[0]]

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        """Raw per-output-filter L2 norms (producers and depthwise layers only)."""
        return None

    def roles(self, rec: LayerRecord) -> Roles:
        return self.weight_roles

    def channel_weights(self, rec: LayerRecord) -> bool:
        return bool(self.roles(rec))

    def index_map(
        self, rec: LayerRecord, shapes: dict[str, Shape], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> dict[str, dict[int, np.ndarray]]:
        """For each weight, the kept indices along each sliced axis (positive axes)."""
        out: dict[str, dict[int, np.ndarray]] = {}
        for name, axes in self.roles(rec).items():
            if name in shapes:
                ndim = len(shapes[name])
                out[name] = {a % ndim: in_idx if r == IN else out_idx for a, r in axes.items()}
        return out

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        """Rewrite the layer's config in place for the pruned channel counts."""

    def positions(self, rec: LayerRecord, call: Call) -> int:
        return spatial_positions(rec, call.out_shapes[0]) if call.out_shapes else 1
