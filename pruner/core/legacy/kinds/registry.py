"""The registry of layer kinds: which kind handles each Keras class name.

Supporting a new layer type means writing its `LayerKind` in the family module it
belongs to (with its `class_names`) and listing the class in `KINDS`.
"""

from __future__ import annotations

from prunejob_contract.errors import UnsupportedLayer
from pruner.core.legacy.graph import LayerKind
from pruner.core.legacy.kinds.merges import ConcatenateKind, ElementwiseMerge
from pruner.core.legacy.kinds.normalization import (
    BatchNorm,
    GroupNorm,
    LayerNorm,
    LayerScaleKind,
    NormalizationKind,
    PReLUKind,
)
from pruner.core.legacy.kinds.opaque import EmbeddingKind, LambdaKind
from pruner.core.legacy.kinds.passthrough import InputKind, PassThrough, RescalingKind
from pruner.core.legacy.kinds.producers import Depthwise, Producer, SeparableConv, TransposedConv
from pruner.core.legacy.kinds.reshapes import FlattenKind, PermuteKind, ReshapeKind

KINDS: tuple[type[LayerKind], ...] = (
    Producer,
    TransposedConv,
    SeparableConv,
    Depthwise,
    PassThrough,
    InputKind,
    BatchNorm,
    LayerNorm,
    GroupNorm,
    PReLUKind,
    NormalizationKind,
    LayerScaleKind,
    RescalingKind,
    ElementwiseMerge,
    ConcatenateKind,
    FlattenKind,
    ReshapeKind,
    PermuteKind,
    LambdaKind,
    EmbeddingKind,
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


def kind_for(class_name: str, module: str, path: str) -> LayerKind:
    """The kind of a layer, or UnsupportedLayer naming it (custom classes never match a
    built-in kind, even when their class name does)."""
    kind = _REGISTRY.get(class_name)
    if kind is None or (module and not module.startswith("keras")):
        raise UnsupportedLayer(
            f"layer '{path}' has type {class_name}, which the pruner does not know how "
            "channels flow through; it is not supported"
        )
    return kind


def supported_types() -> list[str]:
    return sorted(_REGISTRY)
