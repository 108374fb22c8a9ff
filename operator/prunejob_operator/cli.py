"""`prunejob operator`: run the PruneJob operator (kopf's runner with our settings)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from prunejob_contract.arguments import OneLineParser
from prunejob_contract.errors import InvalidArgument, PrunejobError
from prunejob_operator import connection, settings


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="prunejob operator",
        description="Run the PruneJob operator. With no flags it uses the current "
        "kubeconfig (or the in-cluster service account) and watches all namespaces. "
        f"Every flag has an env var {settings.ENV_PREFIX}<NAME> (flags win).",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns as in kopf)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", default=None, help="no kopf peering (one replica)"
    )
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help=f"kopf peering object for HA replicas (default {settings.DEFAULT_PEERING!r})",
    )
    parser.add_argument(
        "--liveness",
        metavar="PORT|HOST:PORT|URL",
        help="serve a liveness probe, e.g. 8080 -> http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics (0: off)"
    )
    parser.add_argument(
        "--max-running-jobs",
        type=int,
        metavar="N",
        help="cap on concurrently running worker Jobs; others wait as Pending/Queued (0: none)",
    )
    parser.add_argument("--worker-image", metavar="IMAGE", help="default worker image")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(
    args: argparse.Namespace, base: settings.OperatorConfig
) -> settings.OperatorConfig:
    changes: dict[str, object] = {}
    if args.namespaces:
        changes["namespaces"] = tuple(args.namespaces)
    elif args.all_namespaces:
        changes["namespaces"] = ()
    if args.standalone:
        changes["standalone"] = True
    if args.peering:
        changes["peering"] = args.peering
        changes["standalone"] = False
    if args.liveness:
        changes["liveness"] = settings.liveness_url(args.liveness)
    for name in ("metrics_port", "max_running_jobs"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raise InvalidArgument(f"--{name.replace('_', '-')} must be >= 0, got {value}")
            changes[name] = value
    if args.worker_image:
        changes["worker_image"] = args.worker_image
    if args.verbose:
        changes["verbose"] = True
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def load_connection() -> tuple[connection.Connection | None, str | None]:
    """The API server to talk to, or why none can be reached — checked before kopf
    starts (kopf would log a traceback per login attempt first)."""
    try:
        return connection.load(), None
    except Exception as err:  # bad YAML, missing file, unknown auth plugin: all one message
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        where = os.environ.get("KUBECONFIG", "~/.kube/config")
        return None, (
            f"no Kubernetes configuration: not in a pod, and kubeconfig {where} is unusable "
            f"({detail}); set KUBECONFIG or run in a pod with a service account"
        )


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        config = config_from_args(args, settings.from_env())
    except PrunejobError as err:
        print(f"prunejob operator: error: {err}", file=sys.stderr)
        return err.exit_code
    server, problem = load_connection()
    if problem:
        print(f"prunejob operator: error: {problem}", file=sys.stderr)
        return 1

    import kopf  # after parsing: `--help` stays fast

    from prunejob_operator import handlers  # registers the handlers with kopf

    kopf.configure(verbose=config.verbose, log_format=kopf.LogFormat.FULL)
    logging.getLogger(handlers.LOG.name).setLevel(logging.DEBUG if config.verbose else logging.INFO)
    if not config.verbose:
        # kopf logs every handler run at INFO: thousands of lines per minute at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        kopf.run(
            clusterwide=config.clusterwide,
            namespaces=config.namespaces,
            standalone=config.standalone,
            peering_name=None if config.standalone else config.peering,
            liveness_endpoint=config.liveness,
            memo=kopf.Memo(config=config, connection=server),  # what handlers.configure reads
        )
    except KeyboardInterrupt:
        return 130
    except kopf.LoginError as err:
        print(
            f"prunejob operator: error: cannot log in to Kubernetes ({err}); "
            "set KUBECONFIG or run in a pod with a service account",
            file=sys.stderr,
        )
        return 1
    return 0
