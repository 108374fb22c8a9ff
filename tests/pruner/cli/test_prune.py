"""`prunejob prune` / `tlt-prune` end to end, on tiny real Keras models and real files.

The models have chosen filters zeroed (and their post-BN channel exactly zero), so
the filters pruning must remove are known in advance and --verify must pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from prunejob_contract.settings import PruneSettings
from pruner.cli.prune import parse_request, prune_main
from pruner.io.keys import KEY_ENV

pytestmark = pytest.mark.timeout(180)
SCRIPTS = Path(sys.executable).parent
WIDTH = 32
CONV1_ZEROED = list(range(0, 32, 2))  # 16 of 32: pruned with TAO defaults (-nf 16, -pg 8)
CONV2_ZEROED = list(range(8, 24))


def zero_filters(layer: keras.layers.Layer, indices: list[int]) -> None:
    kernel, bias = layer.get_weights()
    kernel[..., indices] = 0.0
    bias[indices] = 0.0
    layer.set_weights([kernel, bias])


def prunable_model(activation: str = "relu") -> keras.Model:
    """conv1 -> bn1 -> act -> conv2 -> relu -> pool -> head, with CONV1_ZEROED and
    CONV2_ZEROED filters exactly zero after their BN / activation (for relu)."""
    inputs = keras.Input((8, 8, 3), name="image")
    conv1 = keras.layers.Conv2D(WIDTH, 3, padding="same", name="conv1")
    bn1 = keras.layers.BatchNormalization(name="bn1")
    conv2 = keras.layers.Conv2D(WIDTH, 3, padding="same", name="conv2")
    hidden = keras.layers.Activation(activation, name="act1")(bn1(conv1(inputs)))
    hidden = keras.layers.ReLU(name="relu2")(conv2(hidden))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(pooled), name="tiny")
    rng = np.random.default_rng(7)
    gamma, beta, mean, variance = bn1.get_weights()
    beta, mean = rng.normal(size=WIDTH), rng.normal(size=WIDTH)  # nonzero where kept
    beta[CONV1_ZEROED] = mean[CONV1_ZEROED] = 0.0
    bn1.set_weights([gamma, beta, mean, variance])
    zero_filters(conv1, CONV1_ZEROED)
    zero_filters(conv2, CONV2_ZEROED)
    return model


def kept(zeroed: list[int]) -> list[int]:
    return [index for index in range(WIDTH) if index not in zeroed]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    prunable_model().save(path)
    return path


def prune(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = prune_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The one error line of a failed run (progress lines may precede it)."""
    errors = [line for line in err.splitlines() if line.startswith("prunejob: error: ")]
    assert len(errors) == 1, err
    assert err.endswith(errors[0] + "\n")  # the error is the last thing said
    return errors[0]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def conv_layers(model: keras.Model) -> dict[str, int]:
    return {
        layer.name: layer.filters
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    }


# ------------------------------------------------------------------ parsing (no model needed)


def test_defaults_are_taos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)  # a key source besides -k and --key-file
    request = parse_request(["-m", "in.keras", "-o", "out.keras"], "prunejob prune")
    assert request.settings == PruneSettings(
        normalizer="max",
        equalization_criterion="union",
        granularity=8,
        threshold=0.1,
        min_num_filters=16,
        excluded_layers=(),
    )
    assert (request.key, request.dry_run, request.verify, request.safe_mode) == (
        None,
        False,
        False,
        True,
    )


def test_tao_long_names_mean_the_same_as_short_flags() -> None:
    short = "-m in.h5 -o out.h5 -k secret -n L2 -eq intersection -pg 4 -pth 0.3 -nf 2 -el a b"
    long = (
        "--pretrained_model in.h5 --output_file out.h5 --key secret --normalizer L2 "
        "--equalization_criterion intersection --pruning_granularity 4 --pruning_threshold 0.3 "
        "--min_num_filters 2 --excluded_layers a --excluded_layers b"
    )
    assert parse_request(short.split(), "p") == parse_request(long.split(), "p")
    assert str(parse_request(["-pm", "in.h5", "-o", "o.h5"], "p").model) == "in.h5"
    assert str(parse_request(["--model", "in.h5", "-o", "o.h5"], "p").model) == "in.h5"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-n", "foo"], "argument -n/--normalizer: invalid choice: 'foo'"),
        (["-eq", "foo"], "argument -eq/--equalization_criterion: invalid choice: 'foo'"),
        (["-pg", "0"], "pruning granularity must be a positive integer, got 0"),
        (["-pg", "-8"], "pruning granularity must be a positive integer, got -8"),
        (["-pg", "two"], "argument -pg/--pruning_granularity: invalid int value: 'two'"),
        (["-pth", "-0.1"], "pruning threshold must be >= 0, got -0.1"),
        (["-pth", "nan"], "pruning threshold must be >= 0, got nan"),
        (["-nf", "-1"], "min_num_filters must be >= 0, got -1"),
        (["--target-ratio", "0"], "--target-ratio must be in (0, 1], got 0.0"),
        (["--target-ratio", "1.5"], "--target-ratio must be in (0, 1], got 1.5"),
        (["--target-ratio", "0.5", "-pth", "0.2"], "either -pth/--pruning_threshold or"),
        (["--pruning_thresh", "0.2"], "unrecognized arguments: --pruning_thresh"),
    ],
)
def test_bad_flag_values_are_one_line_exit_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "pruned.keras"
    code, out, err = prune(["-m", "whatever.keras", "-o", str(output), *extra], capsys)
    assert code == 2
    assert out == ""
    assert err.splitlines() == [err.strip()]
    assert err.startswith("prunejob: error: ")
    assert message in err
    assert not output.parent.exists()


def test_output_is_required_without_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = prune(["-m", "in.keras"], capsys)
    assert (code, err) == (2, "prunejob: error: -o/--output_file is required (unless --dry-run)\n")


# ------------------------------------------------------------------ bad files


def test_missing_model_is_model_not_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "pruned.keras"
    code, _, err = prune(["-m", str(tmp_path / "nope.keras"), "-o", str(output)], capsys)
    assert code == 3
    assert err == f"prunejob: error: model file {tmp_path / 'nope.keras'} does not exist\n"
    assert not output.exists()


def test_not_a_model_is_invalid_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"\x00" * 64)
    code, _, err = prune(["-m", str(fake), "-o", str(tmp_path / "pruned.keras")], capsys)
    assert code == 4
    assert "is not a Keras model file" in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.h5"]


def test_key_on_a_plain_model_encrypts_the_output(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "pruned.keras.age"
    code, out, err = prune(["-m", str(model_file), "-o", str(output), "-k", "secret"], capsys)
    assert code == 0, err
    assert output.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert "secret" not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # no plaintext beside it


def test_encrypted_model_without_key_is_key_required(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encrypted = tmp_path / "model.keras.age"
    encrypted.write_bytes(b"age-encryption.org/v1\n-> scrypt c2FsdA 18\n")
    code, _, err = prune(["-m", str(encrypted), "-o", str(tmp_path / "o.keras")], capsys)
    assert code == 7
    assert err == (
        f"prunejob: error: model file {encrypted} is age-encrypted; give its key with "
        "--key-file PATH or the PRUNEJOB_KEY environment variable (or -k)\n"
    )


def test_output_equal_to_input_needs_force(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(model_file.read_bytes())
    code, _, err = prune(["-m", str(model), "-o", str(model)], capsys)
    assert code == 11
    assert "is the input model" in err and "--force" in err
    assert model.read_bytes() == model_file.read_bytes()

    code, _, _ = prune(["-m", str(model), "-o", str(model), "--force"], capsys)
    assert code == 0
    assert conv_layers(keras.saving.load_model(model)) == {"conv1": 16, "conv2": 16}


def test_unwritable_output_is_output_not_writable(
    model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc refuses new directories even for root.
    code, _, err = prune(["-m", str(model_file), "-o", "/proc/prunejob-test/out.keras"], capsys)
    assert code == 12
    assert err.startswith("prunejob: error: cannot create output directory /proc/prunejob-test")


@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_existing_but_unwritable_directory_fails_before_any_work(
    flag: str, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc exists and access() lets root write there, but no file can be created in it.
    unwritable = "/proc/prunejob-test.keras"
    output = tmp_path / "pruned.keras"
    argv = ["-m", str(model_file)]
    argv += ["-o", unwritable] if flag == "-o" else ["-o", str(output), flag, unwritable]
    code, out, err = prune(argv, capsys)
    assert code == 12
    assert out == ""  # and no progress: nothing was loaded
    assert err.startswith("prunejob: error: cannot write in output directory /proc")
    assert err.count("\n") == 1
    assert not output.exists()


def test_unwritable_report_fails_before_any_work(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "pruned.keras"
    argv = ["-m", str(model_file), "-o", str(output), "--report", "/proc/prunejob-test/r.json"]
    code, _, err = prune(argv, capsys)
    assert code == 12
    assert err.startswith("prunejob: error: cannot create output directory /proc/prunejob-test")
    assert not output.exists()


def test_report_naming_the_new_output_is_refused(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Neither file exists yet; the report must not be written over the pruned model.
    output = tmp_path / "pruned.keras"
    report = tmp_path / "sub" / ".." / "pruned.keras"
    code, out, err = prune(
        ["-m", str(model_file), "-o", str(output), "--report", str(report)], capsys
    )
    assert code == 2
    assert out == ""
    assert err == f"prunejob: error: --report {report} is the same file as the output model\n"
    assert not output.exists()


def test_report_naming_the_input_is_refused(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(model_file.read_bytes())
    output = tmp_path / "pruned.keras"
    argv = ["-m", str(model), "-o", str(output), "--report", str(model), "--force", "--overwrite"]
    code, out, err = prune(argv, capsys)
    assert code == 2
    assert out == ""
    assert err == f"prunejob: error: --report {model} is the input model; name another file\n"
    assert model.read_bytes() == model_file.read_bytes()
    assert not output.exists()


@pytest.mark.parametrize("clash", ["input model", "output model", "report"])
def test_termination_log_naming_a_model_or_report_is_refused(
    clash: str, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, output, report = tmp_path / "model.keras", tmp_path / "out.keras", tmp_path / "r.json"
    model.write_bytes(model_file.read_bytes())
    log = {"input model": model, "output model": output, "report": report}[clash]
    argv = ["-m", str(model), "-o", str(output), "--report", str(report)]
    code, out, err = prune([*argv, "--termination-log", str(log)], capsys)
    assert code == 2
    assert out == ""
    assert err == f"prunejob: error: --termination-log {log} is the {clash}; name another file\n"
    assert model.read_bytes() == model_file.read_bytes()  # the failure was not logged there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_output_suffix_must_be_a_keras_format(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = prune(["-m", str(model_file), "-o", str(tmp_path / "out.pb")], capsys)
    assert code == 2
    assert "must end in one of .keras, .h5" in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AWS_ENDPOINT_URL", "notaurl"),
        ("AWS_REGION", "bad region!"),
        ("AWS_PROFILE", "no-such-profile"),
        ("AWS_MAX_ATTEMPTS", "many"),
        ("AWS_RETRY_MODE", "sometimes"),
    ],
)
def test_bad_s3_client_configuration_is_invalid_argument(
    variable: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Fails while building the client, before any request: no S3 server needed.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv(variable, value)
    output = tmp_path / "out.keras"
    code, out, err = prune(["-m", "s3://bucket/model.keras", "-o", str(output)], capsys)
    assert code == 2
    assert out == ""
    line = error_line(err)
    assert line.startswith("prunejob: error: invalid S3 client configuration: ")
    assert "internal error" not in line
    assert not output.exists()


def test_bad_output_name_is_reported_before_touching_s3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default report of an S3 output lives next to it; checking that destination
    # needs the endpoint (nothing listens on port 9), the output's suffix does not.
    argv = ["-m", str(tmp_path / "in.keras"), "-o", "s3://bucket/pruned.pb"]
    code, out, err = prune([*argv, "--s3-endpoint", "http://127.0.0.1:9"], capsys)
    assert code == 2
    assert out == ""
    assert error_line(err).startswith("prunejob: error: output file s3://bucket/pruned.pb must end")


def test_lambda_needs_exclusion_and_verify_needs_safe_mode_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading runs nothing stored in the file, so a Lambda needs only -el; building it
    in Keras for --verify runs its code, so that needs --no-safe-mode too."""
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(WIDTH, 3, name="conv")(inputs)
    scaled = keras.layers.Lambda(lambda tensor: tensor * 2.0, name="scale")(conv)
    pooled = keras.layers.GlobalAveragePooling2D()(scaled)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Dense(2)(pooled)).save(path)
    output = tmp_path / "pruned.keras"

    code, _, err = prune(["-m", str(path), "-o", str(output)], capsys)
    assert code == 5
    assert "'scale'" in error_line(err)
    assert not output.exists()

    code, _, err = prune(["-m", str(path), "-o", str(output), "-el", "scale", "--verify"], capsys)
    assert code == 4
    assert "Lambda" in error_line(err) and "--no-safe-mode" in error_line(err)
    assert not output.exists()

    argv = ["-m", str(path), "-o", str(output), "-el", "scale", "--verify", "--no-safe-mode"]
    code, _, err = prune(argv, capsys)
    assert code == 0, err
    assert output.exists()


def test_permute_after_pruned_layer_is_unsupported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(WIDTH, 3, name="conv")
    swapped = keras.layers.Permute((3, 1, 2), name="swap")(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(swapped)))
    zero_filters(conv, CONV1_ZEROED)  # so that conv does get pruned
    path = tmp_path / "permute.keras"
    model.save(path)
    code, _, err = prune(["-m", str(path), "-o", str(tmp_path / "out.keras")], capsys)
    assert code == 5
    assert "'swap' (Permute)" in error_line(err)


# ------------------------------------------------------------------ successful runs


def test_prune_writes_model_report_and_summary(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "new" / "dir" / "pruned.keras"  # missing directories are created
    report_path = tmp_path / "report.json"
    code, out, err = prune(
        ["-m", str(model_file), "-o", str(output), "--report", str(report_path)], capsys
    )
    assert code == 0, err
    pruned = keras.saving.load_model(output)
    assert conv_layers(pruned) == {"conv1": 16, "conv2": 16}
    original = keras.saving.load_model(model_file)
    np.testing.assert_array_equal(
        pruned.get_layer("conv1").get_weights()[0],
        original.get_layer("conv1").get_weights()[0][..., kept(CONV1_ZEROED)],
    )

    report = read_json(report_path)
    assert report["params"] == {"before": original.count_params(), "after": pruned.count_params()}
    assert report["pruningRatio"] == pruned.count_params() / original.count_params()
    assert report["filters"]["before"] - report["filters"]["after"] == 32
    assert report["flops"]["after"] < report["flops"]["before"]
    layers = {row["name"]: row for row in report["layers"]}
    assert layers["conv1"] == {"name": "conv1", "type": "Conv2D", "before": 32, "after": 16}
    assert layers["head"]["before"] == layers["head"]["after"] == 4  # outputs stay whole
    assert report["settings"] == PruneSettings().to_json()
    assert report["output"]["bytes"] == output.stat().st_size
    assert {"loading", "planning", "surgery", "saving"} <= set(report["timings"])
    assert "plan" not in report

    assert f"{report['pruningRatio']:.4f}" in out
    assert str(output) in out
    for step in ("loading", "planning", "surgery", "saving"):
        assert f"prunejob: {step} done in" in err


def test_dry_run_reports_the_plan_and_writes_no_model(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "never" / "pruned.keras"
    report_path = tmp_path / "plan.json"
    argv = ["-m", str(model_file), "-o", str(output), "--dry-run", "--report", str(report_path)]
    code, out, err = prune(argv, capsys)
    assert code == 0, err
    assert not output.parent.exists()
    report = read_json(report_path)
    assert report["dryRun"] is True
    assert "output" not in report
    plan_layers = {layer["name"]: layer for layer in report["plan"]["layers"]}
    assert plan_layers["conv1"]["kept"] == kept(CONV1_ZEROED)
    assert plan_layers["conv2"]["kept"] == kept(CONV2_ZEROED)
    assert [row["name"] for row in report["layers"]] == [
        row["name"] for row in report["plan"]["layers"]
    ]
    assert "--dry-run" in out


def test_verify_passes_on_a_correct_pruning(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "report.json"
    argv = ["-m", str(model_file), "-o", str(tmp_path / "p.keras"), "--verify"]
    code, out, err = prune([*argv, "--report", str(report_path)], capsys)
    assert code == 0, err
    verification = read_json(report_path)["verification"]
    assert verification["maxAbsDiff"] <= 1e-4
    assert "verified" in out


def test_verify_fails_where_masked_channels_do_not_stay_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # sigmoid(0) = 0.5: the masked original still feeds the removed channels to conv2.
    path = tmp_path / "sigmoid.keras"
    prunable_model(activation="sigmoid").save(path)
    output = tmp_path / "pruned.keras"
    code, _, err = prune(["-m", str(path), "-o", str(output), "--verify"], capsys)
    assert code == 13
    assert "differs from the masked original" in error_line(err)
    assert not output.exists()


def test_target_ratio_picks_the_closest_ratio_from_below(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "target.json"
    argv = [
        "-m",
        str(model_file),
        "--dry-run",
        "-nf",
        "1",
        "-pg",
        "1",
        "--report",
        str(report_path),
    ]
    code, out, err = prune([*argv, "--target-ratio", "0.6"], capsys)
    assert code == 0, err
    report = read_json(report_path)
    threshold = report["settings"]["threshold"]
    assert report["settings"]["targetRatio"] == 0.6
    assert report["pruningRatio"] <= 0.6
    assert repr(threshold) in out

    # The same threshold given with -pth gives the same plan; one step milder goes above 0.6.
    code, _, _ = prune([*argv, "-pth", repr(threshold)], capsys)
    assert code == 0
    again = read_json(report_path)
    assert again["layers"] == report["layers"]
    assert again["pruningRatio"] == report["pruningRatio"]
    if threshold > 0:  # the search chose the mildest threshold: just below it, the ratio is > 0.6
        milder = float(np.nextafter(threshold, 0.0))
        code, _, _ = prune([*argv, "-pth", repr(milder)], capsys)
        assert code == 0
        assert read_json(report_path)["pruningRatio"] > 0.6


def test_missing_excluded_layer_warns_with_close_names(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-m", str(model_file), "--dry-run", "-el", "conv_1", "conv2"]
    code, _, err = prune([*argv, "--report", str(tmp_path / "r.json")], capsys)
    assert code == 0
    assert "warning: excluded layer 'conv_1' is not in the model" in err
    assert "close names: conv1" in err
    layers = {row["name"]: row for row in read_json(tmp_path / "r.json")["layers"]}
    assert layers["conv2"]["after"] == WIDTH  # the existing name is still excluded
    assert layers["conv1"]["after"] == 16


def test_sequential_model_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(WIDTH, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="head"),
        ]
    )
    zero_filters(model.get_layer("conv"), CONV1_ZEROED)
    path = tmp_path / "sequential.h5"
    model.save(path)
    output = tmp_path / "pruned.h5"  # the input's format (issue 10: the file, edited)
    code, _, err = prune(["-m", str(path), "-o", str(output), "--verify"], capsys)
    assert code == 0, err
    pruned = keras.saving.load_model(output)
    assert conv_layers(pruned) == {"conv": 16}
    assert isinstance(pruned, keras.Sequential)  # it stays Sequential (issue 10)


# ------------------------------------------------------------------ the real console scripts


def run_script(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)


def test_tlt_prune_and_prunejob_prune_agree(model_file: Path, tmp_path: Path) -> None:
    tao = run_script(
        str(SCRIPTS / "tlt-prune"),
        "--pretrained_model", str(model_file),
        "--output_file", str(tmp_path / "tao.keras"),
        "--normalizer", "L2",
        "--equalization_criterion", "arithmetic_mean",
        "--pruning_granularity", "4",
        "--pruning_threshold", "0.2",
        "--min_num_filters", "4",
        "--excluded_layers", "conv2",
        "--report", str(tmp_path / "tao.json"),
    )  # fmt: skip
    ours = run_script(
        str(SCRIPTS / "prunejob"), "prune",
        "-m", str(model_file), "-o", str(tmp_path / "ours.keras"),
        "-n", "L2", "-eq", "arithmetic_mean", "-pg", "4", "-pth", "0.2", "-nf", "4",
        "-el", "conv2", "--report", str(tmp_path / "ours.json"),
    )  # fmt: skip
    assert tao.returncode == ours.returncode == 0, tao.stderr + ours.stderr
    tao_report, our_report = read_json(tmp_path / "tao.json"), read_json(tmp_path / "ours.json")
    for key in ("params", "filters", "flops", "pruningRatio", "layers", "settings"):
        assert tao_report[key] == our_report[key]
    assert {row["name"]: row["after"] for row in our_report["layers"]}["conv2"] == WIDTH
    tao_model = keras.saving.load_model(tmp_path / "tao.keras")
    our_model = keras.saving.load_model(tmp_path / "ours.keras")
    for want, got in zip(tao_model.get_weights(), our_model.get_weights(), strict=True):
        np.testing.assert_array_equal(want, got)


def test_console_script_error_is_one_line(tmp_path: Path) -> None:
    result = run_script(
        str(SCRIPTS / "tlt-prune"),
        "-m",
        str(tmp_path / "none.keras"),
        "-o",
        str(tmp_path / "o.keras"),
    )
    assert result.returncode == 3
    assert (
        result.stderr == f"tlt-prune: error: model file {tmp_path / 'none.keras'} does not exist\n"
    )


def test_verify_feeds_models_with_several_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    left, right = keras.Input((8, 8, 3), name="left"), keras.Input((8, 8, 2), name="right")
    conv_left = keras.layers.Conv2D(WIDTH, 3, padding="same", name="conv_left")
    conv_right = keras.layers.Conv2D(WIDTH, 1, name="conv_right")
    merged = keras.layers.Add(name="add")([conv_left(left), conv_right(right)])
    pooled = keras.layers.GlobalAveragePooling2D()(merged)
    model = keras.Model([left, right], keras.layers.Dense(3, name="head")(pooled))
    zero_filters(conv_left, CONV1_ZEROED)  # the Add ties both convs: same filters go
    zero_filters(conv_right, CONV1_ZEROED)
    path = tmp_path / "two_inputs.keras"
    model.save(path)
    output = tmp_path / "pruned.keras"
    code, _, err = prune(["-m", str(path), "-o", str(output), "--verify"], capsys)
    assert code == 0, err
    assert conv_layers(keras.saving.load_model(output)) == {"conv_left": 16, "conv_right": 16}
