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
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replicas elect one leader with a coordination.k8s.io Lease; only it writes "
        "(default: on; --no-leader-election: this process reconciles alone)",
    )
    parser.add_argument(
        "--lease-name",
        metavar="NAME",
        help=f"the leader Lease's name (default {settings.DEFAULT_LEASE_NAME!r})",
    )
    parser.add_argument(
        "--lease-namespace",
        metavar="NS",
        help=f"the leader Lease's namespace (default: ${settings.POD_NAMESPACE_ENV}, "
        f"else {settings.FALLBACK_LEASE_NAMESPACE!r})",
    )
    obsolete = parser.add_mutually_exclusive_group()
    obsolete.add_argument(
        "--standalone", action="store_true", default=None, help="obsolete: --no-leader-election"
    )
    obsolete.add_argument("--peering", metavar="NAME", help="obsolete: ignored (kopf peering)")
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
    notices = list(base.notices)
    if args.standalone:
        changes["leader_election"] = False
        notices.append(f"--standalone is now --no-leader-election: {settings.OBSOLETE_PEERING}")
    if args.peering:
        notices.append(f"--peering is ignored: {settings.OBSOLETE_PEERING}")
    if args.leader_election is not None:
        changes["leader_election"] = args.leader_election
    if args.lease_name:
        changes["lease_name"] = args.lease_name
    if args.lease_namespace:
        changes["lease_namespace"] = args.lease_namespace
    changes["notices"] = tuple(notices)
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
    for notice in config.notices:
        print(f"prunejob operator: warning: {notice}", file=sys.stderr)
    server, problem = load_connection()
    if problem:
        print(f"prunejob operator: error: {problem}", file=sys.stderr)
        return 1

    import kopf  # after parsing: `--help` stays fast

    from prunejob_operator import handlers, runtime  # handlers: registers them with kopf

    kopf.configure(verbose=config.verbose, log_format=kopf.LogFormat.FULL)
    logging.getLogger(handlers.LOG.name).setLevel(logging.DEBUG if config.verbose else logging.INFO)
    if not config.verbose:
        # kopf logs every handler run at INFO: thousands of lines per minute at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    outcome = runtime.Outcome()
    try:
        kopf.run(
            # kopf is the process runtime only (start-up, clean-up, the probe): no peering,
            # and it watches nothing; the operator's own reflectors do (see handlers.py).
            clusterwide=True,
            standalone=True,
            liveness_endpoint=config.liveness,
            stop_flag=outcome.stop,
            memo=kopf.Memo(config=config, connection=server, outcome=outcome),
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
    return outcome.exit_code
