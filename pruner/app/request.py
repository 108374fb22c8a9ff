"""One prune request, parsed once: typed locations, settings, the key and the options."""

from __future__ import annotations

from dataclasses import dataclass, field

from prunejob_contract.settings import PruneSettings
from pruner.io.locations import Location, S3Object
from pruner.io.s3 import S3Options

REPORT_SUFFIX = ".report.json"


def report_location_for(output: Location) -> Location:
    """Where the full report goes by default: next to the output."""
    return output.with_name_suffix(REPORT_SUFFIX)


@dataclass(frozen=True)
class PruneRequest:
    """Everything one run needs, already validated (built by `pruner.cli.prune`)."""

    model: Location  # plain or age-encrypted
    output: Location | None  # None only with dry_run
    settings: PruneSettings
    # The resolved passphrase (-k, --key-file or PRUNEJOB_KEY); None = no key.
    # repr=False: a request printed in a traceback must not show it.
    key: str | None = field(default=None, repr=False)
    target_ratio: float | None = None
    report: Location | None = None  # --report; None: see report_location
    dry_run: bool = False
    verify: bool = False
    force: bool = False  # allow output == input
    overwrite: bool = False  # allow replacing an existing output file or object
    # Recorded on the published output; an existing output with the same owner is this
    # run's own (an earlier attempt of the same job) and may be replaced.
    owner: str | None = None
    safe_mode: bool = True  # for --verify: Keras builds no Lambda layers unless False
    s3: S3Options = field(default_factory=S3Options)

    @property
    def report_location(self) -> Location | None:
        """Where the JSON report goes: --report, else `<output>.report.json` next to an
        S3 output (the worker's contract), else nowhere (local runs write only the
        model, as tlt-prune does, unless --report asks)."""
        if self.report is not None:
            return self.report
        if self.dry_run or self.output is None:
            return None
        if isinstance(self.output, S3Object):
            return report_location_for(self.output)
        return None
