"""The steps of one `prunejob prune` run: resolve input -> load -> prepare -> plan ->
surgery -> verify -> save + publish -> report.

Plug points for the storage/encryption layer (issue 3) are the four functions in the
"I/O edges" section: `check_output`, `resolve_input`, `stage_output` and
`publish_output` (+ `publish_report`). They implement plain local files now; S3 URIs,
age decryption/encryption, `--overwrite` and the termination log replace their bodies
without touching the steps in between.

TensorFlow is imported only inside the steps, so argument errors stay instant.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruner import modelio
from pruner.errors import InvalidArgument, KeyRequired, OutputExists, VerificationFailed
from pruner.progress import Progress
from pruner.report import build_report, write_json
from pruner.settings import PruneSettings
from pruner.target import TargetChoice, choose_threshold

if TYPE_CHECKING:
    import keras
    import numpy as np

    from pruner.plan import PreparedModel, PrunePlan

# --verify: outputs may differ by float32 rounding only. Removing exactly-zero terms
# reorders sums, so the bound is relative to each output's magnitude.
VERIFY_RTOL = 1e-4
VERIFY_ATOL = 1e-6
VERIFY_BATCH = 2
VERIFY_UNKNOWN_DIM = 32  # size used for input axes the model leaves open (None)


@dataclass(frozen=True)
class PruneRequest:
    """Everything one run needs, already validated (built by pruner.cli)."""

    model: str  # input location: a local path now (an S3 URI / encrypted file later)
    output: str | None  # None only with dry_run
    settings: PruneSettings
    key: str = ""  # "" = no key
    target_ratio: float | None = None
    report: str | None = None
    dry_run: bool = False
    verify: bool = False
    force: bool = False  # allow output == input
    safe_mode: bool = True


# ---------------------------------------------------------------- I/O edges (plug points)


def check_output(request: PruneRequest) -> None:
    """Fail fast, before the slow work, when the output (or report) can't be written."""
    if request.report is not None:
        report_path = Path(request.report)
        if request.output is not None and modelio.same_file(report_path, Path(request.output)):
            raise InvalidArgument(f"--report {report_path} is the same file as the output model")
        modelio.prepare_output_dir(report_path)
    if request.dry_run:
        return  # nothing is written, so nothing about -o matters
    if request.output is None:
        raise InvalidArgument("-o/--output_file is required (unless --dry-run)")
    output = Path(request.output)
    modelio.output_format(output)
    if not request.force and modelio.same_file(output, Path(request.model)):
        raise OutputExists(
            f"output {output} is the input model; refusing to overwrite it (pass --force)"
        )
    modelio.prepare_output_dir(output)


@contextlib.contextmanager
def resolve_input(request: PruneRequest) -> Iterator[Path]:
    """A local plaintext model path for `request.model`, valid inside the block.

    Local files only for now: no download, no decryption. A key given for a plain
    file is an error rather than silently ignored.
    """
    path = Path(request.model)
    found = modelio.inspect_model_file(path)  # missing / unreadable / not a model
    if found == "age" and request.key:
        raise InvalidArgument(
            f"model {path} is age-encrypted, and this build cannot decrypt models yet; "
            "decrypt it first"
        )
    if found == "age":
        raise KeyRequired(f"model file {path} is age-encrypted; give its key with -k")
    if request.key:
        raise InvalidArgument(
            f"a key was given (-k) but model {path} is not encrypted; drop -k for plain models"
        )
    yield path


@contextlib.contextmanager
def stage_output(request: PruneRequest) -> Iterator[Path]:
    """Where to save the plaintext model before it is published: a temp file next to
    the output (same filesystem, so publishing is an atomic rename); removed if the
    run fails before publishing."""
    assert request.output is not None
    with modelio.staged_file(Path(request.output)) as staged:
        yield staged


def publish_output(staged: Path, request: PruneRequest) -> dict[str, Any]:
    """Move the saved model into place; returns {"uri", "bytes"} of what was stored (the
    S3 version adds "sha256", which it needs for the object metadata anyway)."""
    assert request.output is not None
    output = Path(request.output)
    size = staged.stat().st_size
    modelio.commit_file(staged, output)
    return {"uri": str(output), "bytes": size}


def publish_report(report: dict[str, Any], request: PruneRequest) -> None:
    if request.report is not None:
        write_json(report, Path(request.report))


# ---------------------------------------------------------------- steps


def load_step(request: PruneRequest, progress: Progress) -> keras.Model:
    """Resolve the input and load it (Sequential models are converted by `prepare`)."""
    with resolve_input(request) as local_model:
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
    from pruner.plan import prepare

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
    from pruner.surgery import apply_plan

    with progress.step("surgery"):
        pruned = apply_plan(prepared.model, plan)
    verification = None
    if request.verify:
        with progress.step("verifying", "(masked original vs pruned, random batch)"):
            verification = verify_pruned(prepared.model, plan, pruned)
    return pruned, verification


def save_step(pruned: keras.Model, request: PruneRequest, progress: Progress) -> dict[str, Any]:
    with stage_output(request) as staged, progress.step("saving", str(request.output)):
        modelio.save_model(pruned, staged)
        return publish_output(staged, request)


def checked_totals(
    totals: dict[str, dict[str, int]], pruned: keras.Model, progress: Progress
) -> dict[str, dict[str, int]]:
    """The plan's predicted counts, with the parameter count the pruned model really has
    (they agree unless the core has a bug, which is then reported, not hidden)."""
    from pruner.counting import count_params

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

    from pruner.masking import mask_removed_filters

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
    """Run the whole pipeline; returns the JSON report (also written with --report)."""
    check_output(request)
    model = load_step(request, progress)
    prepared, plan, choice = plan_step(model, request, progress)
    totals = prepared.totals(plan)
    output = verification = None
    if not request.dry_run:
        pruned, verification = surgery_step(prepared, plan, request, progress)
        totals = checked_totals(totals, pruned, progress)
        output = save_step(pruned, request, progress)
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
    publish_report(report, request)
    return report
