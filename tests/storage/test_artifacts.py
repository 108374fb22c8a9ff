"""The worker's artifact path: model_input / publish_output / reports / termination log,
against a real S3 endpoint (moto server) and real files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from prunejob_contract.errors import KeyRequired, OutputExists
from prunejob_contract.termination import decode_message, failure_message
from pruner import age, artifacts, storage
from pruner.age import WrongKey

KEY = "artifact passphrase"
MiB = 1024 * 1024
FAST = 10  # scrypt work factor for outputs here; the default (18) is tested once
KERAS = b"PK\x03\x04" + os.urandom(200_000)  # a zip-looking model body
H5 = b"\x89HDF\r\n\x1a\n" + os.urandom(1000)


def encrypted(data: bytes, key: str = KEY) -> bytes:
    out = io.BytesIO()
    age.encrypt_stream(io.BytesIO(data), out, key, work_factor=10)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.timeout(60)
def test_plain_local_to_encrypted_s3(s3, tmp_path: Path) -> None:
    (tmp_path / "pruned.keras").write_bytes(KERAS)
    result = artifacts.publish_output(
        tmp_path / "pruned.keras", s3.uri("out/model.keras.age"), KEY, s3.options, overwrite=False
    )
    stored = s3.get("out/model.keras.age")
    assert stored.split(b"\n")[1].endswith(b" 18")  # age's default scrypt work factor
    assert result == {
        "uri": s3.uri("out/model.keras.age"),
        "sha256": sha256(stored),
        "bytes": len(stored),
    }
    head = s3.client.head_object(Bucket=s3.bucket, Key="out/model.keras.age")
    assert head["Metadata"] == {"sha256": sha256(stored), "size": str(len(stored))}
    with artifacts.model_input(s3.uri("out/model.keras.age"), KEY, s3.options) as plain:
        assert plain.read_bytes() == KERAS


@pytest.mark.timeout(60)
def test_encrypted_s3_to_encrypted_s3(s3) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="in/resnet.h5.age", Body=encrypted(H5))
    with artifacts.model_input(s3.uri("in/resnet.h5.age"), KEY, s3.options) as plain:
        assert plain.suffix == ".h5"  # Keras picks the format from the extension
        assert plain.read_bytes() == H5
        mode = plain.stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(plain.parent.stat().st_mode) == 0o700
        result = artifacts.publish_output(
            plain, s3.uri("out/resnet.h5.age"), KEY, s3.options, overwrite=False, work_factor=FAST
        )
    assert not plain.exists() and not plain.parent.exists()  # plaintext gone on exit
    stored = s3.get("out/resnet.h5.age")
    assert result["sha256"] == sha256(stored)
    assert stored != encrypted(H5)  # re-encrypted with a fresh file key and nonce
    with artifacts.model_input(s3.uri("out/resnet.h5.age"), KEY, s3.options) as again:
        assert again.read_bytes() == H5


@pytest.mark.timeout(60)
def test_multipart_encrypted_output(s3, tmp_path: Path) -> None:
    data = os.urandom(11 * MiB)
    (tmp_path / "big.keras").write_bytes(data)
    result = artifacts.publish_output(
        tmp_path / "big.keras",
        s3.uri("big.keras.age"),
        KEY,
        s3.options,
        overwrite=False,
        work_factor=FAST,
    )
    head = s3.client.head_object(Bucket=s3.bucket, Key="big.keras.age")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == result["bytes"]
    with artifacts.model_input(s3.uri("big.keras.age"), KEY, s3.options) as plain:
        assert plain.read_bytes() == data


def test_plain_s3_input_keeps_or_guesses_the_extension(s3) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="model.keras", Body=KERAS)
    s3.client.put_object(Bucket=s3.bucket, Key="no-extension", Body=H5)
    with artifacts.model_input(s3.uri("model.keras"), None, s3.options) as plain:
        assert plain.suffix == ".keras" and plain.read_bytes() == KERAS
    with artifacts.model_input(s3.uri("no-extension"), None, s3.options) as plain:
        assert plain.suffix == ".h5"  # sniffed from the HDF5 signature


def test_encrypted_input_needs_a_key(s3, tmp_path: Path) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="m.keras.age", Body=encrypted(KERAS))
    with (
        pytest.raises(KeyRequired) as caught,
        artifacts.model_input(s3.uri("m.keras.age"), None, s3.options),
    ):
        pass
    assert "--key-file" in str(caught.value) and caught.value.exit_code == 7
    (tmp_path / "m.keras.age").write_bytes(encrypted(KERAS))
    with (
        pytest.raises(KeyRequired),
        artifacts.model_input(str(tmp_path / "m.keras.age"), None, s3.options),
    ):
        pass


def scratch_entries(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.name.startswith("prunejob-")}


def test_plaintext_removed_on_every_exit_path(s3, tmp_path: Path, monkeypatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv(artifacts.SCRATCH_ENV, str(scratch))
    s3.client.put_object(Bucket=s3.bucket, Key="m.keras.age", Body=encrypted(KERAS))
    # The caller fails while using the model.
    with (
        pytest.raises(RuntimeError),
        artifacts.model_input(s3.uri("m.keras.age"), KEY, s3.options) as plain,
    ):
        assert plain.parent.parent == scratch
        (plain.parent / "keras-extracted-weights.h5").write_bytes(b"w")  # as Keras may do
        raise RuntimeError("pruning failed")
    # Decryption fails: wrong key.
    with (
        pytest.raises(WrongKey),
        artifacts.model_input(s3.uri("m.keras.age"), "wrong key", s3.options),
    ):
        pass
    assert scratch_entries(scratch) == set()


@pytest.mark.timeout(60)
def test_plaintext_removed_when_the_process_is_terminated(tmp_path: Path) -> None:
    """SIGTERM (a pod being deleted) while the model is in use still cleans up."""
    (tmp_path / "m.keras.age").write_bytes(encrypted(KERAS))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = (
        "import sys, time\n"
        "from pruner import artifacts, storage\n"
        "with artifacts.model_input(sys.argv[1], sys.argv[2], storage.S3Options()) as p:\n"
        "    print(p, flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "m.keras.age"), KEY],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, artifacts.SCRATCH_ENV: str(scratch)},
    )
    assert child.stdout is not None
    plain = Path(child.stdout.readline().strip())
    assert plain.read_bytes() == KERAS
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert not plain.exists()
    assert scratch_entries(scratch) == set()


def test_local_encrypted_input_and_local_outputs(tmp_path: Path) -> None:
    (tmp_path / "in.keras.age").write_bytes(encrypted(KERAS))
    options = storage.S3Options()
    with artifacts.model_input(str(tmp_path / "in.keras.age"), KEY, options) as plain:
        assert plain.suffix == ".keras"
        result = artifacts.publish_output(
            plain, str(tmp_path / "out.keras.age"), KEY, options, overwrite=False, work_factor=FAST
        )
        plain_out = artifacts.publish_output(
            plain, str(tmp_path / "out.keras"), None, options, overwrite=False
        )
    stored = (tmp_path / "out.keras.age").read_bytes()
    assert result == {
        "uri": str(tmp_path / "out.keras.age"),
        "sha256": sha256(stored),
        "bytes": len(stored),
    }
    assert plain_out["sha256"] == sha256(KERAS)
    assert (tmp_path / "out.keras").read_bytes() == KERAS
    # A plaintext local input is used in place: nothing copied, nothing removed.
    with artifacts.model_input(str(tmp_path / "out.keras"), None, options) as same:
        assert same == tmp_path / "out.keras"
    assert (tmp_path / "out.keras").exists()


def test_local_outputs_create_their_directory(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(KERAS)
    out = tmp_path / "new" / "dir" / "out.keras.age"
    artifacts.publish_output(
        tmp_path / "model.keras",
        str(out),
        KEY,
        storage.S3Options(),
        overwrite=False,
        work_factor=FAST,
    )
    assert age.is_encrypted(out.read_bytes())
    artifacts.publish_json({"a": 1}, str(tmp_path / "reports" / "r.json"), storage.S3Options())
    assert json.loads((tmp_path / "reports" / "r.json").read_text()) == {"a": 1}


def test_local_output_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(KERAS)
    (tmp_path / "out.keras").write_bytes(b"old")
    with pytest.raises(OutputExists):
        artifacts.publish_output(
            tmp_path / "model.keras",
            str(tmp_path / "out.keras"),
            None,
            storage.S3Options(),
            overwrite=False,
        )
    assert (tmp_path / "out.keras").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "out.keras"]


def test_s3_output_is_not_overwritten(s3, tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(KERAS)
    s3.client.put_object(Bucket=s3.bucket, Key="out.keras", Body=b"old")
    with pytest.raises(OutputExists) as caught:
        artifacts.publish_output(
            tmp_path / "model.keras",
            s3.uri("out.keras"),
            KEY,
            s3.options,
            overwrite=False,
            work_factor=FAST,
        )
    assert caught.value.exit_code == 11
    assert s3.get("out.keras") == b"old"
    artifacts.publish_output(
        tmp_path / "model.keras", s3.uri("out.keras"), None, s3.options, overwrite=True
    )
    assert s3.get("out.keras") == KERAS


def test_reports_next_to_the_output(s3, tmp_path: Path) -> None:
    report = {"filters": {"before": 10, "after": 5}, "layers": [{"name": "c", "before": 10}]}
    uri = artifacts.report_uri_for(s3.uri("out/model.keras.age"))
    assert uri == s3.uri("out/model.keras.age.report.json")
    assert artifacts.publish_json(report, uri, s3.options) == uri
    assert json.loads(s3.get("out/model.keras.age.report.json")) == report
    report["filters"]["after"] = 6
    artifacts.publish_json(report, uri, s3.options)  # reports are replaced by default
    assert json.loads(s3.get("out/model.keras.age.report.json")) == report
    with pytest.raises(OutputExists):
        artifacts.publish_json(report, uri, s3.options, overwrite=False)
    local = str(tmp_path / "report.json")
    artifacts.publish_json(report, local, s3.options)
    assert json.loads(Path(local).read_text()) == report


def test_termination_log(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    text = failure_message("ModelNotFound", "S3 object s3://b/k does not exist")
    artifacts.write_termination_log(str(path), text)
    assert decode_message(path.read_text())["reason"] == "ModelNotFound"
    # Never raises, even where it cannot write.
    artifacts.write_termination_log(str(tmp_path / "missing-dir" / "log"), text)
    artifacts.write_termination_log(None, text)  # default path: skipped unless writable


def test_scratch_prefers_shared_memory_when_it_fits(monkeypatch) -> None:
    monkeypatch.delenv(artifacts.SCRATCH_ENV, raising=False)
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("this machine has no writable /dev/shm")
    assert artifacts.scratch_root(1024) == Path("/dev/shm")
    # Too big for /dev/shm (as in a pod's default 64 MiB): the temp dir instead.
    assert artifacts.scratch_root(1 << 60) != Path("/dev/shm")
    assert artifacts.scratch_root(1, {artifacts.SCRATCH_ENV: "/x"}) == Path("/x")
