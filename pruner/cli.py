"""`prunejob prune` and `tlt-prune`: TAO's flags, one-line errors, a short summary.

Three layers, kept apart: argument parsing (`build_parser`, `parse_request`), the
pipeline (`pruner.pipeline.run_prune`, which owns file I/O), and presentation
(`prune_main`: summary on stdout, progress and errors on stderr, exit codes from
`pruner.errors`).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from pruner.errors import InvalidArgument, PrunejobError
from pruner.pipeline import PruneRequest, run_prune  # TensorFlow-free at import
from pruner.progress import Progress
from pruner.report import format_summary
from pruner.settings import CRITERIA, NORMALIZERS, PruneSettings
from pruner.target import validate_target_ratio

DEFAULTS = PruneSettings()
EPILOG = """\
--verify runs the original model with the removed filters zeroed (masked: their
kernels and biases, and the normalization scale and offset of their channels) and
the pruned model on one random batch, and fails if their outputs differ beyond
float32 rounding. It is only meaningful where masked channels stay zero through the
network: an activation with f(0) != 0 (sigmoid, softplus, ...) or a Normalization
layer after a pruned layer turns a zeroed channel into a constant that the pruned
model no longer has, so a correct pruning can still "fail".

Exit codes: 0 ok, 2 invalid argument, 3 model not found, 4 invalid model,
5 unsupported layer, 7 key required, 11 output exists, 12 output not writable,
13 verification failed (see README "Exit codes and reasons").
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is an InvalidArgument (one line, exit 2) instead of
    usage text plus a message."""

    def error(self, message: str) -> NoReturn:
        raise InvalidArgument(message)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Prune whole filters of a Keras model with NVIDIA TAO tlt-prune semantics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a typo must not silently select another long flag
    )
    files = parser.add_argument_group("files")
    files.add_argument(
        "-m",
        "-pm",
        "--model",
        "--pretrained_model",
        dest="model",
        required=True,
        metavar="MODEL",
        help="model to prune (.keras or .h5)",
    )
    files.add_argument(
        "-o",
        "--output_file",
        dest="output",
        metavar="OUTPUT",
        help="where the pruned model goes (.keras or .h5; its directory is created); "
        "required unless --dry-run",
    )
    files.add_argument(
        "-k",
        "--key",
        dest="key",
        default="",
        help="passphrase of an encrypted model (plain models: leave empty)",
    )
    files.add_argument("--report", metavar="FILE.json", help="write the JSON report here")
    files.add_argument(
        "--force", action="store_true", help="allow the output to overwrite the input model"
    )
    files.add_argument(
        "--safe-mode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the model in Keras safe mode (default); models with Lambda layers "
        "need --no-safe-mode, which runs code stored in the file: only for trusted files",
    )

    pruning = parser.add_argument_group("pruning (TAO tlt-prune flags and defaults)")
    pruning.add_argument(
        "-n",
        "--normalizer",
        choices=NORMALIZERS,
        default=DEFAULTS.normalizer,
        metavar="NORMALIZER",
        help=f"per-layer normalization of filter norms: {', '.join(NORMALIZERS)} "
        "(default: %(default)s)",
    )
    pruning.add_argument(
        "-eq",
        "--equalization_criterion",
        choices=CRITERIA,
        default=DEFAULTS.equalization_criterion,
        metavar="CRITERION",
        help=f"how stats of layers that must keep the same channels merge: "
        f"{', '.join(CRITERIA)} (default: %(default)s)",
    )
    pruning.add_argument(
        "-pg",
        "--pruning_granularity",
        type=int,
        default=DEFAULTS.granularity,
        metavar="N",
        help="retained counts are rounded up to a multiple of N (default: %(default)s)",
    )
    pruning.add_argument(
        "-pth",
        "--pruning_threshold",
        type=float,
        default=None,
        metavar="T",
        help=f"keep filters whose normalized norm is > T (default: {DEFAULTS.threshold})",
    )
    pruning.add_argument(
        "-nf",
        "--min_num_filters",
        type=int,
        default=DEFAULTS.min_num_filters,
        metavar="N",
        help="never keep fewer than N filters in a layer (default: %(default)s)",
    )
    pruning.add_argument(
        "-el",
        "--excluded_layers",
        nargs="*",
        action="extend",
        default=[],
        metavar="NAME",
        help="layers that are never pruned (repeatable)",
    )
    pruning.add_argument(
        "--target-ratio",
        type=float,
        metavar="R",
        help="instead of -pth: choose the threshold whose parameter ratio "
        "(after/before) is closest to R from below, 0 < R <= 1",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="compute and report the plan without writing a model",
    )
    run.add_argument(
        "--verify",
        action="store_true",
        help="check the pruned model against the masked original (see below)",
    )
    run.add_argument(
        "-v", "--verbose", action="store_true", help="print tracebacks of errors (debugging)"
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
    )
    if args.output is None and not args.dry_run:
        raise InvalidArgument("-o/--output_file is required (unless --dry-run)")
    return PruneRequest(
        model=args.model,
        output=args.output,
        settings=settings,
        key=args.key,
        target_ratio=args.target_ratio,
        report=args.report,
        dry_run=args.dry_run,
        verify=args.verify,
        force=args.force,
        safe_mode=args.safe_mode,
    )


MAX_MESSAGE = 500  # Keras errors can embed whole arrays


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def prune_main(argv: Sequence[str] | None = None, *, prog: str = "prunejob prune") -> int:
    """Run one pruning from command-line arguments; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    name = prog.split()[0]
    verbose = "-v" in args or "--verbose" in args  # known even when parsing fails
    try:
        request = parse_request(args, prog)
        progress = Progress(name)
        report = run_prune(request, progress)
        print(format_summary(report, progress.elapsed()), flush=True)
        return 0
    except PrunejobError as err:
        if verbose:
            traceback.print_exc()
        print(f"{name}: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: still one line, the traceback with -v
        if verbose:
            traceback.print_exc()
        print(
            f"{name}: error: internal error: {type(err).__name__}: {one_line(err)} "
            "(rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return PrunejobError.exit_code


def tlt_prune_main() -> int:
    """`tlt-prune`: the same command under TAO's name."""
    return prune_main(sys.argv[1:], prog="tlt-prune")


if __name__ == "__main__":  # python -m pruner.cli
    sys.exit(prune_main())
