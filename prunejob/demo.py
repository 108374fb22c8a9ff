"""`prunejob demo`: the whole system on one machine, end to end.

It starts the local development cluster (the API-server emulator plus the kwok-like
pod runner), an S3 server (moto), and the real operator as a child process; builds
and encrypts a small trained model, uploads it, creates the Secrets and applies
three PruneJobs that differ only in their threshold. The operator starts one Job
per PruneJob, the pod runner runs each pod's real `prunejob prune` command, and
the statuses fill in. Everything started here is stopped again on success, on
failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunejob_contract.arguments import OneLineParser
from prunejob_contract.errors import InvalidArgument
from prunejob_operator import models
from prunejob_operator.crd import render_crd

if TYPE_CHECKING:
    from devcluster.stack import Stack

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

NAMESPACE = "default"
BUCKET = "prunejob-demo"
MODEL_KEY = "models/demo-resnet.keras.age"
KEY_SECRET = "demo-model-key"
S3_SECRET = "demo-s3-credentials"
DEFAULT_THRESHOLDS = (0.2, 0.4, 0.6)
DEMO_IMAGE = "prunejob-worker:demo"  # the pod runner runs the command, not the image
# Not a secret: the demo's models are toy models, and users decrypt the results with it.
DEMO_KEY = "prunejob-demo-passphrase"


class DemoError(Exception):
    """A one-line reason the demo cannot go on."""


@dataclass
class Progress:
    """Timestamped progress lines on stderr."""

    started: float = field(default_factory=time.monotonic)

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="prunejob demo",
        description=(
            "Run a local cluster, S3 and the operator, prune an encrypted model at three "
            "thresholds and show the PruneJobs' statuses."
        ),
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep everything running after the run, until Ctrl-C (use kubectl meanwhile)",
    )
    parser.add_argument(
        "--thresholds",
        default=",".join(str(t) for t in DEFAULT_THRESHOLDS),
        help="comma-separated -pth values, one PruneJob each (default: %(default)s)",
    )
    parser.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="use this S3-compatible endpoint instead of starting moto (credentials from "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="write the local cluster's kubeconfig here (default: a temporary folder)",
    )
    parser.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        metavar="FILE",
        help="write the final statuses and object locations as JSON",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the PruneJobs"
    )
    args = parser.parse_args(argv)
    try:
        args.thresholds = [float(item) for item in args.thresholds.split(",") if item.strip()]
    except ValueError:
        parser.error(f"--thresholds {args.thresholds!r} must be numbers separated by commas")
    if not args.thresholds or any(t < 0 for t in args.thresholds):
        parser.error("--thresholds needs at least one value, each >= 0")
    return args


def check_dependencies() -> None:
    """Fail early, and without importing anything heavy, when an extra is missing."""
    import importlib.util

    missing = []
    for module, extra in (
        ("keras", "pruner"),
        ("kopf", "operator"),
        ("kubernetes", "operator"),
        ("aiohttp", "devcluster"),
        ("moto", "devcluster"),
    ):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} (prunejob[{extra}])")
    if missing:
        raise DemoError(
            f"the demo needs {', '.join(missing)}: run `uv sync --locked --all-extras` "
            "or `pip install prunejob[dev]`"
        )


def crd_file(directory: Path) -> Path:
    """The PruneJob CRD, generated from the models (works from a wheel as well)."""
    path = directory / "prunejob-crd.yaml"
    path.write_text(render_crd())
    return path


def s3_credentials() -> dict[str, str]:
    # moto accepts any credentials; an external endpoint gets the caller's.
    return {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "demo-access-key"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "demo-secret-key"),
    }


def s3_client(endpoint: str) -> Any:
    import boto3  # lazy: heavy, and only needed once the demo runs

    creds = s3_credentials()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
    )


def upload_encrypted_model(
    endpoint: str, passphrase: str, workdir: Path, progress: Progress
) -> str:
    # Lazy: the model needs TensorFlow (the pruner extra), which --help must not load.
    from prunejob.demo_model import build_demo_model, train_demo_model
    from pruner.io.age import encrypt_stream

    progress("building and training the demo model (ResNet-style, residual adds, depthwise)")
    model = train_demo_model(build_demo_model())
    plain = workdir / "demo-resnet.keras"
    model.save(plain)
    encrypted = workdir / "demo-resnet.keras.age"
    with plain.open("rb") as src, encrypted.open("wb") as dst:
        encrypt_stream(src, dst, passphrase)
    plain.unlink()
    client = s3_client(endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(encrypted), BUCKET, MODEL_KEY)
    uri = f"s3://{BUCKET}/{MODEL_KEY}"
    progress(
        f"model: {model.count_params():,} params, encrypted ({encrypted.stat().st_size:,} bytes) "
        f"and uploaded to {uri}"
    )
    return uri


@contextlib.contextmanager
def local_system(args: argparse.Namespace, workdir: Path, progress: Progress) -> Iterator[Stack]:
    """S3 (moto, or --s3-endpoint), the local cluster and `prunejob operator`, all stopped
    again when the block ends."""
    # Lazy, after check_dependencies(): the stack needs the devcluster extra.
    from devcluster.cluster import LocalCluster
    from devcluster.stack import DISPATCHER_OPERATOR_COMMAND, StackError, dev_stack

    cluster = LocalCluster(crd_paths=[crd_file(workdir)], kubeconfig_path=args.kubeconfig)
    try:
        with dev_stack(
            workdir=workdir,
            cluster=cluster,
            s3_endpoint=args.s3_endpoint,
            operator_args=("--all-namespaces", "--worker-image", DEMO_IMAGE),
            operator_command=DISPATCHER_OPERATOR_COMMAND,
            progress=progress,
        ) as running:
            yield running
    except StackError as err:  # the operator died while the demo ran
        raise DemoError(str(err)) from err


def prunejob_manifest(name: str, model_uri: str, threshold: float, endpoint: str) -> dict:
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "prunejob-demo"}},
        "spec": {
            "model": model_uri,
            "output": f"s3://{BUCKET}/pruned/{name}.keras.age",
            "keySecretRef": {"name": KEY_SECRET, "key": "passphrase"},
            "s3": {
                "endpoint": endpoint,
                "region": "us-east-1",
                "credentialsSecretRef": {"name": S3_SECRET},
            },
            # A small model: granularity 4 so that each threshold step shows.
            "pruning": {"threshold": threshold, "granularity": 4, "minNumFilters": 8},
            "overwrite": True,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
        },
    }


def create_secrets(core: Any, passphrase: str) -> None:
    from kubernetes import client  # lazy: the operator extra, checked by check_dependencies()

    for name, data in (
        (KEY_SECRET, {"passphrase": passphrase}),
        (S3_SECRET, s3_credentials()),
    ):
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=NAMESPACE), string_data=data
        )
        core.create_namespaced_secret(NAMESPACE, body)


def job_name_for(threshold: float) -> str:
    return "demo-pth-" + f"{threshold:g}".replace(".", "-")


def wait_for_prunejobs(
    custom: Any, names: list[str], timeout: float, progress: Progress
) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    statuses: dict[str, dict] = {}
    while True:
        for name in names:
            obj = custom.get_namespaced_custom_object(
                models.GROUP, models.VERSION, NAMESPACE, models.PLURAL, name
            )
            status = obj.get("status") or {}
            statuses[name] = status
            phase = status.get("phase", "-")
            reason = status.get("reason")
            label = phase + (f" ({reason})" if reason and reason != phase else "")
            if status.get("phase") and seen.get(name) != label:
                seen[name] = label
                progress(f"prunejob/{name}: {label}")
        if all(s.get("phase") in ("Succeeded", "Failed") for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            raise DemoError(
                f"PruneJobs not finished after {timeout:.0f}s: "
                + ", ".join(f"{n}={seen.get(n)}" for n in names)
            )
        time.sleep(0.5)


def summary_table(statuses: dict[str, dict], thresholds: dict[str, float]) -> str:
    rows = [("NAME", "THRESHOLD", "PHASE", "RATIO", "FILTERS", "PARAMS")]
    for name, status in statuses.items():
        filters = status.get("filters") or {}
        params = status.get("params") or {}
        ratio = status.get("pruningRatio")
        rows.append(
            (
                name,
                f"{thresholds[name]:g}",
                status.get("phase", "-"),
                f"{ratio:.3f}" if isinstance(ratio, int | float) else "-",
                f"{filters.get('before', '-')} -> {filters.get('after', '-')}",
                f"{params.get('before', '-')} -> {params.get('after', '-')}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def check_outcome(statuses: dict[str, dict], thresholds: dict[str, float]) -> list[str]:
    """What went wrong, if anything: failures, or filters not falling as thresholds rise."""
    problems = [
        f"{name}: {s.get('phase')} {s.get('reason', '')}: {s.get('message', '')}".strip()
        for name, s in statuses.items()
        if s.get("phase") != "Succeeded"
    ]
    if problems:
        return problems
    ordered = sorted(statuses, key=lambda name: thresholds[name])
    afters = [statuses[name]["filters"]["after"] for name in ordered]
    if any(later > earlier for earlier, later in itertools.pairwise(afters)):
        problems.append(f"filters after pruning do not fall as the threshold rises: {afters}")
    return problems


def run_demo(args: argparse.Namespace, progress: Progress) -> int:
    import yaml

    check_dependencies()
    # Lazy, after the check: devcluster needs its extra, the Kubernetes client the operator's.
    from kubernetes import client

    from devcluster.stack import interrupt_on_sigterm

    passphrase = DEMO_KEY
    # SIGTERM (a supervisor, a test's timeout) cleans up like Ctrl-C does.
    with interrupt_on_sigterm(), contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prunejob-demo-")))
        running = stack.enter_context(local_system(args, workdir, progress))
        endpoint, cluster = running.s3_endpoint, running.cluster
        assert endpoint is not None
        model_uri = upload_encrypted_model(endpoint, passphrase, workdir, progress)

        api = cluster.api_client()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        create_secrets(core, passphrase)
        progress(f"created Secrets {KEY_SECRET} and {S3_SECRET} in namespace {NAMESPACE}")
        thresholds = {job_name_for(t): t for t in args.thresholds}
        for name, threshold in thresholds.items():
            custom.create_namespaced_custom_object(
                models.GROUP,
                models.VERSION,
                NAMESPACE,
                models.PLURAL,
                prunejob_manifest(name, model_uri, threshold, endpoint),
            )
            progress(f"applied prunejob/{name} (-pth {threshold:g})")
        statuses = wait_for_prunejobs(custom, list(thresholds), args.timeout, progress)

        print(summary_table(statuses, thresholds))
        first = sorted(statuses, key=lambda name: thresholds[name])[len(statuses) // 2]
        print(f"\nstatus of prunejob/{first}:")
        print(yaml.safe_dump(statuses[first], sort_keys=False, width=100), end="")
        print("\npruned models (age-encrypted with the demo key):")
        for status in statuses.values():
            output = status.get("output") or {}
            if output:
                print(f"  {output.get('uri')}  {output.get('bytes', '?')} bytes")
        if args.json_path:
            args.json_path.write_text(
                json.dumps(
                    {
                        "s3Endpoint": endpoint,
                        "thresholds": thresholds,
                        "statuses": statuses,
                    },
                    indent=2,
                )
            )
        problems = check_outcome(statuses, thresholds)
        if args.keep:
            print(
                f"\nkeeping everything up; try: kubectl --kubeconfig {cluster.kubeconfig_path} "
                "get pj -o yaml\nCtrl-C stops.",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause() if hasattr(signal, "pause") else time.sleep(1e9)
        progress("shutting down")
    if problems:
        for problem in problems:
            print(f"prunejob demo: {problem}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except InvalidArgument as err:
        print(f"prunejob demo: error: {err}", file=sys.stderr)
        return err.exit_code
    progress = Progress()
    try:
        return run_demo(args, progress)
    except DemoError as err:
        print(f"prunejob demo: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prunejob demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
