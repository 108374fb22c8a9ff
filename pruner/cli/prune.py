"""`prunejob prune` and `tlt-prune`: TAO's flags, one-line errors, a short summary.

Three layers, kept apart: argument parsing (`build_parser`, `parse_request`: every
path and URI parsed once into a typed location), the pipeline
(`pruner.app.pipeline.run_prune`, which owns file and S3 I/O), and presentation
(`prune_main`: summary on stdout, progress and errors on stderr, exit codes from
`prunejob_contract.errors`, the termination log of the worker contract).

The operator's pods run exactly this command with S3 URIs; there is no worker mode.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Sequence

from prunejob_contract import termination
from prunejob_contract import worker as flags
from prunejob_contract.arguments import OneLineParser
from prunejob_contract.errors import INTERRUPTED, InvalidArgument, PrunejobError
from prunejob_contract.settings import CRITERIA, NORMALIZERS, PruneSettings
from prunejob_contract.termination import TERMINATION_LOG
from pruner.app.pipeline import run_prune  # no TensorFlow
from pruner.app.preflight import termination_log_clash
from pruner.app.progress import Progress
from pruner.app.report import format_summary
from pruner.app.request import PruneRequest
from pruner.app.signals import Terminated, sigterm_raises
from pruner.core.target import validate_target_ratio
from pruner.io.keys import KEY_ENV, resolve_key
from pruner.io.locations import parse_uri
from pruner.io.s3 import S3Options
from pruner.io.termination_log import write_termination_log

DEFAULTS = PruneSettings()
EPILOG = f"""\
--verify runs the original model with the removed filters zeroed (masked: their
kernels and biases, and the normalization scale and offset of their channels) and
the pruned model on one random batch, and fails if their outputs differ beyond
float32 rounding. It is only meaningful where masked channels stay zero through the
network: an activation with f(0) != 0 (sigmoid, softplus, ...) or a Normalization
layer after a pruned layer turns a zeroed channel into a constant that the pruned
model no longer has, so a correct pruning can still "fail".

MODEL, OUTPUT and --report are local paths or s3://bucket/key URIs (boto3's usual
configuration: credentials chain, AWS_REGION, AWS_ENDPOINT_URL[_S3], or --s3-endpoint).
An age-encrypted MODEL is recognised by its header and needs the key; with a key
the output is age-encrypted (OUTPUT may end in .age). The key comes from -k, then
--key-file, then the {KEY_ENV} environment variable; prefer the last two (-k is
visible in the process list). Decrypted models live only in a private temporary
directory (tmpfs when it fits), removed on every exit path.

The pruned model is the input file, edited: the same format (.keras, or HDF5
.h5/.hdf5) and Keras dialect (a Keras 2 file stays Keras 2), the same layer names,
order and metadata; only the pruned counts and sliced weights change. Optimizer
state and training config are dropped (their shapes no longer fit). Without
--verify no TensorFlow is imported.

An existing output (file or object) is replaced only with --overwrite (--force
alone allows -o to name the input itself), or, for an S3 object that this --owner
published, by the same --owner. Outputs appear whole or not at all.
The JSON report goes to --report, else next to an S3 output as
OUTPUT.report.json; local outputs get a report only with --report.

--termination-log PATH (default {TERMINATION_LOG} when it exists and is
writable, as in a Kubernetes pod) receives a compact JSON result on success and on
every failure: {{"v":1,"status":"Succeeded",...}} or {{"v":1,"status":"Failed",
"reason":REASON,"message":...}}.

Exit codes (reason): 0 ok, 1 internal error (InternalError), 2 invalid argument,
3 model not found, 4 invalid model, 5 unsupported layer, 6 decryption failed (wrong
key, damaged file), 7 key required, 8 bucket not found, 9 access denied, 10 S3
endpoint unreachable, 11 output exists, 12 output not writable, 13 verification
failed, 130/143 interrupted by SIGINT/SIGTERM (Interrupted); see README "Exit codes
and reasons".
"""


def _add_choice(
    group: argparse._ArgumentGroup,
    flag: Sequence[str],
    choices: Sequence[str],
    default: str,
    metavar: str,
    what: str,
) -> None:
    """A TAO option that takes one of `choices`; its help lists them and the default."""
    group.add_argument(
        *flag,
        choices=choices,
        default=default,
        metavar=metavar,
        help=f"{what}: {', '.join(choices)} (default: %(default)s)",
    )


def _add_count(
    group: argparse._ArgumentGroup, flag: Sequence[str], default: int, what: str
) -> None:
    """A TAO option that takes a whole number N; its help ends with the default."""
    group.add_argument(
        *flag, type=int, default=default, metavar="N", help=f"{what} (default: %(default)s)"
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Prune whole filters of a Keras model with NVIDIA TAO tlt-prune semantics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a typo must not silently select another long flag
    )
    files = parser.add_argument_group("files")
    files.add_argument(
        *flags.MODEL,
        dest="model",
        required=True,
        metavar="MODEL",
        help="model to prune (.keras, .h5 or .hdf5, plain or age-encrypted): a path or "
        "s3://bucket/key",
    )
    files.add_argument(
        *flags.OUTPUT,
        dest="output",
        metavar="OUTPUT",
        help="where the pruned model goes: a path (its directory is created) or "
        "s3://bucket/key, in the input's format: ending in .keras, or .h5/.hdf5 (+ .age "
        "when encrypted); required unless --dry-run",
    )
    files.add_argument(
        *flags.KEY,
        dest="key",
        default=None,
        metavar="KEY",
        help="passphrase (age): decrypts an encrypted model and encrypts the output; "
        f"visible in the process list, so prefer --key-file or {KEY_ENV}",
    )
    files.add_argument(
        *flags.KEY_FILE,
        metavar="PATH",
        help="file holding the passphrase (one trailing newline ignored)",
    )
    files.add_argument(
        *flags.REPORT,
        metavar="FILE.json",
        help="write the JSON report here (path or s3:// URI; default: OUTPUT.report.json "
        "for an S3 output, none for a local one)",
    )
    files.add_argument(
        *flags.OVERWRITE, action="store_true", help="replace an existing output file or object"
    )
    files.add_argument(
        *flags.FORCE, action="store_true", help="allow the output to overwrite the input model"
    )
    files.add_argument(
        *flags.OWNER,
        metavar="ID",
        help="who publishes the output: recorded on an S3 output (x-amz-meta-prunejob-owner); "
        "an existing output recorded with the same ID may be replaced without --overwrite",
    )
    files.add_argument(
        *flags.S3_ENDPOINT,
        metavar="URL",
        help="S3-compatible endpoint (MinIO, Ceph, ...), overriding AWS_ENDPOINT_URL[_S3]",
    )
    files.add_argument(
        *flags.TERMINATION_LOG_FLAG,
        metavar="PATH",
        help=f"write the compact JSON result here (default: {TERMINATION_LOG} "
        "when it exists and is writable)",
    )
    files.add_argument(
        "--safe-mode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--verify builds the models in Keras safe mode (default); models with Lambda "
        "layers need --no-safe-mode there, which runs code stored in the file: only for "
        "trusted files (without --verify nothing in the file is run)",
    )

    pruning = parser.add_argument_group("pruning (TAO tlt-prune flags and defaults)")
    _add_choice(
        pruning,
        flags.NORMALIZER,
        NORMALIZERS,
        DEFAULTS.normalizer,
        "NORMALIZER",
        "per-layer normalization of filter norms",
    )
    _add_choice(
        pruning,
        flags.CRITERION,
        CRITERIA,
        DEFAULTS.equalization_criterion,
        "CRITERION",
        "how stats of layers that must keep the same channels merge",
    )
    _add_count(
        pruning,
        flags.GRANULARITY,
        DEFAULTS.granularity,
        "retained counts are rounded up to a multiple of N",
    )
    pruning.add_argument(
        *flags.THRESHOLD,
        type=float,
        default=None,
        metavar="T",
        help=f"keep filters whose normalized norm is > T (default: {DEFAULTS.threshold})",
    )
    _add_count(
        pruning,
        flags.MIN_NUM_FILTERS,
        DEFAULTS.min_num_filters,
        "never keep fewer than N filters in a layer",
    )
    pruning.add_argument(
        *flags.EXCLUDED_LAYERS,
        nargs="*",
        action="extend",
        default=[],
        metavar="NAME",
        help="layers that are never pruned (repeatable)",
    )
    pruning.add_argument(
        *flags.PRUNE_TRANSPOSE_FILTERS,
        action="store_true",
        help="beyond TAO: also prune the output filters of Conv*Transpose layers (TAO "
        "prunes only their input channels, the default)",
    )
    pruning.add_argument(
        *flags.TARGET_RATIO,
        type=float,
        metavar="R",
        help="instead of -pth: choose the threshold whose parameter ratio "
        "(after/before) is closest to R from below, 0 < R <= 1",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        *flags.DRY_RUN,
        action="store_true",
        help="compute and report the plan without writing a model",
    )
    run.add_argument(
        *flags.VERIFY,
        action="store_true",
        help="check the pruned model against the masked original (see below)",
    )
    run.add_argument(
        *flags.VERBOSE, action="store_true", help="print tracebacks of errors (debugging)"
    )
    return parser


def parse_request(argv: Sequence[str], prog: str) -> PruneRequest:
    """Parse and validate `argv` into a PruneRequest (InvalidArgument on any problem)."""
    args = build_parser(prog).parse_args(list(argv))
    if args.target_ratio is not None:
        validate_target_ratio(args.target_ratio)
        if args.pruning_threshold is not None:
            raise InvalidArgument(
                "give either -pth/--pruning_threshold or --target-ratio, not both"
            )
    settings = PruneSettings(
        normalizer=args.normalizer,
        equalization_criterion=args.equalization_criterion,
        granularity=args.pruning_granularity,
        threshold=DEFAULTS.threshold if args.pruning_threshold is None else args.pruning_threshold,
        min_num_filters=args.min_num_filters,
        excluded_layers=tuple(dict.fromkeys(args.excluded_layers)),  # dedupe, keep order
        prune_transpose_filters=args.prune_transpose_filters,
    )
    if args.owner is not None and not args.owner.strip():
        raise InvalidArgument("--owner must not be empty")
    if args.output is None and not args.dry_run:
        raise InvalidArgument("-o/--output_file is required (unless --dry-run)")
    return PruneRequest(  # keyword arguments are evaluated (and validated) in this order
        settings=settings,
        target_ratio=args.target_ratio,
        # `-k ""` is TAO's "no key" (its default), so --key-file / PRUNEJOB_KEY still apply.
        key=resolve_key(args.key or None, args.key_file),
        s3=S3Options(endpoint_url=args.s3_endpoint),  # boto3 is imported only when S3 is used
        model=parse_uri(args.model),
        output=None if args.output is None else parse_uri(args.output),
        report=None if args.report is None else parse_uri(args.report),
        dry_run=args.dry_run,
        verify=args.verify,
        force=args.force,
        overwrite=args.overwrite,
        owner=args.owner,
        safe_mode=args.safe_mode,
    )


MAX_MESSAGE = 500  # Keras errors can embed whole arrays


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def termination_log_arg(args: Sequence[str]) -> str | None:
    """--termination-log's value, found without argparse so that a run whose arguments
    do not parse still reports its failure there."""
    path = None
    for index, arg in enumerate(args):
        if arg in flags.TERMINATION_LOG_FLAG and index + 1 < len(args):
            path = args[index + 1]
        elif arg.startswith(flags.TERMINATION_LOG_FLAG[0] + "="):
            path = arg.partition("=")[2]
    return path


def prune_main(argv: Sequence[str] | None = None, *, prog: str = "prunejob prune") -> int:
    """Run one pruning from command-line arguments; returns the exit code.

    Every outcome, success or failure of any kind, is also written to the
    termination log (see `termination`): the operator reads it from the pod.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = prog.split()[0]
    verbose = any(arg in flags.VERBOSE for arg in args)  # known even when parsing fails
    log_path = termination_log_arg(args)

    def failed(reason: str, message: str, exit_code: int) -> int:
        print(f"{name}: error: {message}", file=sys.stderr)
        write_termination_log(log_path, termination.failure_message(reason, message))
        return exit_code

    try:
        with sigterm_raises():
            request = parse_request(args, prog)
            clash = termination_log_clash(log_path, request)
            if clash is not None:
                bad_log, log_path = log_path, None  # the failure must not be written there
                raise InvalidArgument(
                    f"--termination-log {bad_log} is the {clash}; name another file"
                )
            progress = Progress(name)
            report = run_prune(request, progress)
            print(format_summary(report, progress.elapsed()), flush=True)
            report_location = request.report_location
            write_termination_log(
                log_path,
                termination.success_message(
                    report,
                    output=report.get("output"),
                    report_uri=None if report_location is None else str(report_location),
                ),
            )
            return 0
    except PrunejobError as err:
        if verbose:
            traceback.print_exc()
        return failed(err.reason, one_line(err), err.exit_code)
    except KeyboardInterrupt:
        return failed(INTERRUPTED, "interrupted (SIGINT)", 128 + signal.SIGINT)
    except Terminated as err:
        return failed(INTERRUPTED, f"interrupted ({err})", 128 + err.signum)
    except Exception as err:  # a bug: still one line, the traceback with -v
        if verbose:
            traceback.print_exc()
        message = (
            f"internal error: {type(err).__name__}: {one_line(err)} "
            "(rerun with -v for the traceback)"
        )
        return failed(PrunejobError.reason, message, PrunejobError.exit_code)


def tlt_prune_main() -> int:
    """`tlt-prune`: the same command under TAO's name."""
    return prune_main(sys.argv[1:], prog="tlt-prune")


if __name__ == "__main__":  # python -m pruner.cli.prune
    sys.exit(prune_main())
