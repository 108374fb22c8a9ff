"""``python -m devcluster serve``: run the local development cluster until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from devcluster.apiserver.faults import FaultConfig, FaultConfigError
from devcluster.apiserver.resources import CrdError
from devcluster.apiserver.server import ServeError, new_api_server
from devcluster.apiserver.serving import Serving
from devcluster.kubeconfig import write_kubeconfig
from devcluster.runner.podrunner import PodRunner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster",
        description="Local Kubernetes API server and pod runner, for development.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API (and run pods) until interrupted")

    def repeatable(flag: str, metavar: str, what: str) -> None:
        serve.add_argument(
            flag, action="append", default=[], metavar=metavar, help=f"{what} (repeatable)"
        )

    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    repeatable("--crd", "PATH", "CRD YAML file or folder to register")
    serve.add_argument("--kubeconfig", type=Path, help="where to write the kubeconfig")
    serve.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu of the fake node")
    repeatable("--node-label", "KEY=VALUE", "label of the fake node")
    serve.add_argument("--no-pods", action="store_true", help="do not run the pod runner")
    serve.add_argument(
        "--faults",
        metavar="SPEC",
        default="",
        help="inject API faults, e.g. 'all=0.02,slow=0.1': rates of gone, expire, drop, "
        "throttle, error500, error503, timeout, slow (or all); options slow-seconds, "
        "retry-after, stream-seconds",
    )
    serve.add_argument("--fault-seed", type=int, default=0, help="seed of the fault sequence")
    serve.add_argument(
        "--restart-every", type=float, metavar="SECONDS", help="restart the API server about "
        "this often (state kept, watch history compacted)"
    )  # fmt: skip
    serve.add_argument(
        "--restart-downtime", type=float, default=1.0, metavar="SECONDS",
        help="how long each restart keeps the port closed (default 1)",
    )  # fmt: skip
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    if args.gpus < 0:
        print(f"devcluster: --gpus {args.gpus}: must be 0 or more", file=sys.stderr)
        return 2
    node_labels: dict[str, str] = {}
    for item in args.node_label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"devcluster: --node-label {item!r} must be KEY=VALUE", file=sys.stderr)
            return 2
        node_labels[key] = value
    faults = None
    if args.faults or args.restart_every is not None:
        try:
            faults = FaultConfig.parse(
                args.faults,
                seed=args.fault_seed,
                restart_every=args.restart_every,
                restart_downtime=args.restart_downtime,
            )
        except FaultConfigError as exc:
            print(f"devcluster: --faults: {exc}", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="devcluster-"))
    log_dir = workdir / "logs"
    try:
        server = new_api_server(args.crd, log_dir=log_dir, faults=faults)
    except CrdError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 2
    serving = Serving(server, args.host, args.port)
    try:
        url = await serving.start()
    except ServeError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    kubeconfig = write_kubeconfig(args.kubeconfig or workdir / "kubeconfig", url)
    pod_runner = None
    if not args.no_pods:
        pod_runner = PodRunner(
            serving.exempt_url, gpus=args.gpus, node_labels=node_labels, log_dir=log_dir
        )
        await pod_runner.start()
    print(url, flush=True)
    print(f"devcluster: serving {url}; kubeconfig {kubeconfig}; Ctrl-C stops", file=sys.stderr)
    print(
        f"devcluster: never-faulted API at {serving.exempt_url}"
        + (f"; faults {faults.to_json()} (counts: GET {url}/devcluster/faults)" if faults else ""),
        file=sys.stderr,
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    print("devcluster: stopping", file=sys.stderr)
    if pod_runner is not None:
        await pod_runner.stop()
    await serving.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
