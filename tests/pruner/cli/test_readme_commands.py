"""The README's pruning commands, run as written, on small models of the files they name.

Each `prunejob prune` / `tlt-prune` line of the README's "Examples" section and of its
"From TAO and back" section runs through the installed console scripts; a section's lines
run in order in one scratch folder (as a reader pastes them) that holds small models under
the file names the README uses (`resnet50.keras`, `model.h5`, `model.keras`, TAO's
`results/weights/resnet18_080.hdf5` as Keras 2.2.4 writes it); every output and report a
line names must appear.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pruner.cli.test_keras2_files import resnet18_style, with_dead_channels
from tests.pruner.io.model_files import as_keras_224

pytestmark = pytest.mark.timeout(600)

README = Path(__file__).resolve().parents[3] / "README.md"
BIN = Path(sys.executable).parent


def section(title: str) -> str:
    """The README text from the heading `title` to the next heading (outside code blocks)."""
    lines, inside, fenced = [], False, False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            if inside:
                break
            inside = line == title
        if inside:
            lines.append(line)
    return "\n".join(lines) + "\n"


def commands(text: str) -> list[list[str]]:
    """The prunejob/tlt-prune commands of the `sh` blocks in `text`, continuations joined."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in ("prunejob", "tlt-prune"):
                found.append(words)
    return found


def value(words: list[str], *flags: str) -> str | None:
    for flag in flags:
        if flag in words:
            return words[words.index(flag) + 1]
    return None


def keras3_model(path: Path) -> None:
    """A small Keras 3 model with the layer names the README excludes (`-el`)."""
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.Conv2D(48, 3, padding="same", name="conv2_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="predictions")(x))
    model.save(path)


def tao_model(path: Path) -> None:
    """A ResNet18-style Keras 2 `.hdf5` file as TAO 5 writes them."""
    with_dead_channels(resnet18_style()).save(path)
    as_keras_224(path)


MODELS = {
    "resnet50.keras": keras3_model,
    "model.h5": keras3_model,
    "model.keras": keras3_model,
    "results/weights/resnet18_080.hdf5": tao_model,
}


@pytest.mark.parametrize("title", ["### Examples", "## From TAO and back"])
def test_the_readmes_pruning_commands_run_as_written(title: str, tmp_path: Path) -> None:
    lines = commands(section(title))
    assert len(lines) >= 2, f"no prunejob commands found under {title!r}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    here = tmp_path  # one folder, the lines in order, as a reader pastes them: a line
    for words in lines:  # that reuses an earlier line's output would fail (OutputExists)
        model = value(words, "-m", "--pretrained_model")
        assert model in MODELS, f"the README names a model this test does not build: {model}"
        if not (here / model).exists():
            (here / model).parent.mkdir(parents=True, exist_ok=True)
            MODELS[model](here / model)
        done = subprocess.run(words, cwd=here, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{shlex.join(words)}: {done.stderr}"
        output = value(words, "-o", "--output_file")
        if "--dry-run" in words:
            assert output is None
        else:
            assert output is not None and (here / output).is_file(), shlex.join(words)
        report = value(words, "--report")
        if report is not None:
            assert json.loads((here / report).read_text())["filters"]["before"] > 0
