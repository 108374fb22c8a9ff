"""Test of a prune's peak memory (RSS) against the model file's size.

Peak memory of a prune: at most twice the model file plus the interpreter's own
(the peak of `prunejob prune --help`, which imports the same modules), measured as
the peak RSS of fresh processes.

The peak is VmHWM, read by the process itself at exit: a child's ru_maxrss would also
count the memory of the (TensorFlow-laden) test process it was forked from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.pruner.io.model_files import keras_module
from tests.pruner.peak_rss import PRUNEJOB

pytestmark = pytest.mark.timeout(300)
MiB = 1024 * 1024


def peak_rss(args: list[str], folder: Path) -> float:
    """Peak RSS (MiB) of `prunejob ARGS` run to completion in a fresh process."""
    record = folder / "peak"
    record.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", PRUNEJOB, str(record), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return float(record.read_text())


@pytest.mark.parametrize(("dialect", "suffix"), [("keras3", ".keras"), ("keras2", ".hdf5")])
def test_peak_rss_is_at_most_twice_the_file_plus_the_interpreter(
    tmp_path: Path, dialect: str, suffix: str
) -> None:
    keras = keras_module(dialect)
    layers = keras.layers
    inputs = keras.Input((2048,))
    x = inputs
    for index in range(4):  # ~64 MiB of float32 kernels
        x = layers.Dense(2048, activation="relu", name=f"fc{index}")(x)
    model = keras.Model(inputs, layers.Dense(10, name="predictions")(x))
    for index in range(4):  # a quarter of each layer's units dead, so pruning slices them
        kernel, bias = model.get_layer(f"fc{index}").get_weights()
        kernel[:, ::4], bias[::4] = 0.0, 0.0
        model.get_layer(f"fc{index}").set_weights([kernel, bias])
    source = tmp_path / f"big{suffix}"
    model.save(source)
    size = source.stat().st_size / MiB
    assert size > 60

    interpreter = peak_rss(["prune", "--help"], tmp_path)
    output = tmp_path / f"pruned{suffix}"
    peak = peak_rss(["prune", "-m", str(source), "-o", str(output)], tmp_path)
    assert output.stat().st_size < source.stat().st_size * 0.8  # it really pruned
    assert interpreter < 200  # the fresh process' own memory, not the test process'
    assert peak > interpreter + size  # it held the weights, so measures what it did
    assert peak <= 2 * size + interpreter, (peak, size, interpreter)
