"""Tests of the worker's artifact path against a real S3 endpoint (moto) and real files.

The worker's artifact path: fetch_model / publish_model / reports / termination log,
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
from typing import Any

import pytest

from prunejob_contract.errors import KeyRequired, OutputExists
from prunejob_contract.termination import decode_message, failure_message
from pruner.app.request import report_location_for
from pruner.io import age, formats, transfer
from pruner.io.age import WrongKey
from pruner.io.locations import LocalPath, parse_uri
from pruner.io.s3 import S3Store
from pruner.io.scratch import SCRATCH_ENV, scratch_root
from pruner.io.termination_log import write_termination_log

pytestmark = pytest.mark.usefixtures("aws_environment")

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


def publish_encrypted(source: Path, s3: Any, key: str, **options: Any) -> dict[str, Any]:
    """`publish_model` of `source` to the object `key` of the test bucket, encrypted with
    KEY, not overwriting."""
    return transfer.publish_model(
        source, s3.location(key), KEY, s3.store, overwrite=False, **options
    )


@pytest.mark.timeout(60)
def test_plain_local_to_encrypted_s3(s3, tmp_path: Path) -> None:
    (tmp_path / "pruned.keras").write_bytes(KERAS)
    result = publish_encrypted(tmp_path / "pruned.keras", s3, "out/model.keras.age")
    stored = s3.get("out/model.keras.age")
    assert stored.split(b"\n")[1].endswith(b" 18")  # age's default scrypt work factor
    assert result == {
        "uri": s3.uri("out/model.keras.age"),
        "sha256": sha256(stored),
        "bytes": len(stored),
    }
    head = s3.client.head_object(Bucket=s3.bucket, Key="out/model.keras.age")
    assert head["Metadata"] == {"sha256": sha256(stored), "size": str(len(stored))}
    with transfer.fetch_model(s3.location("out/model.keras.age"), KEY, s3.store) as plain:
        assert plain.read_bytes() == KERAS


@pytest.mark.timeout(60)
def test_encrypted_s3_to_encrypted_s3(s3) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="in/resnet.h5.age", Body=encrypted(H5))
    with transfer.fetch_model(s3.location("in/resnet.h5.age"), KEY, s3.store) as plain:
        assert plain.suffix == ".h5"  # Keras picks the format from the extension
        assert plain.read_bytes() == H5
        mode = plain.stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(plain.parent.stat().st_mode) == 0o700
        result = publish_encrypted(plain, s3, "out/resnet.h5.age", work_factor=FAST)
    assert not plain.exists() and not plain.parent.exists()  # plaintext gone on exit
    stored = s3.get("out/resnet.h5.age")
    assert result["sha256"] == sha256(stored)
    assert stored != encrypted(H5)  # re-encrypted with a fresh file key and nonce
    with transfer.fetch_model(s3.location("out/resnet.h5.age"), KEY, s3.store) as again:
        assert again.read_bytes() == H5


@pytest.mark.timeout(60)
def test_multipart_encrypted_output(s3, tmp_path: Path) -> None:
    data = os.urandom(11 * MiB)
    (tmp_path / "big.keras").write_bytes(data)
    result = publish_encrypted(tmp_path / "big.keras", s3, "big.keras.age", work_factor=FAST)
    head = s3.client.head_object(Bucket=s3.bucket, Key="big.keras.age")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == result["bytes"]
    with transfer.fetch_model(s3.location("big.keras.age"), KEY, s3.store) as plain:
        assert plain.read_bytes() == data


def test_plain_s3_input_keeps_or_guesses_the_extension(s3) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="model.keras", Body=KERAS)
    s3.client.put_object(Bucket=s3.bucket, Key="no-extension", Body=H5)
    with transfer.fetch_model(s3.location("model.keras"), None, s3.store) as plain:
        assert plain.suffix == ".keras" and plain.read_bytes() == KERAS
    with transfer.fetch_model(s3.location("no-extension"), None, s3.store) as plain:
        assert plain.suffix == ".h5"  # sniffed from the HDF5 signature


def test_encrypted_input_needs_a_key(s3, tmp_path: Path) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="m.keras.age", Body=encrypted(KERAS))
    with (
        pytest.raises(KeyRequired) as caught,
        transfer.fetch_model(s3.location("m.keras.age"), None, s3.store),
    ):
        pass
    assert "--key-file" in str(caught.value) and caught.value.exit_code == 7
    (tmp_path / "m.keras.age").write_bytes(encrypted(KERAS))
    with (
        pytest.raises(KeyRequired),
        transfer.fetch_model(parse_uri(str(tmp_path / "m.keras.age")), None, s3.store),
    ):
        pass


def scratch_entries(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.name.startswith("prunejob-")}


def test_plaintext_removed_on_every_exit_path(s3, tmp_path: Path, monkeypatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv(SCRATCH_ENV, str(scratch))
    s3.client.put_object(Bucket=s3.bucket, Key="m.keras.age", Body=encrypted(KERAS))
    # The caller fails while using the model.
    with (
        pytest.raises(RuntimeError),
        transfer.fetch_model(s3.location("m.keras.age"), KEY, s3.store) as plain,
    ):
        assert plain.parent.parent == scratch
        (plain.parent / "keras-extracted-weights.h5").write_bytes(b"w")  # as Keras may do
        raise RuntimeError("pruning failed")
    # Decryption fails: wrong key.
    with (
        pytest.raises(WrongKey),
        transfer.fetch_model(s3.location("m.keras.age"), "wrong key", s3.store),
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
        "from pruner.app.signals import sigterm_raises\n"
        "from pruner.io import locations, s3, transfer\n"
        "model = locations.parse_uri(sys.argv[1])\n"
        "with sigterm_raises(), transfer.fetch_model(model, sys.argv[2], s3.S3Store()) as p:\n"
        "    print(p, flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "m.keras.age"), KEY],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, SCRATCH_ENV: str(scratch)},
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
    store = S3Store()
    with transfer.fetch_model(parse_uri(str(tmp_path / "in.keras.age")), KEY, store) as plain:
        assert plain.suffix == ".keras"
        result = transfer.publish_model(
            plain,
            parse_uri(str(tmp_path / "out.keras.age")),
            KEY,
            store,
            overwrite=False,
            work_factor=FAST,
        )
        plain_out = transfer.publish_model(
            plain, parse_uri(str(tmp_path / "out.keras")), None, store, overwrite=False
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
    with transfer.fetch_model(parse_uri(str(tmp_path / "out.keras")), None, store) as same:
        assert same == tmp_path / "out.keras"
    assert (tmp_path / "out.keras").exists()


def test_local_outputs_create_their_directory(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(KERAS)
    out = tmp_path / "new" / "dir" / "out.keras.age"
    transfer.publish_model(
        tmp_path / "model.keras",
        parse_uri(str(out)),
        KEY,
        S3Store(),
        overwrite=False,
        work_factor=FAST,
    )
    assert formats.is_encrypted(out.read_bytes())
    transfer.publish_json({"a": 1}, parse_uri(str(tmp_path / "reports" / "r.json")), S3Store())
    assert json.loads((tmp_path / "reports" / "r.json").read_text()) == {"a": 1}


def test_publish_json_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "r.json"
    transfer.publish_json({"a": 1}, LocalPath(path), S3Store())
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_local_output_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(KERAS)
    (tmp_path / "out.keras").write_bytes(b"old")
    with pytest.raises(OutputExists):
        transfer.publish_model(
            tmp_path / "model.keras",
            parse_uri(str(tmp_path / "out.keras")),
            None,
            S3Store(),
            overwrite=False,
        )
    assert (tmp_path / "out.keras").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "out.keras"]


def test_s3_output_is_not_overwritten(s3, tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(KERAS)
    s3.client.put_object(Bucket=s3.bucket, Key="out.keras", Body=b"old")
    with pytest.raises(OutputExists) as caught:
        publish_encrypted(tmp_path / "model.keras", s3, "out.keras", work_factor=FAST)
    assert caught.value.exit_code == 11
    assert s3.get("out.keras") == b"old"
    transfer.publish_model(
        tmp_path / "model.keras", s3.location("out.keras"), None, s3.store, overwrite=True
    )
    assert s3.get("out.keras") == KERAS


def test_reports_next_to_the_output(s3, tmp_path: Path) -> None:
    report = {"filters": {"before": 10, "after": 5}, "layers": [{"name": "c", "before": 10}]}
    uri = str(report_location_for(s3.location("out/model.keras.age")))
    assert uri == s3.uri("out/model.keras.age.report.json")
    assert transfer.publish_json(report, parse_uri(uri), s3.store) == uri
    assert json.loads(s3.get("out/model.keras.age.report.json")) == report
    report["filters"]["after"] = 6
    transfer.publish_json(report, parse_uri(uri), s3.store)  # reports are replaced by default
    assert json.loads(s3.get("out/model.keras.age.report.json")) == report
    with pytest.raises(OutputExists):
        transfer.publish_json(report, parse_uri(uri), s3.store, overwrite=False)
    local = str(tmp_path / "report.json")
    transfer.publish_json(report, parse_uri(local), s3.store)
    assert json.loads(Path(local).read_text()) == report


def test_termination_log(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    text = failure_message("ModelNotFound", "S3 object s3://b/k does not exist")
    write_termination_log(str(path), text)
    assert decode_message(path.read_text())["reason"] == "ModelNotFound"
    # Never raises, even where it cannot write.
    write_termination_log(str(tmp_path / "missing-dir" / "log"), text)
    write_termination_log(None, text)  # default path: skipped unless writable


def test_scratch_prefers_shared_memory_when_it_fits(monkeypatch) -> None:
    monkeypatch.delenv(SCRATCH_ENV, raising=False)
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("this machine has no writable /dev/shm")
    assert scratch_root(1024) == Path("/dev/shm")
    # Too big for /dev/shm (as in a pod's default 64 MiB): the temp dir instead.
    assert scratch_root(1 << 60) != Path("/dev/shm")
    assert scratch_root(1, {SCRATCH_ENV: "/x"}) == Path("/x")
