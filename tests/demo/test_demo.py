"""`prunejob demo`, run as a newcomer runs it, then checked from the outside.

The demo uses an S3 server this test owns (moto), so the pruned objects can be
inspected after the demo has shut everything of its own down.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from prunejob.demo import BUCKET, DEMO_KEY
from tests.s3_server import moto_server

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def test_demo_prunes_three_thresholds_end_to_end(s3_endpoint: str, tmp_path: Path) -> None:
    summary_path = tmp_path / "demo.json"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "demo-test",
        "AWS_SECRET_ACCESS_KEY": "demo-test-secret",
        "AWS_REGION": "us-east-1",
    }
    env.pop("KUBECONFIG", None)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "prunejob",
            "demo",
            "--s3-endpoint",
            s3_endpoint,
            "--json",
            str(summary_path),
            "--timeout",
            "240",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "NAME" in completed.stdout and "Succeeded" in completed.stdout

    summary = json.loads(summary_path.read_text())
    statuses: dict[str, dict] = summary["statuses"]
    thresholds: dict[str, float] = summary["thresholds"]
    assert len(statuses) == 3

    import keras

    from pruner.io.age import decrypt_stream

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="demo-test",
        aws_secret_access_key="demo-test-secret",
    )
    for name, status in statuses.items():
        assert status["phase"] == "Succeeded", (name, status)
        uri = status["output"]["uri"]
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        assert bucket == BUCKET
        encrypted = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(encrypted) == status["output"]["bytes"]
        plain = io.BytesIO()
        decrypt_stream(io.BytesIO(encrypted), plain, DEMO_KEY)
        model_path = tmp_path / f"{name}.keras"
        model_path.write_bytes(plain.getvalue())
        model = keras.saving.load_model(model_path)
        assert model.count_params() == status["params"]["after"], name
        assert status["params"]["after"] < status["params"]["before"]
        # Per-layer counts in the status add up to the totals.
        assert sum(layer["after"] for layer in status["layers"]) == status["filters"]["after"]

    by_threshold = sorted(statuses, key=lambda name: thresholds[name])
    afters = [statuses[name]["filters"]["after"] for name in by_threshold]
    assert afters[0] > afters[1] > afters[2], afters
