"""All 15 keras.applications families, pruned from their config and weights.

Method: the smallest member of each family (weights=None, the smallest input it
accepts), random weights, a quarter of every width's channels dead along the whole
path (producer filter and bias, depthwise channel, BatchNorm/LayerNorm gamma and beta,
LayerScale gamma), the classifier kept. Pruning with a tiny threshold must remove
exactly the dead filters (equalization groups then agree by construction) and the
pruned model, built from the pruned config and weights, must compute the original's
outputs. ConvNeXt normalizes over channels (LayerNormalization), so removing channels
changes its statistics: there only the output shape and a real reduction are checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from prunejob_contract.settings import PruneSettings
from pruner.core.build import build_model
from pruner.core.counting import count_flops, count_params
from pruner.core.masking import mask_removed_filters
from pruner.core.plan import prepare
from pruner.core.surgery import apply_plan
from pruner.core.walk import build_graph
from tests.pruner.core.helpers import live, randomize, run, walk, zero_quarter

TINY = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1)
A = keras.applications
FAMILIES: dict[str, tuple[Callable[..., keras.Model], int]] = {
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32),
    "DenseNet121": (A.DenseNet121, 32),
    "EfficientNetB0": (A.EfficientNetB0, 32),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 32),
    "InceptionResNetV2": (A.InceptionResNetV2, 75),
    "InceptionV3": (A.InceptionV3, 75),
    "MobileNet": (A.MobileNet, 32),
    "MobileNetV2": (A.MobileNetV2, 32),
    "MobileNetV3Small": (A.MobileNetV3Small, 32),
    "MobileNetV3Large": (A.MobileNetV3Large, 32),
    "NASNetMobile": (A.NASNetMobile, 32),
    "ResNet50": (A.ResNet50, 32),
    "ResNet50V2": (A.ResNet50V2, 32),
    "VGG16": (A.VGG16, 32),
    "Xception": (A.Xception, 71),
}
INEXACT = {"ConvNeXtTiny"}  # LayerNormalization over channels


def family_model(name: str) -> keras.Model:
    build, size = FAMILIES[name]
    kwargs: dict[str, Any] = {"weights": None, "input_shape": (size, size, 3), "classes": 10}
    if name != "NASNetMobile":  # NASNet has no classifier_activation argument
        kwargs["classifier_activation"] = None
    return build(**kwargs)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> dict[str, Any]:
    model = family_model(request.param)
    randomize(model, seed=3)
    owners = [p for p, layer in walk(model) if type(layer).__name__ in ("Conv2D", "Dense")]
    alive = zero_quarter(model, keep={owners[-1]})  # the classifier keeps its classes
    config, weights = live(model)
    prepared = prepare(config, weights, TINY)
    plan = prepared.plan()
    new_config, new_weights = apply_plan(config, weights, plan)
    return {
        "name": request.param,
        "model": model,
        "alive": alive,
        "config": config,
        "weights": weights,
        "prepared": prepared,
        "plan": plan,
        "new": (new_config, new_weights),
        "pruned": build_model(new_config, new_weights),
    }


def inputs_for(model: keras.Model) -> np.ndarray:
    shape = (2, *model.inputs[0].shape[1:])
    return np.random.default_rng(1).normal(0.0, 1.0, shape).astype("float32")


@pytest.mark.timeout(600)
def test_removes_exactly_the_dead_filters(family: dict[str, Any]) -> None:
    kept = {lp.name: lp.kept for lp in family["plan"].layers}
    expected = family["alive"]
    pinned = family["prepared"].graph.pinned_roots()
    graph = family["prepared"].graph
    for name, alive in expected.items():
        layout = graph.records[name].calls[0].out_layouts[0]
        roots = {graph.find(s) for p in layout for s in p.segments}
        if roots & set(pinned):  # kept whole on purpose (a model output, NASNet's merges)
            assert kept[name] == list(range(len(kept[name]))), name
        else:
            assert kept[name] == alive, name
    plan = family["plan"]  # a real reduction (less than a quarter where groups are kept)
    assert plan.filters()["after"] < 0.95 * plan.filters()["before"]


@pytest.mark.timeout(600)
def test_outputs_unchanged(family: dict[str, Any]) -> None:
    model, pruned = family["model"], family["pruned"]
    inputs = inputs_for(model)
    want, got = run(model, inputs), run(pruned, inputs)
    assert got.shape == want.shape
    reference = float(np.max(np.abs(want)))
    assert reference > 0
    diff = float(np.max(np.abs(want - got)))
    if family["name"] in INEXACT:
        assert pruned.count_params() < 0.8 * model.count_params()
    else:
        assert diff <= 1e-4 * max(1.0, reference), diff


@pytest.mark.timeout(600)
def test_inferred_shapes_are_the_stored_ones(family: dict[str, Any]) -> None:
    """Keras 3 stores the shape of every tensor a layer reads: inference must agree."""
    graph = build_graph(family["config"], family["weights"], strict_shapes=True)
    outputs = [rec.calls[-1].out_shapes[0] for rec in graph.records.values() if rec.calls]
    assert len(outputs) > 20
    pruned_config, pruned_weights = family["new"]
    build_graph(pruned_config, pruned_weights, strict_shapes=True)  # rewritten ones too


@pytest.mark.timeout(600)
def test_totals_match_the_pruned_model(family: dict[str, Any]) -> None:
    model, pruned, prepared = family["model"], family["pruned"], family["prepared"]
    new_config, new_weights = family["new"]
    totals = prepared.totals(family["plan"])
    assert totals["params"] == {
        "before": model.count_params(),
        "after": pruned.count_params(),
    }
    assert totals["params"]["after"] == count_params(new_weights)
    assert totals["flops"] == {
        "before": count_flops(family["config"], family["weights"]),
        "after": count_flops(new_config, new_weights),
    }
    assert totals["flops"]["after"] < totals["flops"]["before"]


@pytest.mark.timeout(600)
def test_masked_original_matches_pruned_at_a_high_threshold(family: dict[str, Any]) -> None:
    """The --verify path: prune filters that are NOT zero, compare with the masked model
    (on the architectures with depthwise ties and squeeze-and-excite; the others add
    only time)."""
    if family["name"] not in ("MobileNetV2", "EfficientNetB0", "ResNet50"):
        pytest.skip("covered by the other architectures")
    config, weights = family["config"], family["weights"]
    plan = family["prepared"].plan(threshold=0.7)
    assert sum(lp.after for lp in plan.layers) < sum(lp.before for lp in plan.layers)
    small = build_model(*apply_plan(config, weights, plan))
    masked = build_model(config, mask_removed_filters(config, weights, plan))
    inputs = inputs_for(family["model"])
    want, got = run(masked, inputs), run(small, inputs)
    assert float(np.max(np.abs(want - got))) <= 1e-4 * max(1.0, float(np.max(np.abs(want))))
