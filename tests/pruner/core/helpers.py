"""A model as the core sees it (config + weights), for the core's tests.

`live` gives a Keras 3 model's config and weights the way the seam with `pruner.io`
describes them (`{"class_name", "config"}` and `{layer path: layer.get_weights()}`);
`live_k2` the same for a tf_keras (Keras 2) model, with the config as tf_keras writes
it into an HDF5 file; `saved` reads them back from a file Keras wrote (the config as the
file stores it, the weights of the model Keras loads from it). `zero_quarter` makes a
quarter of every width's channels dead along the whole path. Nothing here uses the
pruner, so the tests compare the pruner with what these helpers did by hand.
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

Config = dict[str, Any]
Weights = dict[str, list[np.ndarray]]


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, layer) for every layer of a Keras 3 or tf_keras model, nested as `outer/inner`."""
    for layer in model.layers:
        path = prefix + layer.name
        if hasattr(layer, "layers") and hasattr(layer, "get_layer"):  # a nested model
            yield from walk(layer, path + "/")
        else:
            yield path, layer


def weights_of(model: Any) -> Weights:
    return {path: layer.get_weights() for path, layer in walk(model) if layer.weights}


def live(model: keras.Model) -> tuple[Config, Weights]:
    return {"class_name": model.__class__.__name__, "config": model.get_config()}, weights_of(model)


def live_k2(model: Any) -> tuple[Config, Weights]:
    """A tf_keras model: the config as its HDF5 `model_config` attribute stores it (saved
    to a temporary file: tf_keras writes the legacy dialect only there)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.hdf5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "HDF5 is a legacy format"
            model.save(path, include_optimizer=False)
        with h5py.File(path, "r") as f:
            raw = f.attrs["model_config"]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return config, weights_of(model)


def saved(path: Path, loader: Any = None) -> tuple[Config, Weights]:
    """A model file's own config (`config.json` or the `model_config` attribute) and the
    weights of the model `loader` (default: Keras 3's load_model) reads from it."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    else:
        with h5py.File(path, "r") as f:
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    load = loader or (lambda p: keras.models.load_model(p, compile=False))
    return config, weights_of(load(path))


def build_k2(config: Config, weights: Weights, custom_objects: Any = None) -> Any:
    """A tf_keras model from a Keras 2 config and weights (what tf_keras makes of a file)."""
    import tf_keras  # lazy: only the Keras 2 tests need it

    model = tf_keras.models.model_from_json(json.dumps(config), custom_objects=custom_objects)
    layers = dict(walk(model))
    for path, values in weights.items():
        if values:
            layers[path].set_weights(values)
    return model


def run(model: Any, inputs: np.ndarray) -> np.ndarray:
    out = model(inputs, training=False)
    out = out[0] if isinstance(out, list | tuple) else out
    return np.asarray(out)


def randomize(model: Any, seed: int = 0) -> None:
    """Random kernels, biases and scales, BN beta/moving mean 0 (a zero channel stays
    zero through BN), positive variances; works on Keras 3 and tf_keras models."""
    rng = np.random.default_rng(seed)
    for _, layer in walk(model):
        names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
        values = []
        for name, w in zip(names, layer.get_weights(), strict=True):
            if w.ndim >= 2:
                value = rng.normal(0.0, 1.0 / np.sqrt(max(1, int(np.prod(w.shape[:-1])))), w.shape)
            elif name in ("gamma", "moving_variance", "variance"):
                value = rng.uniform(0.5, 1.5, w.shape)
            elif name in ("beta", "moving_mean", "mean"):
                value = np.zeros(w.shape)
            elif name == "count":
                value = w
            else:
                value = rng.normal(0.0, 0.1, w.shape)
            values.append(np.asarray(value, dtype=w.dtype))
        if values:
            layer.set_weights(values)


FILTER_AXIS = {"Conv1DTranspose": -2, "Conv2DTranspose": -2, "Conv3DTranspose": -2}
OWNERS = {"Conv1D", "Conv2D", "Conv3D", "Dense", "SeparableConv1D", "SeparableConv2D",
          *FILTER_AXIS}  # fmt: skip
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
PER_CHANNEL = {"BatchNormalization", "LayerNormalization", "LayerScale"}


def zero_quarter(model: Any, keep: Iterable[str] = ()) -> dict[str, list[int]]:
    """Channels c with c % 4 == 1 dead everywhere: producer filter and bias, depthwise
    channel, BatchNorm/LayerNorm gamma and beta, LayerScale gamma. Returns, per
    filter-owning layer path (but `keep`), the channels that stay alive."""
    keep = set(keep)
    alive: dict[str, list[int]] = {}
    for path, layer in walk(model):
        cls = type(layer).__name__
        if cls == "TimeDistributed":
            cls = type(layer.layer).__name__
        values = [np.array(v) for v in layer.get_weights()]
        if not values:
            continue
        if cls in OWNERS or cls in DEPTHWISE:
            kernel = values[1] if cls.startswith("Separable") else values[0]
            axis = -2 if cls in DEPTHWISE else FILTER_AXIS.get(cls, -1)
            total = kernel.shape[axis]
            dead = [c for c in range(total) if c % 4 == 1 and path not in keep]
            if len(dead) >= total or (cls in FILTER_AXIS and dead):
                dead = []
            alive[path] = [c for c in range(total) if c not in dead]
            if dead:
                index: list[Any] = [slice(None)] * kernel.ndim
                index[axis] = dead
                kernel[tuple(index)] = 0
                if len(values) > (2 if cls.startswith("Separable") else 1):
                    values[-1][dead] = 0  # the bias
        elif cls in PER_CHANNEL:
            total = values[0].shape[-1]
            dead = [c for c in range(total) if c % 4 == 1]
            for i, value in enumerate(values[:2] if cls != "LayerScale" else values[:1]):
                if value.ndim == 1 and value.shape[0] == total:
                    values[i][dead] = 0
        layer.set_weights(values)
    return alive
