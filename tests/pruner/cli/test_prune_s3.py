"""End-to-end tests of the worker path: `prunejob prune` with S3, age keys, termination log.

The worker path end to end: `prunejob prune` with S3 URIs, age keys and the
termination log, through the real CLI entry (in process and as a subprocess), against
moto in server mode and tiny real Keras models.

Inputs are encrypted with a small scrypt work factor (decryption accepts age's whole
range); outputs are written with the CLI's real default (18, ~1-3 s each), so only
a few tests encrypt an output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from prunejob_contract.settings import PruneSettings
from prunejob_contract.termination import decode_message
from prunejob_contract.worker import WorkerCall
from pruner.cli.prune import parse_request, prune_main
from pruner.io import age
from pruner.io import s3 as s3_module
from pruner.io.scratch import SCRATCH_ENV
from tests.pruner.builders import randomize_weights, small_vgg, zero_filters

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("aws_environment")]

# Distinctive, so that finding it anywhere it must not be is unambiguous.
KEY = "worker-path passphrase 7f3a9c"
AGE_MAGIC = b"age-encryption.org/v1\n"
SCRIPTS = Path(sys.executable).parent
THRESHOLD = "0.1"  # TAO's default; removes exactly the ZEROED filters
ZEROED = {"conv2": range(0, 32, 2), "fc1": range(16, 32)}  # 16 of 32 in each


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encrypt(data: bytes, key: str = KEY) -> bytes:
    out = io.BytesIO()
    age.encrypt_stream(io.BytesIO(data), out, key, work_factor=10)
    return out.getvalue()


def decrypt(data: bytes, key: str = KEY) -> bytes:
    out = io.BytesIO()
    age.decrypt_stream(io.BytesIO(data), out, key)
    return out.getvalue()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("model") / "vgg.keras"
    model = randomize_weights(small_vgg(), seed=3)
    zero_filters(model, ZEROED)
    model.save(path)
    return path.read_bytes()


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where decrypted plaintext may live during a run; must be empty afterwards."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setenv(SCRATCH_ENV, str(folder))
    return folder


def prune(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = prune_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_log(path: Path) -> dict[str, Any]:
    return decode_message(path.read_text())


def check_success(
    s3: Any, output_key: str, log: Path, *, encrypted: bool, secrets: list[str]
) -> dict[str, Any]:
    """The stored model, its report object and the termination log agree; returns the
    report. `secrets` must appear nowhere in what the run left."""
    stored = s3.get(output_key)
    assert stored.startswith(AGE_MAGIC) == encrypted
    report_bytes = s3.get(f"{output_key}.report.json")
    report = json.loads(report_bytes)
    expected_output = {"uri": s3.uri(output_key), "sha256": sha256(stored), "bytes": len(stored)}
    assert report["output"] == expected_output
    head = s3.client.head_object(Bucket=s3.bucket, Key=output_key)
    assert head["Metadata"] == {"sha256": sha256(stored), "size": str(len(stored))}

    message = read_log(log)
    assert message["status"] == "Succeeded"
    assert message["layers"] == [
        {key: row[key] for key in ("name", "before", "after")} for row in report["layers"]
    ]
    assert message["params"] == [report["params"]["before"], report["params"]["after"]]
    assert message["output"] == expected_output
    assert message["reportUri"] == s3.uri(f"{output_key}.report.json")
    after = {row["name"]: row["after"] for row in report["layers"]}
    assert (after["conv2"], after["fc1"]) == (16, 16)  # the zeroed filters went
    for secret in secrets:
        assert secret.encode() not in report_bytes
        assert secret not in log.read_text()
    return report


def check_failure(log: Path, reason: str) -> None:
    message = read_log(log)
    assert (message["status"], message["reason"]) == ("Failed", reason)


def pruned_filters(model_data: bytes, tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "check.keras"
    path.write_bytes(model_data)
    model = keras.saving.load_model(path, compile=False)
    path.unlink()
    return {
        layer.name: layer.filters if hasattr(layer, "filters") else layer.units
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
    }


# ---------------------------------------------------------------- successful runs


def test_plain_local_to_encrypted_s3_with_key_from_environment(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path, monkeypatch, capsys
) -> None:
    model = tmp_path / "vgg.keras"
    model.write_bytes(model_bytes)
    log = tmp_path / "termination-log"
    monkeypatch.setenv("PRUNEJOB_KEY", KEY)
    argv = ["-m", str(model), "-o", s3.uri("out/vgg.keras.age"), "-pth", THRESHOLD]
    argv += ["--s3-endpoint", s3.endpoint, "--termination-log", str(log)]
    code, out, err = prune(argv, capsys)
    assert code == 0, err
    report = check_success(s3, "out/vgg.keras.age", log, encrypted=True, secrets=[KEY])
    assert KEY not in out + err
    # The object is the pruned model, encrypted with the key from the environment.
    after = {row["name"]: row["after"] for row in report["layers"]}
    assert pruned_filters(decrypt(s3.get("out/vgg.keras.age")), tmp_path) == after
    assert sorted(s3.object_keys()) == ["out/vgg.keras.age", "out/vgg.keras.age.report.json"]
    assert list(scratch.iterdir()) == []


def test_one_s3_client_per_run(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path, monkeypatch, capsys
) -> None:
    """Existence checks, HEAD, download, upload and the report PUT share one client, and
    the no-overwrite rule of the model's upload does not stick to it: an old report
    next to a new output is still replaced."""
    s3.client.put_object(Bucket=s3.bucket, Key="in/vgg.keras", Body=model_bytes)
    s3.client.put_object(Bucket=s3.bucket, Key="out/vgg.keras.report.json", Body=b"old")
    made: list[object] = []
    real_make_client = s3_module.make_client

    def counting_make_client(options: s3_module.S3Options) -> object:
        made.append(options)
        return real_make_client(options)

    monkeypatch.setattr(s3_module, "make_client", counting_make_client)
    log = tmp_path / "termination-log"
    argv = ["-m", s3.uri("in/vgg.keras"), "-o", s3.uri("out/vgg.keras"), "-pth", THRESHOLD]
    argv += ["--s3-endpoint", s3.endpoint, "--termination-log", str(log)]
    code, _, err = prune(argv, capsys)
    assert code == 0, err
    check_success(s3, "out/vgg.keras", log, encrypted=False, secrets=[])
    assert len(made) == 1


def test_encrypted_s3_to_encrypted_s3_as_a_subprocess_with_key_file(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path
) -> None:
    """The way the operator's pod runs it: console script, S3 URIs, key in a file."""
    s3.client.put_object(Bucket=s3.bucket, Key="in/vgg.keras.age", Body=encrypt(model_bytes))
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")  # a trailing newline, as `echo` writes it
    log = tmp_path / "termination-log"
    argv = ["-m", s3.uri("in/vgg.keras.age"), "-o", s3.uri("out/vgg.keras.age")]
    argv += ["--key-file", str(key_file), "--s3-endpoint", s3.endpoint, "-pth", THRESHOLD]
    argv += ["--termination-log", str(log)]
    done = subprocess.run(
        [str(SCRIPTS / "prunejob"), "prune", *argv],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check_success(s3, "out/vgg.keras.age", log, encrypted=True, secrets=[KEY])
    assert KEY not in done.stdout + done.stderr
    assert "fetching" in done.stderr and "publishing" in done.stderr  # progress on stderr
    assert list(scratch.iterdir()) == []


def test_existing_output_needs_overwrite_and_is_untouched_without_it(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path, capsys
) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="in/vgg.keras", Body=model_bytes)
    s3.client.put_object(Bucket=s3.bucket, Key="out/vgg.keras", Body=b"an earlier result")
    log = tmp_path / "termination-log"
    argv = ["-m", s3.uri("in/vgg.keras"), "-o", s3.uri("out/vgg.keras"), "-pth", THRESHOLD]
    argv += ["--s3-endpoint", s3.endpoint, "--termination-log", str(log)]
    code, _, err = prune(argv, capsys)
    assert code == 11, err
    assert "already exists; pass --overwrite" in err
    check_failure(log, "OutputExists")
    assert s3.get("out/vgg.keras") == b"an earlier result"
    assert "loading" not in err  # refused before any slow work

    # With --overwrite, a plain (no key) S3 output replaces it, with its report.
    code, _, err = prune([*argv, "--overwrite"], capsys)
    assert code == 0, err
    check_success(s3, "out/vgg.keras", log, encrypted=False, secrets=[])
    assert s3.get("out/vgg.keras").startswith(b"PK\x03\x04")


def test_owner_replaces_its_own_output_and_nobody_elses(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path, capsys
) -> None:
    """A retried worker (--owner, as the operator passes it) may replace the output an
    earlier attempt of the same job published; another owner still needs --overwrite."""
    s3.client.put_object(Bucket=s3.bucket, Key="in/vgg.keras", Body=model_bytes)
    log = tmp_path / "termination-log"
    call = WorkerCall(
        model=s3.uri("in/vgg.keras"),
        output=s3.uri("out/vgg.keras"),
        settings=PruneSettings(),
        owner="default/vgg-job",
        s3_endpoint=s3.endpoint,
        termination_log=str(log),
    )
    assert parse_request(call.argv(), "prunejob prune").owner == "default/vgg-job"
    code, _, err = prune(call.argv(), capsys)
    assert code == 0, err
    head = s3.client.head_object(Bucket=s3.bucket, Key="out/vgg.keras")
    assert head["Metadata"][s3_module.OWNER_METADATA] == "default/vgg-job"
    first = s3.get("out/vgg.keras")

    code, _, err = prune(call.argv(), capsys)  # the same job again: its own output
    assert code == 0, err
    assert read_log(log)["status"] == "Succeeded"
    head = s3.client.head_object(Bucket=s3.bucket, Key="out/vgg.keras")
    assert head["Metadata"] == {
        "sha256": sha256(s3.get("out/vgg.keras")),
        "size": str(len(s3.get("out/vgg.keras"))),
        s3_module.OWNER_METADATA: "default/vgg-job",
    }

    other = ["-m", s3.uri("in/vgg.keras"), "-o", s3.uri("out/vgg.keras"), "--owner", "x/y"]
    code, _, err = prune([*other, "--s3-endpoint", s3.endpoint], capsys)
    assert code == 11, err
    assert "published by owner 'default/vgg-job'" in err.splitlines()[-1]
    assert "loading" not in err  # refused before any slow work
    assert s3.get("out/vgg.keras") == first  # the same bytes: pruning is deterministic


def test_local_output_exists_without_overwrite(model_bytes: bytes, tmp_path: Path, capsys) -> None:
    model, output = tmp_path / "vgg.keras", tmp_path / "out.keras"
    model.write_bytes(model_bytes)
    output.write_bytes(b"keep me")
    code, _, err = prune(["-m", str(model), "-o", str(output)], capsys)
    assert code == 11
    assert output.read_bytes() == b"keep me"
    code, _, err = prune(["-m", str(model), "-o", str(output), "--overwrite"], capsys)
    assert code == 0, err
    assert output.read_bytes().startswith(b"PK\x03\x04")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.keras", "vgg.keras"]


# ---------------------------------------------------------------- failures


def test_encrypted_input_without_key_is_key_required(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path, capsys
) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="in/vgg.keras.age", Body=encrypt(model_bytes))
    log = tmp_path / "termination-log"
    argv = ["-m", s3.uri("in/vgg.keras.age"), "-o", s3.uri("out/vgg.keras")]
    argv += ["--s3-endpoint", s3.endpoint, "--termination-log", str(log)]
    code, _, err = prune(argv, capsys)
    assert code == 7, err
    assert "PRUNEJOB_KEY" in err.splitlines()[-1]
    check_failure(log, "KeyRequired")
    assert s3.object_keys() == ["in/vgg.keras.age"]
    assert list(scratch.iterdir()) == []


def test_wrong_key_is_decryption_failed_and_writes_nothing(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path, capsys
) -> None:
    s3.client.put_object(
        Bucket=s3.bucket, Key="in/vgg.keras.age", Body=encrypt(model_bytes, "the right key")
    )
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    log = tmp_path / "termination-log"
    argv = ["-m", s3.uri("in/vgg.keras.age"), "-o", s3.uri("out/vgg.keras.age")]
    argv += ["--key-file", str(key_file), "--s3-endpoint", s3.endpoint]
    argv += ["--termination-log", str(log)]
    code, out, err = prune(argv, capsys)
    assert code == 6, err
    check_failure(log, "DecryptionFailed")
    assert KEY not in out + err + log.read_text()
    assert s3.object_keys() == ["in/vgg.keras.age"]  # no output, no report
    assert s3.pending_uploads() == []
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    ("model_uri", "output_uri", "code", "reason"),
    [
        ("s3://{bucket}/in/missing.keras", "s3://{bucket}/out/m.keras", 3, "ModelNotFound"),
        ("s3://no-such-bucket-4d1e/in/m.keras", "s3://{bucket}/out/m.keras", 8, "BucketNotFound"),
        ("s3://{bucket}/in/missing.keras", "s3://no-such-bucket-4d1e/m.keras", 8, "BucketNotFound"),
        ("s3:/{bucket}/in/m.keras", "s3://{bucket}/out/m.keras", 2, "InvalidArgument"),
        ("s3://{bucket}/in/m.keras", "s3://{bucket}/out/m.pb", 2, "InvalidArgument"),
    ],
)
def test_s3_errors_have_their_exit_code_and_reason(
    s3, tmp_path: Path, capsys, model_uri: str, output_uri: str, code: int, reason: str
) -> None:
    log = tmp_path / "termination-log"
    argv = ["-m", model_uri.format(bucket=s3.bucket), "-o", output_uri.format(bucket=s3.bucket)]
    argv += ["--s3-endpoint", s3.endpoint, "--termination-log", str(log)]
    got, _, err = prune(argv, capsys)
    assert got == code, err
    assert len(err.splitlines()) <= 2 and err.splitlines()[-1].startswith("prunejob: error: ")
    check_failure(log, reason)
    assert s3.object_keys() == []


def test_arguments_that_do_not_parse_still_reach_the_termination_log(
    tmp_path: Path, capsys
) -> None:
    log = tmp_path / "termination-log"
    code, _, _ = prune(
        ["-m", "m.keras", "-o", "o.keras", "-n", "foo", f"--termination-log={log}"], capsys
    )
    assert code == 2
    check_failure(log, "InvalidArgument")
    assert "-n/--normalizer" in read_log(log)["message"]


def test_sigterm_cleans_up_and_reports_interrupted(
    s3, model_bytes: bytes, tmp_path: Path, scratch: Path
) -> None:
    """A pod being deleted: the run stops, the decrypted model is removed, no output
    appears, and the termination log says Interrupted."""
    s3.client.put_object(Bucket=s3.bucket, Key="in/vgg.keras.age", Body=encrypt(model_bytes))
    log = tmp_path / "termination-log"
    argv = ["-m", s3.uri("in/vgg.keras.age"), "-o", s3.uri("out/vgg.keras.age")]
    argv += ["--s3-endpoint", s3.endpoint, "--termination-log", str(log)]
    child = subprocess.Popen(
        [str(SCRIPTS / "prunejob"), "prune", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PRUNEJOB_KEY": KEY},
    )
    assert child.stderr is not None
    for line in child.stderr:  # wait until the plaintext exists (decrypted, not loaded)
        if "fetching" in line and "done" in line:
            break
    assert any(scratch.iterdir())
    child.send_signal(signal.SIGTERM)
    rest = child.stderr.read()
    assert child.wait(timeout=60) == 128 + signal.SIGTERM, rest
    check_failure(log, "Interrupted")
    assert list(scratch.iterdir()) == []
    assert s3.object_keys() == ["in/vgg.keras.age"]


def test_key_sources_in_order_and_never_in_a_request_repr(tmp_path: Path, monkeypatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from the file\n")
    base = ["-m", "s3://bucket/in/m.keras.age", "-o", "s3://bucket/out/m.keras.age"]
    monkeypatch.setenv("PRUNEJOB_KEY", KEY)
    from_env = parse_request([*base, "-k", ""], "prunejob prune")  # TAO's "no key"
    assert from_env.key == KEY
    assert KEY not in repr(from_env)
    assert parse_request([*base, "--key-file", str(key_file)], "p").key == "from the file"
    both = [*base, "-k", "on the command line", "--key-file", str(key_file)]
    assert parse_request(both, "p").key == "on the command line"
    monkeypatch.delenv("PRUNEJOB_KEY")
    assert parse_request(base, "p").key is None
