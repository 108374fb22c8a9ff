"""Checks before the slow work: names, clashes and writable destinations.

Output names, clashes between the files a run names, and whether the output and
report destinations can be written."""

from __future__ import annotations

from pathlib import Path

from prunejob_contract.errors import BucketNotFound, InvalidArgument, OutputExists
from pruner.app.request import PruneRequest
from pruner.io import modelfile
from pruner.io.atomic import prepare_output_dir
from pruner.io.formats import AGE_SUFFIX, SUFFIX_FORMATS, SUPPORTED_SUFFIXES, plain_name
from pruner.io.locations import LocalPath, Location, S3Object, same_location
from pruner.io.s3 import S3Store


def check_output_name(location: Location, key: str | None) -> str:
    """The suffix (.keras/.h5/.hdf5) the saved model needs; InvalidArgument when the
    name says nothing Keras can write, or says `.age` while no key encrypts it."""
    name = location.name
    suffix = Path(plain_name(name)).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise InvalidArgument(
            f"output file {location} must end in one of {SUPPORTED_SUFFIXES}, optionally "
            f"followed by {AGE_SUFFIX} (Keras picks the format from the suffix)"
        )
    if name.endswith(AGE_SUFFIX) and key is None:
        raise InvalidArgument(
            f"output {location} ends in {AGE_SUFFIX} but no key was given to encrypt it; "
            "give one with --key-file PATH or PRUNEJOB_KEY, or drop the suffix"
        )
    return suffix


def output_replaces_input(request: PruneRequest) -> bool:
    assert request.output is not None
    return same_location(request.output, request.model)


def may_replace_output(request: PruneRequest) -> bool:
    """--overwrite, or --force for the one file the user named twice (-m X -o X)."""
    return request.overwrite or (request.force and output_replaces_input(request))


def check_destination(
    location: Location, store: S3Store, *, replace: bool, owner: str | None = None
) -> None:
    """Fail fast when `location` can't be written: directory not creatable, bucket
    missing, or (unless `replace`) already there, unless it is an S3 object that
    `owner` published."""
    if isinstance(location, LocalPath):
        prepare_output_dir(location.path)
        if not replace and location.path.exists():
            raise OutputExists(
                f"output {location.path} already exists; pass --overwrite to replace it"
            )
        return
    if replace:
        if not store.bucket_exists(location):
            raise BucketNotFound(
                f"S3 bucket {location.bucket!r} does not exist (for {location.uri})"
            )
    elif owner is not None:
        store.owned_etag(location, owner)  # OutputExists unless absent or owner's own
    elif store.object_exists(location):  # a missing bucket raises here
        raise OutputExists(f"output {location.uri} already exists; pass --overwrite to replace it")


def check_output(request: PruneRequest, store: S3Store) -> None:
    """Fail fast, before the slow work, when the output (or report) can't be written.
    Checks of the names alone come first, so a typo is reported as such and not as
    whatever touching the report's destination (S3, say) runs into."""
    output = None
    if not request.dry_run:  # nothing is written, so nothing about -o matters
        if request.output is None:
            raise InvalidArgument("-o/--output_file is required (unless --dry-run)")
        output = request.output
        check_output_name(output, request.key)
        if not request.force and output_replaces_input(request):
            raise OutputExists(
                f"output {output} is the input model; refusing to overwrite it (pass --force)"
            )
    report = request.report_location
    if report is not None:
        if request.output is not None and same_location(report, request.output):
            raise InvalidArgument(f"--report {report} is the same file as the output model")
        if same_location(report, request.model):
            raise InvalidArgument(f"--report {report} is the input model; name another file")
        # Reports are always replaced: they describe the run that writes them.
        check_destination(report, store, replace=True)
    if output is not None:
        check_destination(output, store, replace=may_replace_output(request), owner=request.owner)


def termination_log_clash(path: str | None, request: PruneRequest) -> str | None:
    """What model or report file `--termination-log` names, if any: writing the log
    there would replace it."""
    if path is None:
        return None
    log = LocalPath(Path(path))
    named = {
        "input model": request.model,
        "output model": request.output,
        "report": request.report_location,
    }
    for what, location in named.items():
        if location is not None and same_location(log, location):
            return what
    return None


def input_needs_fetching(request: PruneRequest) -> bool:
    """Whether resolving the input does real work (download and/or decryption); a
    local file that is missing, not a model, or encrypted without a key fails here."""
    location = request.model
    if isinstance(location, S3Object):
        return True
    if request.key is None:
        modelfile.check_model_file(location.path)  # KeyRequired when encrypted
        return False
    return modelfile.inspect_model_file(location.path) == "age"
