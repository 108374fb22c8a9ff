"""--verify: the pruned model against the original with the removed filters zeroed.

Both run on one random batch; their outputs may differ by float32 rounding only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunejob_contract.errors import VerificationFailed

if TYPE_CHECKING:
    import keras
    import numpy as np

    from pruner.core.plan import PrunePlan

# Removing exactly-zero terms reorders sums, so the bound is relative to each output's
# magnitude.
VERIFY_RTOL = 1e-4
VERIFY_ATOL = 1e-6
VERIFY_BATCH = 2
VERIFY_UNKNOWN_DIM = 32  # size used for input axes the model leaves open (None)


def random_batch(model: keras.Model, seed: int = 0) -> Any:
    """Random float inputs in the structure the model was built with (a tensor, a list
    or a dict); axes the model leaves open get a small size."""
    import keras  # lazy: TensorFlow loads with the first model, not with the CLI
    import numpy as np

    rng = np.random.default_rng(seed)

    def fill(tensor: keras.KerasTensor) -> np.ndarray:
        shape = [VERIFY_BATCH] + [dim or VERIFY_UNKNOWN_DIM for dim in tensor.shape[1:]]
        return rng.standard_normal(shape).astype("float32")

    return keras.tree.map_structure(fill, model.input)


def verify_pruned(original: keras.Model, plan: PrunePlan, pruned: keras.Model) -> dict[str, Any]:
    """Run the masked original and the pruned model on one random batch; their outputs
    must agree within float32 rounding (VerificationFailed otherwise)."""
    import numpy as np

    from pruner.core.masking import mask_removed_filters  # lazy: numpy loads with the model

    masked = mask_removed_filters(original, plan)
    batch = random_batch(original)
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
