"""Reading a functional model's serialized config: tensor references, shapes, data format.

Pure functions over `model.get_config()` (plain dicts and lists): no Keras objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prunejob_contract.errors import UnsupportedLayer

NESTED_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
Shape = tuple[int | None, ...]
TensorRef = tuple[str, int, int]  # (layer name, node index, tensor index)


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


def tensor_refs(refs: Any) -> list[TensorRef]:
    """`input_layers`/`output_layers` are `[name, node, tensor]` or a list of those."""
    if refs and isinstance(refs[0], str):
        return [(refs[0], int(refs[1]), int(refs[2]))]
    return [(r[0], int(r[1]), int(r[2])) for r in refs]


def parse_shape(value: Any) -> Shape:
    return tuple(None if d is None else int(d) for d in value)


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
