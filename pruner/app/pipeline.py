"""The steps of one `prunejob prune` run, from the input to the report.

Resolve input -> read -> prepare -> plan -> surgery -> verify -> write + publish ->
report.

The model file is read into its config and weights (`pruner.io.modelfile`, no
Keras), the core plans and slices them, and the pruned file is the input file
edited. TensorFlow is imported only by `--verify`. `run_prune` owns the run's one
`S3Store` (one boto3 client, made on first use) and hands it to every step that
touches S3.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
from typing import Any

from prunejob_contract.errors import InvalidArgument
from pruner.app import artifacts
from pruner.app.preflight import check_output, input_needs_fetching
from pruner.app.progress import Progress
from pruner.app.report import build_report
from pruner.app.request import PruneRequest
from pruner.app.signals import sigterm_raises
from pruner.app.verify import verify_pruned
from pruner.core.counting import count_params
from pruner.core.plan import PreparedModel, PrunePlan, prepare
from pruner.core.surgery import apply_plan
from pruner.core.target import TargetChoice, choose_threshold
from pruner.io import modelfile
from pruner.io.locations import S3Object
from pruner.io.s3 import S3Store

Config = dict[str, Any]
Weights = dict[str, list[Any]]
VERIFY_MODULES = ("tensorflow", "keras")


def check_verify_available(request: PruneRequest) -> None:
    """--verify runs the models in Keras: a one-line error, before any work, when this
    installation has no TensorFlow/Keras (the CPU worker image)."""
    if not request.verify:
        return
    missing = [name for name in VERIFY_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise InvalidArgument(
            f"--verify needs {' and '.join(missing)}, which this installation lacks: install "
            "prunejob[pruner] (the GPU worker image has it), or run without --verify"
        )


def load_step(
    request: PruneRequest, store: S3Store, progress: Progress, stack: contextlib.ExitStack
) -> modelfile.ModelFile:
    """Resolve the input and read it; the local plaintext stays until `stack` closes
    (writing the pruned file copies what pruning leaves alone from it)."""
    if input_needs_fetching(request):
        with progress.step("fetching", f"{request.model} (download, decrypt)"):
            local_model = stack.enter_context(artifacts.resolve_input(request, store))
    else:
        local_model = stack.enter_context(artifacts.resolve_input(request, store))
    with progress.step("loading", str(request.model)):
        model = modelfile.read_model(local_model, shown=str(request.model))
    if request.output is not None and not request.dry_run:
        modelfile.check_same_format(model, request.output.name, str(request.output))
    return model


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
    model: modelfile.ModelFile, request: PruneRequest, progress: Progress
) -> tuple[PreparedModel, PrunePlan, TargetChoice | None]:
    with progress.step("preparing", "(channel graph and filter statistics)"):
        prepared = prepare(model.config, model.weights, request.settings)
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


def plan_and_totals(
    model: modelfile.ModelFile, request: PruneRequest, progress: Progress
) -> tuple[PrunePlan, dict[str, dict[str, int]], TargetChoice | None]:
    """The plan, its totals and the --target-ratio choice; the prepared model (which
    holds the input's weights) is dropped on return."""
    prepared, plan, choice = plan_step(model, request, progress)
    return plan, prepared.totals(plan), choice


def surgery_step(
    model: modelfile.ModelFile, plan: PrunePlan, request: PruneRequest, progress: Progress
) -> tuple[Config, Weights, dict[str, Any] | None]:
    """The pruned config and weights, and the --verify result when asked for."""
    with progress.step("surgery"):
        # Without --verify nothing reads the input's weights again: each layer's are
        # freed as soon as they are sliced, so they and the pruned ones never coexist.
        consume = not request.verify
        config, weights = apply_plan(model.config, model.weights, plan, consume=consume)
    verification = None
    if request.verify:
        with progress.step("startup", "(importing TensorFlow, for --verify)"):
            import keras  # noqa: F401  # lazy: only --verify runs the models
        with progress.step("verifying", "(masked original vs pruned, random batch)"):
            verification = verify_pruned(
                model.config, model.weights, plan, config, weights, safe_mode=request.safe_mode
            )
    return config, weights, verification


def save_step(
    model: modelfile.ModelFile,
    pruned: tuple[Config, Weights],
    request: PruneRequest,
    store: S3Store,
    progress: Progress,
) -> dict[str, Any]:
    """Write the pruned file (the input file, edited) and publish it."""
    config, weights = pruned
    if model.dropped:
        progress.say(
            f"dropped: {', '.join(model.dropped)} (their shapes do not fit the pruned model)"
        )
    if artifacts.stages_beside_output(request):
        with (
            artifacts.stage_output(request, 0) as staged,
            progress.step("saving", str(request.output)),
        ):
            modelfile.write_model(model, config, weights, staged)
            return artifacts.publish_output(staged, request, store)
    # A .keras archive's weights file is written beside it first: twice the room.
    room = model.size * (2 if model.format == "keras" else 1)
    with artifacts.stage_output(request, room) as staged:
        with progress.step("saving", "(private temporary file)"):
            modelfile.write_model(model, config, weights, staged)
        how = ["encrypt"] if request.key is not None else []
        how += ["upload"] if isinstance(request.output, S3Object) else []
        with progress.step("publishing", f"{request.output} ({', '.join(how)})"):
            return artifacts.publish_output(staged, request, store)


def checked_totals(
    totals: dict[str, dict[str, int]], weights: Weights, progress: Progress
) -> dict[str, dict[str, int]]:
    """The plan's predicted counts, with the parameter count the pruned weights really
    have (they agree unless the core has a bug, which is then reported, not hidden)."""
    counted = count_params(weights)
    if counted == totals["params"]["after"]:
        return totals
    progress.warn(
        f"the pruned model has {counted:,} parameters, the plan predicted "
        f"{totals['params']['after']:,}; the report uses the model's count"
    )
    return {**totals, "params": {**totals["params"], "after": counted}}


def run_prune(
    request: PruneRequest, progress: Progress, store: S3Store | None = None
) -> dict[str, Any]:
    """Run the whole pipeline; returns the JSON report (also written where
    `request.report_location` says). SIGTERM stops the run by unwinding it, so no
    plaintext or partial output is left behind."""
    store = store if store is not None else S3Store(request.s3)
    with sigterm_raises(), contextlib.ExitStack() as stack:
        check_verify_available(request)
        check_output(request, store)
        model = load_step(request, store, progress, stack)
        plan, totals, choice = plan_and_totals(model, request, progress)
        output = verification = None
        if not request.dry_run:
            config, weights, verification = surgery_step(model, plan, request, progress)
            totals = checked_totals(totals, weights, progress)
            # The input's weights are no longer needed (without --verify the surgery has
            # freed them already): the write holds only the pruned ones.
            model.release_weights()
            output = save_step(model, (config, weights), request, store, progress)
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
            artifacts.publish_report(report, request, store)
        except BaseException:
            if output is not None:
                artifacts.retract_output(request, store)
            raise
        return report
