"""--verify: the pruned model against the original with the removed filters zeroed.

The only step that runs the models, so the only one that imports Keras (and with it
TensorFlow): both are built from their configs and weights by the core's
`build_model`, the masked original from the input's config with the removed filters
zeroed (`mask_removed_filters`), the pruned one from the pruned config and weights,
and both run on one random batch; their outputs may differ by float32 rounding only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from prunejob_contract.errors import InvalidModel, VerificationFailed
from pruner.core.build import build_model
from pruner.core.masking import mask_removed_filters
from pruner.core.plan import PrunePlan

if TYPE_CHECKING:
    import keras

Config = dict[str, Any]
Weights = dict[str, list[np.ndarray]]

# Removing exactly-zero terms reorders sums, so the bound is relative to each output's
# magnitude.
VERIFY_RTOL = 1e-4
VERIFY_ATOL = 1e-6
VERIFY_BATCH = 2
VERIFY_UNKNOWN_DIM = 32  # size used for input axes the model leaves open (None)


def random_batch(model: keras.Model, seed: int = 0) -> Any:
    """Random float inputs in the structure the model was built with (a tensor, a list
    or a dict); axes the model leaves open get a small size."""
    import keras  # lazy: TensorFlow loads for --verify only

    rng = np.random.default_rng(seed)

    def fill(tensor: keras.KerasTensor) -> np.ndarray:
        shape = [VERIFY_BATCH] + [dim or VERIFY_UNKNOWN_DIM for dim in tensor.shape[1:]]
        return rng.standard_normal(shape).astype("float32")

    try:
        structure = model.input
    except (AttributeError, ValueError):  # a Sequential built from its config has `inputs` only
        structure = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.tree.map_structure(fill, structure)


def build(config: Config, weights: Weights, *, safe_mode: bool) -> keras.Model:
    """The Keras model of a config and weights; `safe_mode=False` lets Keras build
    Lambda layers (it runs code stored in the file: trusted files only)."""
    import keras  # lazy: TensorFlow loads for --verify only

    if not safe_mode:
        keras.config.enable_unsafe_deserialization()
    try:
        return build_model(config, weights)
    except InvalidModel as err:
        if safe_mode and ("safe_mode" in str(err) or "Lambda" in str(err)):
            raise InvalidModel(
                "the model contains a Lambda layer, which Keras builds for --verify only "
                "outside safe mode because that runs code stored in the file; if you trust "
                "the file, pass --no-safe-mode"
            ) from None
        raise


def verify_pruned(
    config: Config,
    weights: Weights,
    plan: PrunePlan,
    pruned_config: Config,
    pruned_weights: Weights,
    *,
    safe_mode: bool = True,
) -> dict[str, Any]:
    """Run the masked original and the pruned model on one random batch; their outputs
    must agree within float32 rounding (VerificationFailed otherwise)."""
    masked = build(config, mask_removed_filters(config, weights, plan), safe_mode=safe_mode)
    pruned = build(pruned_config, pruned_weights, safe_mode=safe_mode)
    batch = random_batch(masked)
    expected = [np.asarray(out) for out in _as_list(masked(batch, training=False))]
    actual = [np.asarray(out) for out in _as_list(pruned(batch, training=False))]
    worst = 0.0
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        if want.shape != got.shape:
            raise VerificationFailed(
                f"output {index} of the pruned model has shape {got.shape}, "
                f"the original {want.shape}"
            )
        diff = float(np.max(np.abs(want - got))) if want.size else 0.0
        limit = VERIFY_ATOL + VERIFY_RTOL * float(np.max(np.abs(want)) if want.size else 0.0)
        if not diff <= limit:  # NaN fails too
            raise VerificationFailed(
                f"output {index} of the pruned model differs from the masked original by "
                f"{diff:.3g} (> {limit:.3g}); the surgery changed what the model computes"
            )
        worst = max(worst, diff)
    return {"maxAbsDiff": worst, "rtol": VERIFY_RTOL, "atol": VERIFY_ATOL, "batch": VERIFY_BATCH}


def _as_list(outputs: Any) -> list[Any]:
    if isinstance(outputs, dict):
        return [outputs[key] for key in sorted(outputs)]
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
