"""Build a Keras 3 model from a config and weights: only for `--verify` (and the tests).

The one place in the core that needs Keras (imported lazily, so importing the pruner
never loads TensorFlow). Keras 3 configs are built with `Model.from_config` /
`Sequential.from_config`; Keras 2 configs (tf_keras, TAO) with the loader Keras 3's own
`load_model` uses for Keras 2 HDF5 files (`keras.src.legacy.saving`, a private module:
Keras has no public entry point for a Keras 2 config), after `dialect.keras3_config`.
Weights are set layer by layer from `{layer path: [arrays in Keras order]}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunejob_contract.errors import InvalidModel
from pruner.core.dialect import keras3_config
from pruner.core.modelconfig import dialect
from pruner.core.walk import Weights

if TYPE_CHECKING:
    import keras


def build_model(config: dict[str, Any], weights: Weights) -> keras.Model:
    """A Keras 3 model with these weights (the config is not changed)."""
    import keras  # lazy: importing the pruner must not load TensorFlow

    normalized = keras3_config(config)
    try:
        if dialect(config) == "keras2":
            from keras.src.legacy.saving import saving_utils  # lazy: loads Keras

            model = saving_utils.model_from_config(normalized)
        elif normalized.get("class_name") == "Sequential":
            model = keras.Sequential.from_config(normalized["config"])
        else:
            model = keras.Model.from_config(normalized["config"])
    except Exception as err:  # Keras raises anything from TypeError to IndexError here
        raise InvalidModel(
            f"Keras {keras.__version__} cannot build this model from its config: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    for path, values in weights.items():
        if values:
            find_layer(model, path).set_weights(list(values))
    return model


def find_layer(model: Any, path: str) -> Any:
    layer = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer
