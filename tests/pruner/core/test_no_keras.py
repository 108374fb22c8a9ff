"""Test that the core's main path imports neither Keras nor TensorFlow.

The core's main path needs no Keras: planning, surgery, masking, counting and the target
search on a file's config and weights, in a fresh interpreter, import neither Keras nor
TensorFlow (the worker then starts in about a second, and a CPU image without
TensorFlow can prune)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.pruner.core.helpers import live, live_k2, randomize, zero_quarter

REPO = Path(__file__).resolve().parents[3]
SCRIPT = r"""
import json, sys
import numpy as np
from prunejob_contract.settings import PruneSettings
from pruner.core.counting import count_flops, count_params
from pruner.core.dialect import keras3_config
from pruner.core.masking import mask_removed_filters
from pruner.core.plan import prepare
from pruner.core.surgery import apply_plan
from pruner.core.target import choose_threshold
import pruner.core.build  # importable without Keras: it loads Keras only when called

config = json.loads(open(sys.argv[1]).read())
arrays = np.load(sys.argv[2])
weights = {}
for key in sorted(arrays.files, key=lambda k: (k.rsplit("|", 1)[0], int(k.rsplit("|", 1)[1]))):
    weights.setdefault(key.rsplit("|", 1)[0], []).append(arrays[key])
settings = PruneSettings(threshold=1e-4, granularity=1, min_num_filters=1)
prepared = prepare(config, weights, settings)
plan = prepared.plan()
totals = prepared.totals(plan)
new_config, new_weights = apply_plan(config, weights, plan)
mask_removed_filters(config, weights, plan)
keras3_config(config)
choice = choose_threshold(prepared, 0.9)
assert count_params(new_weights) == totals["params"]["after"]
assert count_flops(new_config, new_weights) == totals["flops"]["after"]
loaded = {m.split(".")[0] for m in sys.modules}
heavy = sorted(loaded & {"keras", "tensorflow", "tf_keras", "jax", "torch"})
print(json.dumps({"heavy": heavy, "filters": totals["filters"], "threshold": choice.threshold}))
"""


def model(k: object) -> object:
    L = k.layers  # type: ignore[attr-defined]
    inp = k.Input((8, 8, 3))  # type: ignore[attr-defined]
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Flatten(name="flat")(x)
    return k.Model(inp, L.Dense(2, name="out")(x))  # type: ignore[attr-defined]


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_planning_and_surgery_import_no_keras(flavour: str, tmp_path: Path) -> None:
    if flavour == "keras3":
        m = model(keras)
        randomize(m)
        zero_quarter(m, keep={"out"})
        config, weights = live(m)
    else:
        tf_keras = pytest.importorskip("tf_keras")
        m = model(tf_keras)
        randomize(m)
        zero_quarter(m, keep={"out"})
        config, weights = live_k2(m)
    (tmp_path / "config.json").write_text(json.dumps(config))
    np.savez(
        tmp_path / "weights.npz",
        **{f"{path}|{i}": v for path, values in weights.items() for i, v in enumerate(values)},
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, tmp_path / "config.json", tmp_path / "weights.npz"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={"PYTHONPATH": f"{REPO}:{REPO / 'contract'}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert result["filters"] == {"before": 18, "after": 14}  # c1 and dw lose 2 each
