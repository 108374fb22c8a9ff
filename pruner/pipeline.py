"""The steps of one `prunejob prune` run: resolve input -> load -> prepare -> plan ->
surgery -> verify -> save + publish -> report.

The I/O edges (`check_output`, `resolve_input`, `stage_output`, `publish_output`,
`publish_report`) handle local paths and `s3://bucket/key` URIs, age-encrypted
inputs (detected by their header) and encrypted outputs (when a key is given), via
`pruner.artifacts`; the steps in between only ever see local plaintext files.

TensorFlow is imported only inside the steps, so argument errors stay instant.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunejob_contract.errors import (
    BucketNotFound,
    InvalidArgument,
    OutputExists,
    VerificationFailed,
)
from prunejob_contract.settings import PruneSettings
from pruner import artifacts, modelio, storage
from pruner.core.target import TargetChoice, choose_threshold
from pruner.progress import Progress
from pruner.report import build_report, write_json
from pruner.storage import LocalPath, Location, S3Object, S3Options

if TYPE_CHECKING:
    import keras
    import numpy as np

    from pruner.core.plan import PreparedModel, PrunePlan

# --verify: outputs may differ by float32 rounding only. Removing exactly-zero terms
# reorders sums, so the bound is relative to each output's magnitude.
VERIFY_RTOL = 1e-4
VERIFY_ATOL = 1e-6
VERIFY_BATCH = 2
VERIFY_UNKNOWN_DIM = 32  # size used for input axes the model leaves open (None)
AGE_SUFFIX = ".age"


@dataclass(frozen=True)
class PruneRequest:
    """Everything one run needs, already validated (built by pruner.cli)."""

    model: str  # local path or s3://bucket/key, plain or age-encrypted
    output: str | None  # local path or s3://bucket/key; None only with dry_run
    settings: PruneSettings
    # The resolved passphrase (-k, --key-file or PRUNEJOB_KEY); None = no key.
    # repr=False: a request printed in a traceback must not show it.
    key: str | None = field(default=None, repr=False)
    target_ratio: float | None = None
    report: str | None = None  # None: next to an S3 output (see report_destination)
    dry_run: bool = False
    verify: bool = False
    force: bool = False  # allow output == input
    overwrite: bool = False  # allow replacing an existing output file or object
    safe_mode: bool = True
    s3: S3Options = field(default_factory=S3Options)


# ---------------------------------------------------------------- I/O edges


def report_destination(request: PruneRequest) -> str | None:
    """Where the JSON report goes: --report, else `<output>.report.json` next to an S3
    output (the worker's contract), else nowhere (local runs write only the model,
    as tlt-prune does, unless --report asks)."""
    if request.report is not None:
        return request.report
    if request.dry_run or request.output is None:
        return None
    if isinstance(storage.parse_uri(request.output), S3Object):
        return artifacts.report_uri_for(request.output)
    return None


def same_location(first: Location, second: Location) -> bool:
    if isinstance(first, LocalPath) and isinstance(second, LocalPath):
        return modelio.same_file(first.path, second.path)
    return first == second


def location_name(location: Location) -> str:
    return location.path.name if isinstance(location, LocalPath) else location.key


def plain_model_name(name: str) -> str:
    """The model file name without a trailing `.age` (Keras picks the format from it)."""
    return name[: -len(AGE_SUFFIX)] if name.endswith(AGE_SUFFIX) else name


def check_output_name(uri: str, location: Location, key: str | None) -> str:
    """The suffix (.keras/.h5/.hdf5) the saved model needs; InvalidArgument when the
    name says nothing Keras can write, or says `.age` while no key encrypts it."""
    name = location_name(location)
    suffix = Path(plain_model_name(name)).suffix.lower()
    if suffix not in modelio.SUFFIX_FORMATS:
        raise InvalidArgument(
            f"output file {uri} must end in one of {modelio.SUPPORTED_SUFFIXES}, optionally "
            f"followed by {AGE_SUFFIX} (Keras picks the format from the suffix)"
        )
    if name.endswith(AGE_SUFFIX) and key is None:
        raise InvalidArgument(
            f"output {uri} ends in {AGE_SUFFIX} but no key was given to encrypt it; "
            "give one with --key-file PATH or PRUNEJOB_KEY, or drop the suffix"
        )
    return suffix


def output_replaces_input(request: PruneRequest) -> bool:
    assert request.output is not None
    return same_location(storage.parse_uri(request.output), storage.parse_uri(request.model))


def may_replace_output(request: PruneRequest) -> bool:
    """--overwrite, or --force for the one file the user named twice (-m X -o X)."""
    return request.overwrite or (request.force and output_replaces_input(request))


def check_destination(location: Location, request: PruneRequest, *, replace: bool) -> None:
    """Fail fast when `location` can't be written: directory not creatable, bucket
    missing, or (unless `replace`) already there."""
    if isinstance(location, LocalPath):
        modelio.prepare_output_dir(location.path)
        if not replace and location.path.exists():
            raise OutputExists(
                f"output {location.path} already exists; pass --overwrite to replace it"
            )
        return
    client = storage.make_client(request.s3)
    if replace:
        if not storage.bucket_exists(client, location):
            raise BucketNotFound(
                f"S3 bucket {location.bucket!r} does not exist (for {location.uri})"
            )
    elif storage.object_exists(client, location):  # a missing bucket raises here
        raise OutputExists(f"output {location.uri} already exists; pass --overwrite to replace it")


def check_output(request: PruneRequest) -> None:
    """Fail fast, before the slow work, when the output (or report) can't be written.
    Checks of the names alone come first, so a typo is reported as such and not as
    whatever touching the report's destination (S3, say) runs into."""
    output = None
    if not request.dry_run:  # nothing is written, so nothing about -o matters
        if request.output is None:
            raise InvalidArgument("-o/--output_file is required (unless --dry-run)")
        output = storage.parse_uri(request.output)
        check_output_name(request.output, output, request.key)
        if not request.force and output_replaces_input(request):
            raise OutputExists(
                f"output {request.output} is the input model; refusing to overwrite it "
                "(pass --force)"
            )
    report = report_destination(request)
    if report is not None:
        report_location = storage.parse_uri(report)
        if request.output is not None and same_location(
            report_location, storage.parse_uri(request.output)
        ):
            raise InvalidArgument(f"--report {report} is the same file as the output model")
        if same_location(report_location, storage.parse_uri(request.model)):
            raise InvalidArgument(f"--report {report} is the input model; name another file")
        # Reports are always replaced: they describe the run that writes them.
        check_destination(report_location, request, replace=True)
    if output is not None:
        check_destination(output, request, replace=may_replace_output(request))


def termination_log_clash(path: str | None, request: PruneRequest) -> str | None:
    """What model or report file `--termination-log` names, if any: writing the log
    there would replace it."""
    if path is None:
        return None
    log = LocalPath(Path(path))
    named = {"input model": request.model, "output model": request.output}
    named["report"] = report_destination(request)
    for what, uri in named.items():
        if uri is not None and same_location(log, storage.parse_uri(uri)):
            return what
    return None


def input_needs_fetching(request: PruneRequest) -> bool:
    """Whether resolving the input does real work (download and/or decryption); a
    local file that is missing, not a model, or encrypted without a key fails here."""
    location = storage.parse_uri(request.model)
    if isinstance(location, S3Object):
        return True
    if request.key is None:
        modelio.check_model_file(location.path)  # KeyRequired when encrypted
        return False
    return modelio.inspect_model_file(location.path) == "age"


@contextlib.contextmanager
def resolve_input(request: PruneRequest) -> Iterator[Path]:
    """A local plaintext model path for `request.model`, valid inside the block.

    S3 objects are downloaded and age files decrypted (KeyRequired without a key) into
    a private temporary directory that is removed on every exit path. With a key, a
    plain input is fine: the key then only encrypts the output.
    """
    location = storage.parse_uri(request.model)
    if isinstance(location, LocalPath):
        modelio.inspect_model_file(location.path)  # precise missing / not-a-model errors
    with artifacts.model_input(request.model, request.key, request.s3) as plain:
        yield plain


@contextlib.contextmanager
def stage_output(request: PruneRequest, expected_bytes: int) -> Iterator[Path]:
    """Where to save the plaintext model before it is published.

    A plain local output is staged next to itself (same filesystem: publishing is an
    atomic rename). A model that will be encrypted or uploaded is staged in a private
    temporary directory instead, so its plaintext never lands beside the output (on
    persistent disk) and is removed on every exit path.
    """
    assert request.output is not None
    location = storage.parse_uri(request.output)
    if isinstance(location, LocalPath) and request.key is None:
        with modelio.staged_file(location.path) as staged:
            yield staged
        return
    suffix = check_output_name(request.output, location, request.key)
    with artifacts.private_directory(expected_bytes) as directory:
        yield directory / f"model{suffix}"


def publish_output(staged: Path, request: PruneRequest) -> dict[str, Any]:
    """Store the saved model at the output, encrypted when there is a key.

    Returns {"uri", "bytes"} of what was stored, plus "sha256" for S3 and encrypted
    outputs (hashed while encrypting/uploading anyway; a plain local output is only
    renamed into place, and hashing it would cost ~0.3 s per 100 MB).
    """
    assert request.output is not None
    location = storage.parse_uri(request.output)
    replace = may_replace_output(request)
    if isinstance(location, LocalPath) and request.key is None:
        size = staged.stat().st_size
        modelio.commit_file(staged, location.path, overwrite=replace)
        return {"uri": str(location.path), "bytes": size}
    return artifacts.publish_output(
        staged, request.output, request.key, request.s3, overwrite=replace
    )


def retract_output(output: dict[str, Any], request: PruneRequest) -> None:
    """Best effort: remove an output this run created, when the run fails after
    publishing it (so the failure leaves nothing, and a retry is not OutputExists)."""
    if may_replace_output(request):
        return  # whatever was there before is gone already; keep the new one
    location = storage.parse_uri(str(output["uri"]))
    with contextlib.suppress(Exception):
        if isinstance(location, LocalPath):
            os.unlink(location.path)
        else:
            client = storage.make_client(request.s3)
            client.delete_object(Bucket=location.bucket, Key=location.key)


def publish_report(report: dict[str, Any], request: PruneRequest) -> str | None:
    """Write the report where `report_destination` says; returns that uri (or None)."""
    destination = report_destination(request)
    if destination is None:
        return None
    location = storage.parse_uri(destination)
    if isinstance(location, LocalPath):
        write_json(report, location.path)
    else:
        artifacts.publish_json(report, destination, request.s3, overwrite=True)
    return destination


# ---------------------------------------------------------------- steps


def load_step(request: PruneRequest, progress: Progress) -> keras.Model:
    """Resolve the input and load it (Sequential models are converted by `prepare`)."""
    with contextlib.ExitStack() as stack:
        if input_needs_fetching(request):
            with progress.step("fetching", f"{request.model} (download, decrypt)"):
                local_model = stack.enter_context(resolve_input(request))
        else:
            local_model = stack.enter_context(resolve_input(request))
        with progress.step("startup", "(importing TensorFlow)"):  # so "loading" times the model
            import keras  # noqa: F401
        with progress.step("loading", str(request.model)):
            return modelio.load_model(local_model, safe_mode=request.safe_mode)


def close_names(wanted: list[str], names: list[str]) -> dict[str, list[str]]:
    """Each wanted name -> up to three existing names that look like it."""
    return {name: difflib.get_close_matches(name, names, n=3, cutoff=0.6) for name in wanted}


def warn_missing_excluded(prepared: PreparedModel, progress: Progress) -> None:
    names = prepared.layer_names()  # graph paths; nested layers also by their own name
    names += sorted({name.rpartition("/")[2] for name in names} - set(names))
    for name, close in close_names(prepared.unknown_excluded, names).items():
        hint = f"; close names: {', '.join(close)}" if close else ""
        progress.warn(f"excluded layer {name!r} is not in the model, ignoring it{hint}")


def choose_plan(
    prepared: PreparedModel, request: PruneRequest
) -> tuple[PrunePlan, TargetChoice | None]:
    """The plan for -pth, or for the threshold --target-ratio finds."""
    if request.target_ratio is None:
        return prepared.plan(), None
    choice = choose_threshold(prepared, request.target_ratio)
    return prepared.plan(choice.threshold), choice


def plan_step(
    model: keras.Model, request: PruneRequest, progress: Progress
) -> tuple[PreparedModel, PrunePlan, TargetChoice | None]:
    from pruner.core.plan import prepare

    with progress.step("preparing", "(channel graph and filter statistics)"):
        prepared = prepare(model, request.settings)
    warn_missing_excluded(prepared, progress)
    with progress.step("planning"):
        plan, choice = choose_plan(prepared, request)
    if choice is not None:
        progress.say(
            f"--target-ratio {choice.target}: threshold {choice.threshold!r} gives ratio "
            f"{choice.ratio:.4f} ({choice.plans_evaluated} plans evaluated)"
        )
        if not choice.reached:
            progress.warn(
                f"no threshold reaches ratio {choice.target}; pruning as far as the "
                f"settings allow gives {choice.ratio:.4f}"
            )
    return prepared, plan, choice


def surgery_step(
    prepared: PreparedModel, plan: PrunePlan, request: PruneRequest, progress: Progress
) -> tuple[keras.Model, dict[str, Any] | None]:
    """The pruned model, and the --verify result when asked for."""
    from pruner.core.surgery import apply_plan

    with progress.step("surgery"):
        pruned = apply_plan(prepared.model, plan)
    verification = None
    if request.verify:
        with progress.step("verifying", "(masked original vs pruned, random batch)"):
            verification = verify_pruned(prepared.model, plan, pruned)
    return pruned, verification


def save_step(
    pruned: keras.Model, params: int, request: PruneRequest, progress: Progress
) -> dict[str, Any]:
    """Save the pruned model and publish it; `params` sizes the private scratch space."""
    location = storage.parse_uri(str(request.output))
    if isinstance(location, LocalPath) and request.key is None:
        with stage_output(request, 0) as staged, progress.step("saving", str(request.output)):
            modelio.save_model(pruned, staged)
            return publish_output(staged, request)
    with stage_output(request, 4 * params) as staged:  # float32 weights
        with progress.step("saving", "(private temporary file)"):
            modelio.save_model(pruned, staged)
        how = ["encrypt"] if request.key is not None else []
        how += ["upload"] if isinstance(location, S3Object) else []
        with progress.step("publishing", f"{request.output} ({', '.join(how)})"):
            return publish_output(staged, request)


def checked_totals(
    totals: dict[str, dict[str, int]], pruned: keras.Model, progress: Progress
) -> dict[str, dict[str, int]]:
    """The plan's predicted counts, with the parameter count the pruned model really has
    (they agree unless the core has a bug, which is then reported, not hidden)."""
    from pruner.core.counting import count_params

    counted = count_params(pruned)
    if counted == totals["params"]["after"]:
        return totals
    progress.warn(
        f"the pruned model has {counted:,} parameters, the plan predicted "
        f"{totals['params']['after']:,}; the report uses the model's count"
    )
    return {**totals, "params": {**totals["params"], "after": counted}}


def random_batch(model: keras.Model, seed: int = 0) -> Any:
    """Random float inputs in the structure the model was built with (a tensor, a list
    or a dict); axes the model leaves open get a small size."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)

    def fill(tensor: keras.KerasTensor) -> np.ndarray:
        shape = [VERIFY_BATCH] + [dim or VERIFY_UNKNOWN_DIM for dim in tensor.shape[1:]]
        return rng.standard_normal(shape).astype("float32")

    return keras.tree.map_structure(fill, model.input)


def verify_pruned(original: keras.Model, plan: PrunePlan, pruned: keras.Model) -> dict[str, Any]:
    """Run the masked original and the pruned model on one random batch; their outputs
    must agree within float32 rounding (VerificationFailed otherwise)."""
    import numpy as np

    from pruner.core.masking import mask_removed_filters

    masked = mask_removed_filters(original, plan)
    batch = random_batch(original)
    expected = [np.asarray(out) for out in _as_list(masked(batch, training=False))]
    actual = [np.asarray(out) for out in _as_list(pruned(batch, training=False))]
    worst = 0.0
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        if want.shape != got.shape:
            raise VerificationFailed(
                f"output {index} of the pruned model has shape {got.shape}, "
                f"the original {want.shape}"
            )
        diff = float(np.max(np.abs(want - got))) if want.size else 0.0
        limit = VERIFY_ATOL + VERIFY_RTOL * float(np.max(np.abs(want)) if want.size else 0.0)
        if not diff <= limit:  # NaN fails too
            raise VerificationFailed(
                f"output {index} of the pruned model differs from the masked original by "
                f"{diff:.3g} (> {limit:.3g}); the surgery changed what the model computes"
            )
        worst = max(worst, diff)
    return {"maxAbsDiff": worst, "rtol": VERIFY_RTOL, "atol": VERIFY_ATOL, "batch": VERIFY_BATCH}


def _as_list(outputs: Any) -> list[Any]:
    if isinstance(outputs, dict):
        return [outputs[key] for key in sorted(outputs)]
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def run_prune(request: PruneRequest, progress: Progress) -> dict[str, Any]:
    """Run the whole pipeline; returns the JSON report (also written where
    `report_destination` says)."""
    check_output(request)
    model = load_step(request, progress)
    prepared, plan, choice = plan_step(model, request, progress)
    totals = prepared.totals(plan)
    output = verification = None
    if not request.dry_run:
        pruned, verification = surgery_step(prepared, plan, request, progress)
        totals = checked_totals(totals, pruned, progress)
        output = save_step(pruned, totals["params"]["after"], request, progress)
    report = build_report(
        totals=totals,
        layers=plan.layers,
        settings=plan.settings.to_json(),  # with the threshold actually used
        timings=progress.timings,
        model=str(request.model),
        output=output,
        target=choice.to_json() if choice else None,
        plan=plan.to_json() if request.dry_run else None,
        verification=verification,
        dry_run=request.dry_run,
    )
    try:
        publish_report(report, request)
    except BaseException:
        if output is not None:
            retract_output(output, request)
        raise
    return report
