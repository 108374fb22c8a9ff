"""The steps of one `prunejob prune` run: resolve input -> load -> prepare -> plan ->
surgery -> verify -> save + publish -> report.

`run_prune` owns the run's one `S3Store` (one boto3 client, made on first use) and
hands it to every step that touches S3. TensorFlow and the core (numpy) are
imported only inside the steps, so argument errors stay instant.
"""

from __future__ import annotations

import contextlib
import difflib
from typing import TYPE_CHECKING, Any

from pruner.app import artifacts
from pruner.app.preflight import check_output, input_needs_fetching
from pruner.app.progress import Progress
from pruner.app.report import build_report
from pruner.app.request import PruneRequest
from pruner.app.signals import sigterm_raises
from pruner.app.verify import verify_pruned
from pruner.core.target import TargetChoice, choose_threshold
from pruner.io import modelfile
from pruner.io.locations import S3Object
from pruner.io.s3 import S3Store

if TYPE_CHECKING:
    import keras

    from pruner.core.plan import PreparedModel, PrunePlan


def load_step(request: PruneRequest, store: S3Store, progress: Progress) -> keras.Model:
    """Resolve the input and load it (Sequential models are converted by `prepare`)."""
    with contextlib.ExitStack() as stack:
        if input_needs_fetching(request):
            with progress.step("fetching", f"{request.model} (download, decrypt)"):
                local_model = stack.enter_context(artifacts.resolve_input(request, store))
        else:
            local_model = stack.enter_context(artifacts.resolve_input(request, store))
        # TensorFlow loads here, lazily, as its own step: so "loading" times the model.
        with progress.step("startup", "(importing TensorFlow)"):
            import keras  # noqa: F401
        with progress.step("loading", str(request.model)):
            return modelfile.load_model(local_model, safe_mode=request.safe_mode)


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
    from pruner.core.plan import prepare  # lazy: numpy loads with the model

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
    from pruner.core.surgery import apply_plan  # lazy: numpy loads with the model

    with progress.step("surgery"):
        pruned = apply_plan(prepared.model, plan)
    verification = None
    if request.verify:
        with progress.step("verifying", "(masked original vs pruned, random batch)"):
            verification = verify_pruned(prepared.model, plan, pruned)
    return pruned, verification


def save_step(
    pruned: keras.Model, params: int, request: PruneRequest, store: S3Store, progress: Progress
) -> dict[str, Any]:
    """Save the pruned model and publish it; `params` sizes the private scratch space."""
    if artifacts.stages_beside_output(request):
        with (
            artifacts.stage_output(request, 0) as staged,
            progress.step("saving", str(request.output)),
        ):
            modelfile.save_model(pruned, staged)
            return artifacts.publish_output(staged, request, store)
    with artifacts.stage_output(request, 4 * params) as staged:  # float32 weights
        with progress.step("saving", "(private temporary file)"):
            modelfile.save_model(pruned, staged)
        how = ["encrypt"] if request.key is not None else []
        how += ["upload"] if isinstance(request.output, S3Object) else []
        with progress.step("publishing", f"{request.output} ({', '.join(how)})"):
            return artifacts.publish_output(staged, request, store)


def checked_totals(
    totals: dict[str, dict[str, int]], pruned: keras.Model, progress: Progress
) -> dict[str, dict[str, int]]:
    """The plan's predicted counts, with the parameter count the pruned model really has
    (they agree unless the core has a bug, which is then reported, not hidden)."""
    from pruner.core.counting import count_params  # lazy: numpy loads with the model

    counted = count_params(pruned)
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
    with sigterm_raises():
        check_output(request, store)
        model = load_step(request, store, progress)
        prepared, plan, choice = plan_step(model, request, progress)
        totals = prepared.totals(plan)
        output = verification = None
        if not request.dry_run:
            pruned, verification = surgery_step(prepared, plan, request, progress)
            totals = checked_totals(totals, pruned, progress)
            output = save_step(pruned, totals["params"]["after"], request, store, progress)
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
