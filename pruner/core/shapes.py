"""Output-shape arithmetic for layer kinds: convolutions, pooling, padding, broadcasting.

Keras 2 configs store no tensor shapes, so every layer kind computes its output shape
from its config and its input shapes with these functions (the formulas Keras itself
uses). `None` is an unknown size and stays unknown. A shape that cannot be worked out
raises `ShapeUnknown`; the walker then uses a shape the file stores (Keras 3) or fails
with a one-line error naming the layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pruner.core.modelconfig import Shape


class ShapeUnknown(Exception):
    """This layer's output shape cannot be worked out from its config."""


def as_tuple(value: Any, rank: int, name: str = "value") -> tuple[int, ...]:
    """An int or a list of `rank` ints (Keras stores both) -> a tuple of `rank` ints."""
    if isinstance(value, int):
        return (value,) * rank
    if isinstance(value, list | tuple) and len(value) == 1 and rank != 1:
        return (int(value[0]),) * rank
    if isinstance(value, list | tuple) and len(value) == rank:
        return tuple(int(v) for v in value)
    raise ShapeUnknown(f"{name} {value!r} does not fit {rank} spatial axes")


def conv_length(
    length: int | None, kernel: int, padding: str, stride: int, dilation: int = 1
) -> int | None:
    if length is None:
        return None
    dilated = (kernel - 1) * dilation + 1
    if padding in ("same", "causal"):
        return (length + stride - 1) // stride
    if padding == "valid":
        return max(0, (length - dilated + stride) // stride)
    if padding == "full":
        return (length + dilated - 1 + stride - 1) // stride
    raise ShapeUnknown(f"padding {padding!r} is not known")


def deconv_length(
    length: int | None,
    kernel: int,
    padding: str,
    output_padding: int | None,
    stride: int,
    dilation: int = 1,
) -> int | None:
    if length is None:
        return None
    kernel = (kernel - 1) * dilation + 1
    if output_padding is None:
        if padding == "valid":
            return length * stride + max(kernel - stride, 0)
        if padding == "full":
            return length * stride - (stride + kernel - 2)
        if padding == "same":
            return length * stride
        raise ShapeUnknown(f"padding {padding!r} is not known")
    pad = {"same": kernel // 2, "valid": 0, "full": kernel - 1}.get(padding)
    if pad is None:
        raise ShapeUnknown(f"padding {padding!r} is not known")
    return (length - 1) * stride + kernel - 2 * pad + output_padding


def split(shape: Shape, channels_first: bool) -> tuple[list[int | None], int | None]:
    """(spatial sizes, channels) of a (batch, ..., channels) tensor."""
    if len(shape) < 2:
        raise ShapeUnknown(f"a tensor of shape {shape} has no channel axis")
    if channels_first:
        return list(shape[2:]), shape[1]
    return list(shape[1:-1]), shape[-1]


def join(batch: int | None, spatial: Sequence[int | None], channels: int | None,
         channels_first: bool) -> Shape:  # fmt: skip
    if channels_first:
        return (batch, channels, *spatial)
    return (batch, *spatial, channels)


def broadcast(shapes: Sequence[Shape]) -> Shape:
    """NumPy broadcasting of known and unknown (None) sizes."""
    rank = max(len(s) for s in shapes)
    out: list[int | None] = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeUnknown(f"shapes {list(shapes)} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def product(dims: Sequence[int | None]) -> int | None:
    return None if any(d is None for d in dims) else math.prod(dims)  # type: ignore[arg-type]


def reshape(shape: Shape, target: Sequence[int], with_batch: bool = False) -> Shape:
    """`target` is the shape without the batch axis (layer) or with it (`with_batch`, as
    keras.ops.reshape's `newshape`); one -1 takes the rest."""
    target = [int(t) for t in target]
    if with_batch:
        batch_dims: list[int | None] = []
        total = product(shape)
    else:
        batch_dims = [shape[0]]
        total = product(shape[1:])
    if target.count(-1) > 1:
        raise ShapeUnknown(f"target shape {target} has more than one -1")
    if -1 in target:
        known = math.prod(t for t in target if t != -1)
        fill = None if total is None or known == 0 else total // known
        dims: list[int | None] = [fill if t == -1 else t for t in target]
    else:
        dims = list(target)
    return (*batch_dims, *dims)


def nested_pairs(value: Any, rank: int, name: str) -> list[tuple[int, int]]:
    """Padding/cropping specs: int, (a, b) symmetric per axis, or ((lo, hi), ...)."""
    if isinstance(value, int):
        return [(value, value)] * rank
    if isinstance(value, list | tuple):
        if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
            return [(int(value[0]), int(value[1]))]
        if len(value) == rank:
            pairs = []
            for v in value:
                if isinstance(v, int):
                    pairs.append((v, v))
                elif isinstance(v, list | tuple) and len(v) == 2:
                    pairs.append((int(v[0]), int(v[1])))
                else:
                    raise ShapeUnknown(f"{name} {value!r} is not understood")
            return pairs
    raise ShapeUnknown(f"{name} {value!r} is not understood")
