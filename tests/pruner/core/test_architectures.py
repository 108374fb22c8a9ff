"""Functional equivalence on keras.applications architectures (weights=None, 32x32).

Method: random weights, the same filter indices zeroed in every filter-owning layer
except the classifier; pruning with a tiny threshold must remove exactly those filters
everywhere (equalization groups then agree by construction) and keep the outputs.
"""

from __future__ import annotations

from typing import Any

import keras
import pytest

from prunejob_contract.settings import PruneSettings
from pruner.core.counting import count_flops, count_params
from pruner.core.masking import mask_removed_filters
from pruner.core.plan import prepare
from pruner.core.surgery import apply_plan
from tests.pruner.builders import (
    max_abs_diff,
    max_abs_output,
    random_inputs,
    randomize_weights,
    zero_in_every_layer,
)

ZEROED = [1, 4, 5, 11]  # filter indices removed in every layer that has them
TINY = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1)

ARCHITECTURES = {
    "ResNet50": keras.applications.ResNet50,
    "MobileNetV2": keras.applications.MobileNetV2,
    "VGG16": keras.applications.VGG16,
    "EfficientNetB0": keras.applications.EfficientNetB0,
    "DenseNet121": keras.applications.DenseNet121,
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def pruned(request: pytest.FixtureRequest) -> dict[str, Any]:
    build = ARCHITECTURES[request.param]
    model = build(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    randomize_weights(model, seed=3)
    expected = zero_in_every_layer(model, ZEROED, keep={"predictions"})
    prepared = prepare(model, TINY)
    plan = prepared.plan()
    return {
        "name": request.param,
        "model": model,
        "expected": expected,
        "prepared": prepared,
        "plan": plan,
        "pruned": apply_plan(model, plan),
    }


@pytest.mark.timeout(300)
def test_removes_exactly_the_zeroed_filters(pruned: dict[str, Any]) -> None:
    kept = {lp.name: lp.kept for lp in pruned["plan"].layers}
    assert kept == pruned["expected"]
    assert kept["predictions"] == list(range(10))  # the output layer is never pruned


@pytest.mark.timeout(300)
def test_outputs_unchanged(pruned: dict[str, Any]) -> None:
    model, small = pruned["model"], pruned["pruned"]
    inputs = random_inputs(model, batch=2)
    reference = max_abs_output(model, inputs)
    assert reference > 0
    assert max_abs_diff(model, small, inputs) <= 1e-4 * max(1.0, reference)


@pytest.mark.timeout(300)
def test_totals_match_the_pruned_model(pruned: dict[str, Any]) -> None:
    model, small, prepared = pruned["model"], pruned["pruned"], pruned["prepared"]
    totals = prepared.totals(pruned["plan"])
    assert totals["params"] == {"before": count_params(model), "after": count_params(small)}
    assert totals["params"]["after"] < totals["params"]["before"]
    assert totals["flops"] == {"before": count_flops(model), "after": count_flops(small)}
    assert totals["params"]["before"] == model.count_params()


@pytest.mark.timeout(300)
def test_masked_original_matches_pruned_at_a_high_threshold(pruned: dict[str, Any]) -> None:
    """The --verify path: prune filters that are NOT zero, compare with the masked model
    (on the architectures with depthwise ties and squeeze-and-excite; the others add
    only time)."""
    if pruned["name"] not in ("MobileNetV2", "EfficientNetB0", "ResNet50"):
        pytest.skip("covered by the other architectures")
    model = pruned["model"]
    plan = pruned["prepared"].plan(threshold=0.7)
    assert sum(lp.after for lp in plan.layers) < sum(lp.before for lp in plan.layers)
    small = apply_plan(model, plan)
    masked = mask_removed_filters(model, plan)
    inputs = random_inputs(model, batch=2)
    reference = max_abs_output(masked, inputs)
    assert max_abs_diff(masked, small, inputs) <= 1e-4 * max(1.0, reference)
