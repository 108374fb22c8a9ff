"""The worker's command line: flag names, the key variable, and the one argv builder.

The operator's Job runs `prunejob prune` with the argv `WorkerCall.argv()` builds;
the pruner's parser declares the same flags from the tuples below (the first name of
each is the one the builder writes). Secrets never travel as arguments: the key
comes from the `KEY_ENV` environment variable (a Secret's `secretKeyRef`).
"""

from __future__ import annotations

from dataclasses import dataclass

from prunejob_contract.settings import PruneSettings
from prunejob_contract.termination import TERMINATION_LOG

COMMAND: tuple[str, ...] = ("prunejob", "prune")
KEY_ENV = "PRUNEJOB_KEY"

# Each flag's spellings; TAO's short and long names first, then ours.
MODEL = ("-m", "-pm", "--model", "--pretrained_model")
OUTPUT = ("-o", "--output_file")
KEY = ("-k", "--key")
KEY_FILE = ("--key-file",)
REPORT = ("--report",)
OVERWRITE = ("--overwrite",)
OWNER = ("--owner",)  # the run's identity: an output it published may be replaced by it
FORCE = ("--force",)
S3_ENDPOINT = ("--s3-endpoint",)
TERMINATION_LOG_FLAG = ("--termination-log",)
NORMALIZER = ("-n", "--normalizer")
CRITERION = ("-eq", "--equalization_criterion")
GRANULARITY = ("-pg", "--pruning_granularity")
THRESHOLD = ("-pth", "--pruning_threshold")
MIN_NUM_FILTERS = ("-nf", "--min_num_filters")
EXCLUDED_LAYERS = ("-el", "--excluded_layers")
PRUNE_TRANSPOSE_FILTERS = ("--prune-transpose-filters",)  # beyond TAO: see PruneSettings
TARGET_RATIO = ("--target-ratio",)
DRY_RUN = ("--dry-run",)
VERIFY = ("--verify",)
VERBOSE = ("-v", "--verbose")


@dataclass(frozen=True)
class WorkerCall:
    """One pruning run as the operator asks for it (never any secret)."""

    model: str
    output: str
    settings: PruneSettings
    target_ratio: float | None = None
    overwrite: bool = False
    # Who publishes the output (the operator: the PruneJob's identity): an existing
    # output recorded with the same owner is this job's own, and may be replaced.
    owner: str | None = None
    s3_endpoint: str | None = None
    termination_log: str = TERMINATION_LOG

    def argv(self) -> list[str]:
        """The arguments after `COMMAND`."""
        s = self.settings
        args = [
            MODEL[0], self.model,
            OUTPUT[0], self.output,
            NORMALIZER[0], s.normalizer,
            CRITERION[0], s.equalization_criterion,
            GRANULARITY[0], str(s.granularity),
            THRESHOLD[0], repr(s.threshold),
            MIN_NUM_FILTERS[0], str(s.min_num_filters),
        ]  # fmt: skip
        if s.prune_transpose_filters:
            args.append(PRUNE_TRANSPOSE_FILTERS[0])
        if self.target_ratio is not None:
            args += [TARGET_RATIO[0], repr(self.target_ratio)]
        if self.overwrite:
            args.append(OVERWRITE[0])
        if self.owner:
            args += [OWNER[0], self.owner]
        if self.s3_endpoint:
            args += [S3_ENDPOINT[0], self.s3_endpoint]
        args += [TERMINATION_LOG_FLAG[0], self.termination_log]
        if s.excluded_layers:  # last: `-el` takes every following word
            args += [EXCLUDED_LAYERS[0], *s.excluded_layers]
        return args
