"""The README's pruning commands, run as written, on small models of the files they name.

Each `prunejob prune` / `tlt-prune` line of the README's "Examples" section and of its
"From TAO and back" section runs through the installed console scripts; a section's lines
run in order in one scratch folder (as a reader pastes them) that holds small models under
the file names the README uses (`resnet50.keras`, `model.h5`, `model.keras`, TAO's
`results/weights/resnet18_080.hdf5` as Keras 2.2.4 writes it); every output and report a
line names must appear. The "Encryption format" block (prunejob encrypt, decrypt, then
the `age` tool typing the key at its prompt) runs the same way on real bytes and keys,
and the README's report example lists exactly the fields a report has.
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
from tests.readme import commands, section

pytestmark = pytest.mark.timeout(600)

BIN = Path(sys.executable).parent


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
    lines = commands(section(title), ("prunejob", "tlt-prune"))
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


def test_the_readmes_encryption_commands_run_as_written(
    age_tool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # encrypt, decrypt, then Debian's `age` on the same file (typing the key at its
    # prompt), in order in one folder: both decryptions give back the original bytes.
    lines = commands(section("### Encryption format"), ("prunejob", "age"))
    assert [words[:2] for words in lines] == [
        ["prunejob", "encrypt"],
        ["prunejob", "decrypt"],
        ["age", "-d"],
    ]
    monkeypatch.chdir(tmp_path)
    original = os.urandom(200_000)
    (tmp_path / value(lines[0], "-i")).write_bytes(original)
    key = "correct horse battery staple"
    (tmp_path / value(lines[0], "--key-file")).write_text(key + "\n")  # one newline: ignored
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for words in lines[:2]:
        done = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{shlex.join(words)}: {done.stderr}"
    encrypted = (tmp_path / value(lines[0], "-o")).read_bytes()
    assert encrypted.startswith(b"age-encryption.org/v1\n") and original not in encrypted
    assert (tmp_path / value(lines[1], "-o")).read_bytes() == original
    run = age_tool(lines[2][1:], key)
    assert run.returncode == 0, run.transcript
    assert (tmp_path / value(lines[2], "-o")).read_bytes() == original


# The README's report example shows every field; these appear only with a flag.
ONLY_WITH = {"targetSearch": "--target-ratio", "verification": "--verify", "plan": "--dry-run"}


@pytest.mark.parametrize("dry_run", [False, True], ids=["written", "dry-run"])
def test_the_readmes_report_example_has_the_reports_fields(tmp_path: Path, dry_run: bool) -> None:
    text = section("### `prunejob prune` / `tlt-prune`")
    (example,) = re.findall(r"```json\n(.*?)```", text, re.S)
    documented = set(re.findall(r'^  "(\w+)":', example, re.M))
    keras3_model(tmp_path / "model.keras")
    words = ["prunejob", "prune", "-m", "model.keras", "--report", "report.json"]
    words += ["--dry-run"] if dry_run else ["-o", "out.keras"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fields = set(json.loads((tmp_path / "report.json").read_text()))
    expected = {key for key in documented if key not in ONLY_WITH or ONLY_WITH[key] in words}
    if dry_run:
        expected.discard("output")  # "`output` unless `--dry-run`"
    assert fields == expected, (sorted(fields), sorted(documented))
