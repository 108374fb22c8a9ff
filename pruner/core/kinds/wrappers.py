"""TimeDistributed: the wrapped layer applied to every step of axis 1 (TAO's detection heads).

The wrapper's channels are the wrapped layer's: a call is handed to the wrapped
layer's kind with the time axis taken out of every shape, and the weights are the
wrapped layer's own. The walker makes one `TimeDistributedKind` per wrapper record
(`wrapping`), so the class-level facts (owns filters, masked weights, ...) are the
wrapped kind's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pruner.core.graph import Call, ChannelGraph, LayerKind, LayerRecord, Layout, Roles
from pruner.core.modelconfig import Shape
from pruner.core.shapes import ShapeUnknown


def drop_time(shape: Shape) -> Shape:
    if len(shape) < 3:
        raise ShapeUnknown(f"TimeDistributed needs (batch, time, ...) inputs, got {shape}")
    return (shape[0], *shape[2:])


def add_time(shape: Shape, steps: int | None) -> Shape:
    return (shape[0], steps, *shape[1:])


class TimeDistributedKind(LayerKind):
    class_names = ("TimeDistributed",)

    def __init__(self, wrapped: LayerKind | None = None):
        self.wrapped = wrapped
        if wrapped is not None:  # the facts the plan, masking and counting read
            self.owns_filters = wrapped.owns_filters  # type: ignore[misc]
            self.mask_role = wrapped.mask_role  # type: ignore[misc]
            self.masked_weights = wrapped.masked_weights  # type: ignore[misc]
            self.mac_weights = wrapped.mac_weights  # type: ignore[misc]

    @classmethod
    def wrapping(cls, wrapped: LayerKind) -> TimeDistributedKind:
        return cls(wrapped)

    def _inner(self, rec: LayerRecord) -> tuple[LayerKind, LayerRecord]:
        if self.wrapped is None or rec.inner is None:  # the walker always binds both
            raise RuntimeError(f"TimeDistributed '{rec.path}' has no wrapped layer")
        return self.wrapped, rec.inner

    @staticmethod
    def inner_call(call: Call) -> Call:
        return Call(
            call.in_layouts,
            [drop_time(s) for s in call.in_shapes],
            out_shapes=[drop_time(s) for s in call.out_shapes],
            constants=call.constants,
        )

    def declared_weights(self, rec: LayerRecord) -> list[str]:
        kind, inner = self._inner(rec)
        return kind.declared_weights(inner)

    def check(self, rec: LayerRecord) -> None:
        kind, inner = self._inner(rec)
        kind.check(inner)

    def output_shapes(self, rec: LayerRecord, call: Call) -> list[Shape]:
        kind, inner = self._inner(rec)
        if not call.in_shapes:
            raise ShapeUnknown("the layer has no tensor input")
        steps = call.in_shapes[0][1] if len(call.in_shapes[0]) > 1 else None
        inner_call = Call(call.in_layouts, [drop_time(s) for s in call.in_shapes])
        return [add_time(s, steps) for s in kind.output_shapes(inner, inner_call)]

    def flow(self, g: ChannelGraph, rec: LayerRecord, call: Call) -> list[Layout]:
        kind, inner = self._inner(rec)
        inner_call = self.inner_call(call)
        inner.calls.append(inner_call)
        inner_call.out_layouts = kind.flow(g, inner, inner_call)
        return inner_call.out_layouts

    def stat(self, rec: LayerRecord) -> np.ndarray | None:
        kind, inner = self._inner(rec)
        return kind.stat(inner)

    def roles(self, rec: LayerRecord) -> Roles:
        kind, inner = self._inner(rec)
        return kind.roles(inner)

    def channel_weights(self, rec: LayerRecord) -> bool:
        kind, inner = self._inner(rec)
        return kind.channel_weights(inner)

    def index_map(
        self, rec: LayerRecord, shapes: dict[str, Shape], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> dict[str, dict[int, np.ndarray]]:
        kind, inner = self._inner(rec)
        return kind.index_map(inner, shapes, in_idx, out_idx)

    def rewrite_config(
        self, rec: LayerRecord, config: dict[str, Any], in_idx: np.ndarray, out_idx: np.ndarray
    ) -> None:
        kind, inner = self._inner(rec)
        kind.rewrite_config(inner, inner.config, in_idx, out_idx)

    def positions(self, rec: LayerRecord, call: Call) -> int:
        kind, inner = self._inner(rec)
        index = next((i for i, c in enumerate(rec.calls) if c is call), 0)
        inner_call = inner.calls[index] if index < len(inner.calls) else self.inner_call(call)
        steps = call.in_shapes[0][1] if call.in_shapes and len(call.in_shapes[0]) > 1 else None
        return kind.positions(inner, inner_call) * (steps or 1)
