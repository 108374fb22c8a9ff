"""Benchmark: the worker path for ResNet50, encrypted S3 -> prune -> encrypted S3.

    python bench/pipeline_bench.py [--threshold 0.5] [--model resnet50]

Runs against moto in server mode (a real HTTP S3 endpoint on 127.0.0.1):
1. build the keras.applications model (weights=None) and save it as .keras (setup);
2. encrypt it with age and upload it (publish_model)                -> "encrypt+upload input";
3. download and decrypt it to private tmpfs (fetch_model)           -> "download+decrypt";
4. `prunejob prune` on local plain files, in a fresh process        -> "prune (local files)";
5. encrypt the pruned model and upload it (publish_model)           -> "encrypt+upload output";
6. `prunejob prune -m s3://... -o s3://... --key-file ... --s3-endpoint ...`, fresh
   process, the way the operator's pod runs it                      -> "prune (S3, encrypted)".
The S3+crypto overhead is (6) - (4), compared with (3) + (5) and with (4) itself;
the issue's expectation is that it is small next to pruning.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

KEY = "pipeline benchmark passphrase"
BUCKET = "models"
PRUNEJOB = [sys.executable, "-m", "prunejob"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on port {port} within {timeout} s")


def build_model(name: str, path: Path) -> None:
    """Build and save in a child process, so this process stays free of TensorFlow."""
    code = (
        "import sys, keras; "
        f"model = getattr(keras.applications, {name!r})(weights=None); "
        "model.save(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def timed(label: str, timings: dict[str, float], action):  # type: ignore[no-untyped-def]
    print(f"{label}...", file=sys.stderr)
    start = time.perf_counter()
    result = action()
    timings[label] = round(time.perf_counter() - start, 3)
    return result


def prune_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*PRUNEJOB, "prune", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"prunejob prune exited {done.returncode}: {' | '.join(tail)}")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ResNet50", help="a keras.applications name")
    parser.add_argument("--threshold", default="0.5", help="-pth for the prune runs")
    args = parser.parse_args()

    from pruner.io import transfer
    from pruner.io.locations import parse_uri
    from pruner.io.s3 import S3Options, S3Store

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1"
    )
    port = free_port()
    # moto in its own process, as S3 would be: in-process it would share our GIL.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    endpoint = f"http://127.0.0.1:{port}"
    store = S3Store(S3Options(endpoint_url=endpoint))
    store.client.create_bucket(Bucket=BUCKET)
    timings: dict[str, float] = {}
    failure = None
    try:
        with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as work_dir:
            work = Path(work_dir)
            model = work / f"{args.model.lower()}.keras"
            key_file = work / "key.txt"
            key_file.write_text(KEY)
            timed("build+save model (setup)", timings, lambda: build_model(args.model, model))
            model_bytes = model.stat().st_size
            source_uri = f"s3://{BUCKET}/in/{model.name}.age"
            source = parse_uri(source_uri)
            uploaded = timed(
                "encrypt+upload input",
                timings,
                lambda: transfer.publish_model(model, source, KEY, store, overwrite=True),
            )

            def download_and_decrypt() -> int:
                with transfer.fetch_model(source, KEY, store) as plain:
                    return plain.stat().st_size

            timed("download+decrypt", timings, download_and_decrypt)
            env = {**os.environ, "PRUNEJOB_KEY": ""}
            env.pop("PRUNEJOB_KEY")
            pruned = work / "pruned.keras"
            timed(
                "prune (local files)",
                timings,
                lambda: prune_command(
                    ["-m", str(model), "-o", str(pruned), "-pth", args.threshold], env
                ),
            )
            timed(
                "encrypt+upload output",
                timings,
                lambda: transfer.publish_model(
                    pruned,
                    parse_uri(f"s3://{BUCKET}/out/direct.keras.age"),
                    KEY,
                    store,
                    overwrite=True,
                ),
            )
            output_uri = f"s3://{BUCKET}/out/{model.name}.age"
            try:
                timed(
                    "prune (S3, encrypted)",
                    timings,
                    lambda: prune_command(
                        [
                            "-m", source_uri,
                            "-o", output_uri,
                            "--key-file", str(key_file),
                            "--s3-endpoint", endpoint,
                            "-pth", args.threshold,
                            "--overwrite",
                        ],
                        env,
                    ),
                )  # fmt: skip
            except RuntimeError as err:
                failure = str(err)
    finally:
        server.terminate()
        server.wait(timeout=30)

    summary: dict[str, object] = {
        "model": args.model,
        "model_bytes": model_bytes,
        "encrypted_bytes": uploaded["bytes"],
        "seconds": timings,
    }
    direct = timings["download+decrypt"] + timings["encrypt+upload output"]
    summary["s3_crypto_seconds_measured_apart"] = round(direct, 3)
    summary["s3_crypto_share_of_local_prune"] = round(direct / timings["prune (local files)"], 3)
    if "prune (S3, encrypted)" in timings:
        overhead = timings["prune (S3, encrypted)"] - timings["prune (local files)"]
        summary["end_to_end_overhead_seconds"] = round(overhead, 3)
        summary["end_to_end_overhead_share"] = round(overhead / timings["prune (local files)"], 3)
    else:
        summary["end_to_end_error"] = failure
    print(json.dumps(summary, indent=2))
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
