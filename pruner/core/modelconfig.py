"""Reading a model's config as its file stores it, Keras 3 or Keras 2: layers, calls, shapes.

Pure functions over plain JSON values (`config.json` of a `.keras` file, the
`model_config` attribute of an HDF5 file, or `{"class_name", "config"}` of a live
model): no Keras objects. Both dialects parse into the same `ModelSpec`:

- Keras 3: a call is `{"args": [...], "kwargs": {...}}` whose tensors are
  `{"class_name": "__keras_tensor__", "config": {"shape", "keras_history"}}`, so the
  shapes of consumed tensors are stored; inputs say `batch_shape`.
- Keras 2 (tf_keras 2.x, and TAO's standalone Keras 2.2.4): a call is a list of
  `[layer, node, tensor, {kwargs}]` entries (tf_keras may also put `[layer, node,
  tensor]` references inside those kwargs), no shapes anywhere but the inputs'
  `batch_input_shape` (on an InputLayer or a Sequential's first layer).

The parsed values keep references to the dicts they came from, so surgery can edit a
copy of the config in place and keep everything else (key order included) as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prunejob_contract.errors import InvalidModel, UnsupportedLayer

NESTED_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
Shape = tuple[int | None, ...]
TensorRef = tuple[str, int, int]  # (layer name, node index, tensor index)
Dialect = Literal["keras3", "keras2"]
INPUT_SHAPE_KEYS = ("batch_shape", "batch_input_shape")  # Keras 3, Keras 2


@dataclass
class NodeSpec:
    """One call of a layer: the tensors it reads, in order."""

    refs: list[TensorRef]
    # Keras 3: the serialized tensors (their "shape" is rewritten by surgery), same
    # order as `refs`; None for Keras 2 calls, which store no shapes
    tensors: list[dict[str, Any]] | None
    # constant arguments: Keras 3 positional args that hold no tensor (raw keras.ops
    # calls); Keras 2 non-tensor kwargs and constant entries (tf_keras TFOpLambda)
    constants: list[Any]
    raw: Any


@dataclass
class LayerEntry:
    """One layer of a model's config."""

    name: str
    class_name: str
    module: str
    config: dict[str, Any]  # the layer's own config (entry["config"])
    entry: dict[str, Any]  # the whole entry (build_config lives here)
    nodes: list[NodeSpec] = field(default_factory=list)


@dataclass
class ModelSpec:
    """A functional or Sequential model's layers as its config lists them."""

    name: str
    class_name: str
    sequential: bool
    config: dict[str, Any]  # the model's own config dict
    layers: list[LayerEntry]
    inputs: list[TensorRef] = field(default_factory=list)  # functional only
    outputs: list[TensorRef] = field(default_factory=list)  # functional only
    stored_shapes: dict[TensorRef, Shape] = field(default_factory=dict)  # Keras 3 only


def iter_keras_tensors(value: Any) -> Iterator[dict[str, Any]]:
    """The serialized Keras 3 tensors inside a node's args/kwargs, in order."""
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


def _is_ref(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    )


CONSTANT_ENTRY = "_CONSTANT_VALUE"  # tf_keras: a constant positional argument of a raw op


def _keras2_entries(value: Any, where: str) -> Iterator[list[Any]]:
    """The `[layer, node, tensor, {kwargs}]` entries of a call, in order: a call is a list
    of them, or of lists of them (a raw op called with a list, e.g. tf.concat)."""
    if not isinstance(value, list | tuple):
        raise InvalidModel(f"layer '{where}' has a call the config does not describe as a list")
    for item in value:
        if isinstance(item, list | tuple) and item and isinstance(item[0], str):
            if len(item) < 3:
                raise InvalidModel(f"layer '{where}' has a call entry without node and tensor")
            yield list(item)
        elif isinstance(item, list | tuple):
            yield from _keras2_entries(item, where)
        else:
            raise InvalidModel(f"layer '{where}' has a call entry that names no layer: {item!r}")


def _keras2_node(node: Any, where: str) -> tuple[list[TensorRef], list[Any]]:
    """The tensors a Keras 2 call reads, and its constant arguments. tf_keras also puts
    `[layer, node, tensor]` references inside the kwargs (TFOpLambda calls, e.g. `{"y":
    [layer, node, tensor]}`); those follow the entry's own tensor."""
    refs: list[TensorRef] = []
    constants: list[Any] = []
    if isinstance(node, list | tuple) and node and isinstance(node[0], str):
        node = [node]  # tf_keras writes a one-tensor TFOpLambda call as the bare entry
    for item in _keras2_entries(node, where):
        if item[0] == CONSTANT_ENTRY:
            constants.append(item[2])
        else:
            refs.append((item[0], int(item[1]), int(item[2])))
        kwargs = item[3] if len(item) > 3 else None
        if isinstance(kwargs, dict):
            for key, v in kwargs.items():
                if _is_ref(v):
                    refs.append((v[0], int(v[1]), int(v[2])))
                elif key != "name":
                    constants.append(v)
    return refs, constants


def parse_node(raw: Any, where: str) -> NodeSpec:
    if isinstance(raw, dict):  # Keras 3
        tensors = list(iter_keras_tensors(raw))
        refs = []
        for t in tensors:
            history = t.get("keras_history")
            if not _is_ref(history):
                raise InvalidModel(f"layer '{where}' reads a tensor with no producing layer")
            refs.append((history[0], int(history[1]), int(history[2])))
        args = raw.get("args")
        constants = (
            [a for a in args if not list(iter_keras_tensors(a))] if isinstance(args, list) else []
        )
        return NodeSpec(refs, tensors, constants, raw)
    refs, constants = _keras2_node(raw, where)
    return NodeSpec(refs, None, constants, raw)


def layer_name(entry: dict[str, Any]) -> str:
    name = entry.get("name")
    if name is None and isinstance(entry.get("config"), dict):
        name = entry["config"].get("name")
    if not isinstance(name, str):
        raise InvalidModel(f"a {entry.get('class_name', 'layer')} in the model config has no name")
    return name


def _entry(raw: Any, where: str) -> LayerEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("class_name"), str):
        raise InvalidModel(f"model '{where}' lists a layer that is not a config object")
    config = raw.get("config")
    if not isinstance(config, dict):
        if raw["class_name"] == "Sequential" and isinstance(config, list):
            config = {"layers": config}  # Keras <= 2.1 stored a Sequential as its layer list
        else:
            raise InvalidModel(f"layer {raw['class_name']} in model '{where}' has no config")
    name = layer_name(raw)
    module = raw.get("module")
    entry = LayerEntry(
        name, raw["class_name"], module if isinstance(module, str) else "", config, raw
    )
    path = f"{where}/{name}" if where else name
    nodes = raw.get("inbound_nodes") or []
    entry.nodes = [parse_node(node, path) for node in nodes]
    return entry


def parse_model(model: Any, where: str = "") -> ModelSpec:
    """A model config (`{"class_name", "config"}`) -> its layers and calls. Raises
    InvalidModel for anything that is not a functional or Sequential model."""
    if not isinstance(model, dict) or not isinstance(model.get("class_name"), str):
        raise InvalidModel("the model config is not a Keras model config (no class_name)")
    class_name = model["class_name"]
    config = model.get("config")
    if class_name == "Sequential" and isinstance(config, list):
        config = {"layers": config}  # Keras <= 2.1: the layer list itself (same dicts)
    shown = where or (config.get("name") if isinstance(config, dict) else None) or class_name
    if (
        class_name not in NESTED_MODEL_CLASSES
        or not isinstance(config, dict)
        or not isinstance(config.get("layers"), list)
        or (class_name != "Sequential" and "input_layers" not in config)
    ):
        raise InvalidModel(
            f"model '{shown}' (class {class_name}) is not a functional or Sequential Keras "
            "model (subclassed models cannot be analysed)"
        )
    layers = [_entry(raw, where) for raw in config["layers"]]
    spec = ModelSpec(
        name=str(config.get("name") or shown),
        class_name=class_name,
        sequential=class_name == "Sequential",
        config=config,
        layers=layers,
    )
    if not spec.sequential:
        spec.inputs = tensor_refs(config["input_layers"])
        spec.outputs = tensor_refs(config["output_layers"])
    for entry in layers:
        for node in entry.nodes:
            for ref, t in zip(node.refs, node.tensors or (), strict=False):
                if isinstance(t.get("shape"), list | tuple):
                    spec.stored_shapes[ref] = parse_shape(t["shape"])
    return spec


def input_shape_of(config: dict[str, Any]) -> Shape | None:
    """An InputLayer's (or a Keras 2 first layer's) declared batch shape, if any."""
    for key in INPUT_SHAPE_KEYS:
        value = config.get(key)
        if isinstance(value, list | tuple):
            return parse_shape(value)
    return None


def dialect(model: dict[str, Any]) -> Dialect:
    """Keras 3 or Keras 2, from what the config's calls and inputs look like."""
    found: list[Dialect] = []

    def scan(value: Any) -> None:
        if found or not isinstance(value, dict):
            return
        config = value.get("config")
        layers = config.get("layers") if isinstance(config, dict) else config
        if not isinstance(layers, list):
            return
        for raw in layers:
            if not isinstance(raw, dict):
                continue
            nodes = raw.get("inbound_nodes") or []
            if nodes:
                found.append("keras3" if isinstance(nodes[0], dict) else "keras2")
                return
            inner = raw.get("config")
            if isinstance(inner, dict):
                if "batch_input_shape" in inner:
                    found.append("keras2")
                    return
                if "batch_shape" in inner:
                    found.append("keras3")
                    return
            if raw.get("class_name") in NESTED_MODEL_CLASSES:
                scan(raw)

    scan(model)
    return found[0] if found else "keras3"


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
