"""Tests that `prunejob prune` without --verify needs neither TensorFlow nor Keras.

`prunejob prune` without --verify imports no TensorFlow and no Keras: checked in a
fresh process, with TensorFlow installed (sys.modules afterwards) and in an
installation that has none (the worker-cpu image), where --verify is one line
naming the extra that brings it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.pruner.io.model_files import keras_module

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[3]
HEAVY = ("tensorflow", "keras", "tf_keras", "jax", "torch")
PROBE = f"""
import json, sys
from prunejob.cli import main
code = main(["prune", *sys.argv[1:]])
print(json.dumps({{"code": code, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def dead_channel_model(dialect: str) -> Any:
    """conv -> BN -> ReLU -> depthwise -> BN -> ReLU -> conv -> GAP -> Dense, with half
    of the first conv's channels dead along their whole path (conv kernel and bias,
    depthwise channel and bias, both BNs' gamma and beta zero)."""
    keras = keras_module(dialect)
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    conv = layers.Conv2D(32, 3, padding="same", name="conv1")
    bn1, bn2 = layers.BatchNormalization(name="bn1"), layers.BatchNormalization(name="bn2")
    depthwise = layers.DepthwiseConv2D(3, padding="same", name="dw")
    x = layers.ReLU()(bn1(conv(inputs)))
    x = layers.ReLU()(bn2(depthwise(x)))
    x = layers.Conv2D(16, 1, name="conv2")(x)
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    for layer in (conv, depthwise):
        kernel, bias = layer.get_weights()
        axis = -2 if layer is depthwise else -1
        index = [slice(None)] * kernel.ndim
        index[axis] = slice(None, None, 2)
        kernel[tuple(index)], bias[::2] = 0.0, 0.0
        layer.set_weights([kernel, bias])
    for bn in (bn1, bn2):
        gamma, beta, mean, variance = bn.get_weights()
        gamma[::2], beta[::2] = 0.0, 0.0
        bn.set_weights([gamma, beta, mean, variance])
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {"keras3": folder / "k3.keras", "keras2": folder / "tao.hdf5"}
    for dialect, path in paths.items():
        dead_channel_model(dialect).save(path)
    return paths


def run_probe(args: list[str], env: dict[str, str] | None = None, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *extra, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


@pytest.mark.parametrize("dialect", ["keras3", "keras2"])
def test_prune_imports_no_tensorflow(models: dict[str, Path], tmp_path: Path, dialect: str) -> None:
    source = models[dialect]
    output = tmp_path / f"pruned{source.suffix}"
    result = run_probe(["-m", str(source), "-o", str(output), "--report", str(tmp_path / "r.json")])
    assert result["code"] == 0, result["stderr"]
    assert result["heavy"] == []  # TensorFlow is installed here, and was not imported
    assert "startup" not in result["stderr"]  # no TensorFlow start-up step either
    report = json.loads((tmp_path / "r.json").read_text())
    assert {row["name"]: row["after"] for row in report["layers"]}["conv1"] == 16
    assert output.exists()


def installation_without_tensorflow(folder: Path) -> dict[str, str]:
    """An environment whose site-packages is this one's minus TensorFlow and Keras
    (links to every other installed distribution), as the worker-cpu image has."""
    site = Path(np.__file__).resolve().parents[1]
    folder.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("tensorflow", "keras", "tf_keras", "tensorboard")):
            (folder / entry.name).symlink_to(entry)
    paths = [str(REPO), str(REPO / "operator"), str(REPO / "contract"), str(folder)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_an_installation_without_tensorflow_prunes_and_refuses_verify(
    models: dict[str, Path], tmp_path: Path
) -> None:
    env = installation_without_tensorflow(tmp_path / "site")
    source = models["keras2"]
    output = tmp_path / "pruned.hdf5"
    argv = ["-m", str(source), "-o", str(output)]
    # -S: no site-packages of this venv; PYTHONPATH brings the reduced one
    result = run_probe(argv, env, "-S")
    assert result["code"] == 0, result["stderr"]
    assert output.exists()

    refused = run_probe([*argv[:2], "-o", str(tmp_path / "verified.hdf5"), "--verify"], env, "-S")
    assert refused["code"] == 2
    lines = refused["stderr"].splitlines()
    assert lines == [
        "prunejob: error: --verify needs tensorflow and keras, which this installation "
        "lacks: install prunejob[pruner] (the GPU worker image has it), or run without --verify"
    ]
    assert not (tmp_path / "verified.hdf5").exists()
