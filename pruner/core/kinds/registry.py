"""The registry of layer kinds: which kind handles each Keras class name.

Supporting a new layer type means writing its `LayerKind` in the family module it
belongs to (with its `class_names`) and listing the class in `KINDS`.
"""

from __future__ import annotations

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.graph import LayerKind
from pruner.core.kinds.merges import ConcatenateKind, CustomScaleKind, ElementwiseMerge
from pruner.core.kinds.normalization import (
    BatchNorm,
    GroupNorm,
    LayerNorm,
    LayerScaleKind,
    NormalizationKind,
    PReLUKind,
)
from pruner.core.kinds.opaque import EmbeddingKind, LambdaKind
from pruner.core.kinds.passthrough import (
    GlobalPooling,
    InputKind,
    PassThrough,
    Pooling,
    RescalingKind,
    Spatial,
)
from pruner.core.kinds.producers import Depthwise, Producer, SeparableConv, TransposedConv
from pruner.core.kinds.reshapes import FlattenKind, PermuteKind, ReshapeKind
from pruner.core.kinds.tfops import TFOpLambdaKind
from pruner.core.kinds.wrappers import TimeDistributedKind

KINDS: tuple[type[LayerKind], ...] = (
    Producer,
    TransposedConv,
    SeparableConv,
    Depthwise,
    PassThrough,
    Pooling,
    GlobalPooling,
    Spatial,
    InputKind,
    BatchNorm,
    LayerNorm,
    GroupNorm,
    PReLUKind,
    NormalizationKind,
    LayerScaleKind,
    RescalingKind,
    ElementwiseMerge,
    CustomScaleKind,
    ConcatenateKind,
    FlattenKind,
    ReshapeKind,
    PermuteKind,
    LambdaKind,
    EmbeddingKind,
    TimeDistributedKind,
    TFOpLambdaKind,
)


def _by_class_name(kinds: tuple[type[LayerKind], ...]) -> dict[str, LayerKind]:
    registry: dict[str, LayerKind] = {}
    for cls in kinds:
        instance = cls()
        for name in cls.class_names:
            if name in registry:
                raise RuntimeError(f"layer kind for {name} registered twice")
            registry[name] = instance
    return registry


_REGISTRY = _by_class_name(KINDS)
KERAS_PACKAGES = ("keras", "tf_keras")  # Keras 3 and tf.keras 2.x modules


def is_keras_module(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in KERAS_PACKAGES)


def lookup_kind(class_name: str, module: str) -> LayerKind | None:
    """The registered kind of a class, None for classes the pruner does not know (custom
    classes never match a built-in kind, even when their class name does). `module` is
    "" where the config does not say (Keras 2 HDF5 files): the class name decides."""
    kind = _REGISTRY.get(class_name)
    if kind is not None and module:
        allowed = module in kind.modules if kind.modules else is_keras_module(module)
        if not allowed:
            return None
    return kind


def kind_for(class_name: str, module: str, path: str) -> LayerKind:
    """The kind of a layer, or UnsupportedLayer naming it and how to proceed."""
    kind = lookup_kind(class_name, module)
    if kind is None:
        where = f" from {module}" if module and not is_keras_module(module) else ""
        raise UnsupportedLayer(
            f"layer '{path}' has type {class_name}{where}, which the pruner does not know how "
            f"channels flow through; exclude it with -el {path.rsplit('/', 1)[-1]} to keep its "
            "inputs and outputs whole"
        )
    return kind


def supported_types() -> list[str]:
    return sorted(_REGISTRY)
