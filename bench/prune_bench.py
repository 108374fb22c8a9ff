"""Benchmark: what pruning costs compared with just loading and saving the same model.

    python bench/prune_bench.py [--models resnet50,vgg16] [--repeat 2] [--size 224]

For each keras.applications model (weights=None, so nothing is downloaded):
1. a setup process builds it, saves it to a temporary .keras file and picks the
   threshold that removes ~25% of the filters (the same plan-only search as
   --target-ratio, on the filter count; not timed);
2. a fresh process loads and saves the model with plain Keras (the baseline);
3. a fresh process runs the whole `prunejob prune` pipeline on it with that threshold.
Each measured process imports TensorFlow before its clock starts, so both sides pay
the same fixed costs, and reports its own peak RSS. With --repeat N the fastest of
N runs of each side counts (the machine is shared). The headline figure is
(load+prune+save) / (load+save); the target for ResNet50 is <= 1.5.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

MODELS: dict[str, str] = {
    "resnet50": "ResNet50",
    "mobilenetv2": "MobileNetV2",
    "efficientnetb0": "EfficientNetB0",
    "vgg16": "VGG16",
}
FILTERS_KEPT = 0.75  # remove ~25% of the filters
TARGET_RATIO = {"resnet50": 1.5}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------ worker processes


def worker_setup(name: str, size: int, path: Path) -> dict[str, Any]:
    import keras

    from prunejob_contract.settings import PruneSettings
    from pruner.core.plan import prepare
    from pruner.core.target import choose_threshold

    builder = getattr(keras.applications, MODELS[name])
    model = builder(weights=None, input_shape=(size, size, 3))
    model.save(path)
    choice = choose_threshold(prepare(model, PruneSettings()), FILTERS_KEPT, metric="filters")
    return {"threshold": choice.threshold, "filtersRatio": choice.ratio}


def worker_plain(path: Path, output: Path) -> dict[str, Any]:
    import keras

    start = time.perf_counter()
    model = keras.saving.load_model(path, compile=False)
    loaded = time.perf_counter()
    model.save(output)
    saved = time.perf_counter()
    return {
        "load": loaded - start,
        "save": saved - loaded,
        "total": saved - start,
        "peakRssMiB": peak_rss_mib(),
    }


def worker_prune(path: Path, output: Path, threshold: float) -> dict[str, Any]:
    from prunejob_contract.settings import PruneSettings
    from pruner.app.pipeline import run_prune
    from pruner.app.progress import Progress
    from pruner.app.request import PruneRequest
    from pruner.io.locations import parse_uri

    # Import costs stay outside the clock, as for the baseline.
    for module in (
        "keras",
        "pruner.core.plan",
        "pruner.core.surgery",
        "pruner.core.counting",
        "pruner.core.graph",
    ):
        importlib.import_module(module)

    request = PruneRequest(
        model=parse_uri(str(path)),
        output=parse_uri(str(output)),
        settings=PruneSettings(threshold=threshold),
        overwrite=True,  # --repeat writes the same output again
    )
    start = time.perf_counter()
    report = run_prune(request, Progress("bench", quiet=True))
    total = time.perf_counter() - start
    return {
        "timings": report["timings"],
        "total": total,
        "params": report["params"],
        "filters": report["filters"],
        "peakRssMiB": peak_rss_mib(),
    }


def run_worker(*argv: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"worker {argv[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ the table


def measure(name: str, size: int, repeat: int, folder: Path) -> dict[str, Any]:
    path = folder / f"{name}.keras"
    setup = run_worker("setup", name, str(size), str(path))
    plains, prunes = [], []
    for _ in range(repeat):  # interleaved, so load drift hits both sides alike
        plains.append(run_worker("plain", str(path), str(folder / f"{name}.plain.keras")))
        prunes.append(
            run_worker(
                "prune", str(path), str(folder / f"{name}.pruned.keras"), repr(setup["threshold"])
            )
        )
    plain = min(plains, key=lambda run: run["total"])
    pruned = min(prunes, key=lambda run: run["total"])
    return {
        "model": name,
        "threshold": setup["threshold"],
        "plain": plain,
        "prune": pruned,
        "ratio": pruned["total"] / plain["total"],
        "modelBytes": path.stat().st_size,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'model':<15}{'load':>7}{'plan':>7}{'surgery':>8}{'save':>7}{'prune':>8}"
        f"{'| load':>8}{'save':>7}{'plain':>7}{' |':<3}{'ratio':>6}  "
        f"{'params before -> after':<25}{'filters':>9}{'RSS prune':>11}{'RSS plain':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        timings, plain = row["prune"]["timings"], row["plain"]
        plan_time = timings.get("preparing", 0.0) + timings.get("planning", 0.0)
        params, filters = row["prune"]["params"], row["prune"]["filters"]
        removed = 1 - filters["after"] / filters["before"]
        print(
            f"{row['model']:<15}{timings['loading']:>7.2f}{plan_time:>7.2f}"
            f"{timings['surgery']:>8.2f}{timings['saving']:>7.2f}{row['prune']['total']:>8.2f}"
            f"{plain['load']:>8.2f}{plain['save']:>7.2f}{plain['total']:>7.2f}{' |':<3}"
            f"{row['ratio']:>6.2f}  {params['before']:>11,} -> {params['after']:>10,}"
            f"{removed:>8.1%}{row['prune']['peakRssMiB']:>8.0f} MiB"
            f"{plain['peakRssMiB']:>7.0f} MiB"
        )
    print(
        "\nseconds. Left: the prune pipeline (plan = channel graph + stats + plan; prune = the\n"
        "whole run: load+prepare+plan+surgery+save). Between bars: plain Keras load+save of the\n"
        "same file. ratio = prune / plain. filters = share of filters removed. RSS = peak RSS\n"
        "of each process (TensorFlow alone is ~600 MiB)."
    )
    for row in rows:
        target = TARGET_RATIO.get(row["model"])
        if target is not None:
            verdict = "meets" if row["ratio"] <= target else "MISSES"
            print(f"{row['model']}: ratio {row['ratio']:.2f} {verdict} the target <= {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; fastest counts")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, *rest = args.worker
        if kind == "setup":
            result = worker_setup(rest[0], int(rest[1]), Path(rest[2]))
        elif kind == "plain":
            result = worker_plain(Path(rest[0]), Path(rest[1]))
        else:
            result = worker_prune(Path(rest[0]), Path(rest[1]), float(rest[2]))
        print(json.dumps(result))
        return 0

    names = [name.strip().lower() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as folder:
        for name in names:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            rows.append(measure(name, args.size, args.repeat, Path(folder)))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
