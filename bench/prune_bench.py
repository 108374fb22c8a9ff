"""Benchmark: what pruning costs compared with a plain Keras load + save of the same file.

    python bench/prune_bench.py [--models resnet50,vgg16] [--repeat 3] [--size 224]
                                [--formats keras,hdf5] [--json out.json]

For each keras.applications model (weights=None, so nothing is downloaded) and format:
1. a setup process builds it (`.keras` with Keras 3; `.hdf5` with tf_keras, Keras 2 as
   TAO writes it), saves it and picks the threshold that removes ~25% of the filters
   (the plan-only search of --target-ratio, on the filter count; not timed);
2. a fresh process loads and saves the file with plain Keras (the Keras that wrote it)
   -- the baseline;
3. a fresh process runs `prunejob prune -m FILE -o OUT -pth T` (no --verify), exactly
   as a user or the worker pod does.
Both sides are timed as whole processes, from spawn to exit (interpreter start and
imports included: pruning imports no TensorFlow, the baseline must), and record
their own peak RSS (VmHWM at exit). With --repeat N, sides interleave and the fastest of N runs
of each counts. The headline figure is prune / plain; the goal for ResNet50 is
<= 0.5, and a peak RSS of at most twice the file plus the interpreter (the peak of
`prunejob prune --help`, which loads the same modules).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

# `python -c PRUNEJOB RECORD ARGS...` runs `prunejob ARGS` and records its peak RSS
# at exit in RECORD, as VmHWM (this process' own memory since exec): ru_maxrss of a
# child also counts the parent's memory it was forked from.
from tests.pruner.peak_rss import PRUNEJOB, record_peak_at_exit  # noqa: E402

MODELS: dict[str, str] = {
    "resnet50": "ResNet50",
    "mobilenetv2": "MobileNetV2",
    "efficientnetb0": "EfficientNetB0",
    "vgg16": "VGG16",
}
FORMATS = {"keras": ".keras", "hdf5": ".hdf5"}
FILTERS_KEPT = 0.75  # remove ~25% of the filters
TARGET_RATIO = {"resnet50": 0.5}
MiB = 1024 * 1024

PLAIN = (
    record_peak_at_exit(4)
    + """import json, time
start = time.perf_counter()
if sys.argv[1] == "hdf5":
    import tf_keras as keras
    load = keras.models.load_model
else:
    import keras
    load = keras.saving.load_model
imported = time.perf_counter()
model = load(sys.argv[2], compile=False)
loaded = time.perf_counter()
model.save(sys.argv[3])
saved = time.perf_counter()
times = {"import": imported - start, "load": loaded - imported, "save": saved - loaded}
print(json.dumps(times))
"""
)


def setup(name: str, fmt: str, size: int, path: Path) -> dict[str, Any]:
    """Build, save and choose the threshold (runs in a child process: not timed)."""
    if fmt == "hdf5":
        import tf_keras as keras
    else:
        import keras

    from prunejob_contract.settings import PruneSettings
    from pruner.core.plan import prepare
    from pruner.core.target import choose_threshold
    from pruner.io.modelfile import read_model

    builder = getattr(keras.applications, MODELS[name])
    builder(weights=None, input_shape=(size, size, 3)).save(path)
    model = read_model(path)
    prepared = prepare(model.config, model.weights, PruneSettings())
    choice = choose_threshold(prepared, FILTERS_KEPT, metric="filters")
    return {"threshold": choice.threshold, "filtersRatio": choice.ratio}


def run_process(argv: list[str], folder: Path) -> dict[str, Any]:
    """Run `argv` to completion: wall seconds from spawn to exit, its output, and the
    peak RSS it recorded in `folder/peak` (the PLAIN and PRUNEJOB scripts do)."""
    out_path, err_path, peak_path = folder / "stdout", folder / "stderr", folder / "peak"
    peak_path.unlink(missing_ok=True)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=out, stderr=err, cwd=ROOT, check=False)
        wall = time.perf_counter() - start
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{stderr[-3000:]}")
    peak = float(peak_path.read_text()) if peak_path.exists() else None
    return {"wall": wall, "peakRssMiB": peak, "stdout": stdout}


def measure(name: str, fmt: str, size: int, repeat: int, folder: Path) -> dict[str, Any]:
    path = folder / f"{name}{FORMATS[fmt]}"
    setup_run = run_process(
        [sys.executable, __file__, "--setup", name, fmt, str(size), str(path)], folder
    )
    threshold = json.loads(setup_run["stdout"].strip().splitlines()[-1])["threshold"]
    plain_out = folder / f"{name}.plain{FORMATS[fmt]}"
    pruned_out = folder / f"{name}.pruned{FORMATS[fmt]}"
    report = folder / f"{name}.report.json"
    prunejob = [sys.executable, "-c", PRUNEJOB, str(folder / "peak")]
    prune_argv = [*prunejob, "prune", "-m", str(path), "-o"]
    prune_argv += [str(pruned_out), "-pth", repr(threshold), "--overwrite"]
    prune_argv += ["--report", str(report)]
    plains, prunes = [], []
    for _ in range(repeat):  # interleaved, so load drift hits both sides alike
        plain_argv = [sys.executable, "-c", PLAIN, fmt, str(path), str(plain_out)]
        plain = run_process([*plain_argv, str(folder / "peak")], folder)
        plain["inside"] = json.loads(plain["stdout"].strip().splitlines()[-1])
        plains.append(plain)
        pruned = run_process(prune_argv, folder)
        pruned["report"] = json.loads(report.read_text())
        prunes.append(pruned)
    base = run_process([*prunejob, "prune", "--help"], folder)
    plain = min(plains, key=lambda run: run["wall"])
    pruned = min(prunes, key=lambda run: run["wall"])
    return {
        "model": name,
        "format": fmt,
        "threshold": threshold,
        "fileBytes": path.stat().st_size,
        "prunedBytes": pruned_out.stat().st_size,
        "interpreterRssMiB": base["peakRssMiB"],
        "plain": {key: plain[key] for key in ("wall", "peakRssMiB", "inside")},
        "prune": {
            "wall": pruned["wall"],
            "peakRssMiB": pruned["peakRssMiB"],
            "timings": pruned["report"]["timings"],
            "params": pruned["report"]["params"],
            "filters": pruned["report"]["filters"],
        },
        "ratio": pruned["wall"] / plain["wall"],
        "runs": {"plain": [r["wall"] for r in plains], "prune": [r["wall"] for r in prunes]},
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'model':<15}{'fmt':<7}{'MiB':>5}{'read':>6}{'plan':>6}{'surg':>6}{'write':>6}"
        f"{'prune':>7} |{'load':>6}{'save':>6}{'plain':>7} |{'ratio':>6}{'work':>6}"
        f"  {'params before -> after':<25}{'filters':>8}"
        f"{'RSS prune':>11}{'limit':>7}{'RSS plain':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        prune, plain = row["prune"], row["plain"]
        timings = prune["timings"]
        plan_time = timings.get("preparing", 0.0) + timings.get("planning", 0.0)
        params, filters = prune["params"], prune["filters"]
        removed = 1 - filters["after"] / filters["before"]
        limit = 2 * row["fileBytes"] / MiB + row["interpreterRssMiB"]
        work = sum(timings[key] for key in ("loading", "preparing", "planning", "surgery"))
        work = (work + timings["saving"]) / (plain["inside"]["load"] + plain["inside"]["save"])
        print(
            f"{row['model']:<15}{row['format']:<7}{row['fileBytes'] / MiB:>5.0f}"
            f"{timings['loading']:>6.2f}{plan_time:>6.2f}{timings['surgery']:>6.2f}"
            f"{timings['saving']:>6.2f}{prune['wall']:>7.2f} |"
            f"{plain['inside']['load']:>6.2f}{plain['inside']['save']:>6.2f}{plain['wall']:>7.2f} |"
            f"{row['ratio']:>6.2f}{work:>6.2f}  {params['before']:>11,} -> {params['after']:>10,}"
            f"{removed:>8.1%}{prune['peakRssMiB']:>7.0f} MiB{limit:>7.0f}"
            f"{plain['peakRssMiB']:>7.0f} MiB"
        )
    print(
        "\nseconds, whole processes (spawn to exit). prune = `prunejob prune` (read = the model\n"
        "file read, plan = channel graph + statistics + plan, surg = slicing, write = the\n"
        "edited file written; the rest is interpreter start, imports and the report); plain =\n"
        "Keras load + save of the same file (load and save as timed inside it; the rest is\n"
        "starting Python and importing TensorFlow). ratio = prune / plain; work = the same\n"
        "without process start and imports: (read + plan + surg + write) / (load + save).\n"
        "filters = share removed. limit = 2 x file + the interpreter's own peak (the peak\n"
        "RSS of `prunejob prune --help`)."
    )
    for row in rows:
        target = TARGET_RATIO.get(row["model"])
        limit = 2 * row["fileBytes"] / MiB + row["interpreterRssMiB"]
        memory = "within" if row["prune"]["peakRssMiB"] <= limit else "OVER"
        if target is not None:
            verdict = "meets" if row["ratio"] <= target else "MISSES"
            print(
                f"{row['model']} ({row['format']}): ratio {row['ratio']:.2f} {verdict} the "
                f"goal <= {target}; peak RSS {row['prune']['peakRssMiB']:.0f} MiB {memory} "
                f"{limit:.0f} MiB"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--formats", default="keras", help="keras, hdf5 or keras,hdf5")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; fastest counts")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--table", type=Path, help="only print the table of a --json file")
    parser.add_argument("--setup", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.setup:
        name, fmt, size, path = args.setup
        print(json.dumps(setup(name, fmt, int(size), Path(path))))
        return 0

    if args.table:
        print_table(json.loads(args.table.read_text()))
        return 0
    names = [name.strip().lower() for name in args.models.split(",") if name.strip()]
    formats = [fmt.strip().lower() for fmt in args.formats.split(",") if fmt.strip()]
    unknown = sorted(set(names) - set(MODELS)) + sorted(set(formats) - set(FORMATS))
    if unknown:
        parser.error(f"unknown models or formats: {', '.join(unknown)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as folder:
        for fmt in formats:
            for name in names:
                print(f"measuring {name} ({fmt}) ...", file=sys.stderr, flush=True)
                rows.append(measure(name, fmt, args.size, args.repeat, Path(folder)))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
