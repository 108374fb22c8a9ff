"""The JSON report and the human summary, from hand-made counts."""

from __future__ import annotations

import json

from prunejob_contract.settings import PruneSettings
from pruner.app.report import build_report, format_summary, human_bytes, human_count
from pruner.core.plan import LayerPlan

TOTALS = {
    "params": {"before": 1000, "after": 600},
    "filters": {"before": 96, "after": 64},
    "flops": {"before": 4_000_000, "after": 2_500_000},
}
LAYERS = [LayerPlan("conv1", "Conv2D", 64, list(range(32))), LayerPlan("head", "Dense", 32, [])]


def report(**extra: object) -> dict:
    return build_report(
        totals=TOTALS,
        layers=LAYERS,
        settings=PruneSettings(threshold=0.25).to_json(),
        timings={"loading": 1.5},
        model="in.keras",
        **extra,  # type: ignore[arg-type]
    )


def test_report_has_the_issue_fields() -> None:
    data = report(output={"uri": "out.keras", "bytes": 2048})
    assert data["params"] == TOTALS["params"]
    assert data["pruningRatio"] == 0.6
    assert data["layers"] == [
        {"name": "conv1", "type": "Conv2D", "before": 64, "after": 32},
        {"name": "head", "type": "Dense", "before": 32, "after": 0},
    ]
    assert data["settings"]["threshold"] == 0.25
    assert data["settings"]["equalizationCriterion"] == "union"
    assert "targetRatio" not in data["settings"]
    assert "plan" not in data and "verification" not in data
    assert json.loads(json.dumps(data)) == data  # plain JSON


def test_target_search_lands_in_settings_and_summary() -> None:
    search = {"targetRatio": 0.5, "threshold": 0.25, "ratio": 0.6, "reached": False}
    data = report(target=search, dry_run=True)
    assert data["settings"]["targetRatio"] == 0.5
    summary = format_summary(data, elapsed=3.0)
    assert "threshold:      0.25  (chosen for --target-ratio 0.5; not reachable" in summary
    assert "output:         none (--dry-run)" in summary


def test_summary_lines() -> None:
    summary = format_summary(report(output={"uri": "out.keras", "bytes": 3 * 2**20}), 2.5)
    assert summary.splitlines() == [
        "model:          in.keras",
        "parameters:     1,000 -> 600",
        "pruning ratio:  0.6000  (parameters after / before)",
        "filters:        96 -> 64",
        "FLOPs:          4.00 M -> 2.50 M",
        "threshold:      0.25",
        "output:         out.keras (3.0 MiB)",
        "time:           2.50 s",
    ]


def test_human_units() -> None:
    assert (human_count(950), human_count(7.75e9)) == ("950", "7.75 G")
    assert (human_bytes(512), human_bytes(1536)) == ("512 B", "1.5 KiB")
