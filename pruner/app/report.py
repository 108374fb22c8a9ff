"""The JSON report and the human summary of one pruning run (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

REPORT_VERSION = 1


class LayerCounts(Protocol):
    """What the report needs of a pruner.core.plan.LayerPlan."""

    name: str
    type: str
    before: int

    @property
    def after(self) -> int: ...


def pruning_ratio(params: Mapping[str, int]) -> float:
    """TAO's pruning ratio: parameters after / parameters before (1.0 for an empty model)."""
    before = int(params["before"])
    return float(params["after"]) / before if before else 1.0


def layer_rows(layers: Iterable[LayerCounts]) -> list[dict[str, Any]]:
    return [
        {"name": layer.name, "type": layer.type, "before": int(layer.before), "after": layer.after}
        for layer in layers
    ]


def build_report(
    *,
    totals: Mapping[str, Mapping[str, int]],
    layers: Iterable[LayerCounts],
    settings: Mapping[str, Any],
    timings: Mapping[str, float],
    model: str,
    output: Mapping[str, Any] | None = None,
    target: Mapping[str, Any] | None = None,
    plan: Mapping[str, Any] | None = None,
    verification: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The report of issue 2 (camelCase keys), plus where things went and how long
    they took. `settings` is PruneSettings.to_json() with the threshold actually used;
    `target` (from --target-ratio) adds `settings.targetRatio` and the search result."""
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "params": {key: int(totals["params"][key]) for key in ("before", "after")},
        "filters": {key: int(totals["filters"][key]) for key in ("before", "after")},
        "flops": {key: int(totals["flops"][key]) for key in ("before", "after")},
        "pruningRatio": pruning_ratio(totals["params"]),
        "layers": layer_rows(layers),
        "settings": dict(settings),
        "model": model,
        "dryRun": dry_run,
        "timings": dict(timings),
    }
    if target is not None:
        report["settings"]["targetRatio"] = target["targetRatio"]
        report["targetSearch"] = dict(target)
    if output is not None:
        report["output"] = dict(output)
    if verification is not None:
        report["verification"] = dict(verification)
    if plan is not None:
        report["plan"] = dict(plan)
    return report


def human_count(value: float) -> str:
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {unit}"
    return f"{value:g}"


def human_bytes(size: float) -> str:
    for factor, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} B"


def _before_after(counts: Mapping[str, int]) -> str:
    return f"{counts['before']:,} -> {counts['after']:,}"


def format_summary(report: Mapping[str, Any], elapsed: float) -> str:
    """A few aligned lines for a person: what changed, where it went, how long it took."""
    settings = report["settings"]
    flops = report["flops"]
    rows: list[tuple[str, str]] = [
        ("model", str(report["model"])),
        ("parameters", _before_after(report["params"])),
        ("pruning ratio", f"{report['pruningRatio']:.4f}  (parameters after / before)"),
        ("filters", _before_after(report["filters"])),
        ("FLOPs", f"{human_count(flops['before'])} -> {human_count(flops['after'])}"),
    ]
    threshold = repr(settings["threshold"])
    search = report.get("targetSearch")
    if search is not None:
        threshold += f"  (chosen for --target-ratio {search['targetRatio']}"
        threshold += ")" if search["reached"] else "; not reachable, pruned as far as possible)"
    rows.append(("threshold", threshold))
    verification = report.get("verification")
    if verification is not None:
        rows.append(("verified", f"max |difference| {verification['maxAbsDiff']:.3g}"))
    output = report.get("output")
    if output is not None:
        rows.append(("output", f"{output['uri']} ({human_bytes(output['bytes'])})"))
    elif report.get("dryRun"):
        rows.append(("output", "none (--dry-run)"))
    rows.append(("time", f"{elapsed:.2f} s"))
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}}  {value}" for label, value in rows)
