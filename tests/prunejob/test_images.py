"""The images the Dockerfile builds: what each one installs (no Docker needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def stage(name: str) -> str:
    """The text of one build stage (from its FROM line to the next)."""
    match = re.search(
        rf"^FROM \S+ AS {re.escape(name)}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S
    )
    assert match, f"no stage {name!r} in the Dockerfile"
    return match.group(1)


def test_worker_cpu_installs_the_prune_extra_without_tensorflow() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert not [req for req in extras["prune"] if req.lower().startswith(("tensorflow", "keras"))]
    assert "--extra prune --no-emit-project > /src/worker-cpu-reqs.txt" in DOCKERFILE
    cpu = stage("worker-cpu")
    assert "/src/worker-cpu-reqs.txt" in cpu and "worker-reqs.txt" not in cpu
    assert "USER 65532:65532" in cpu


def test_the_gpu_worker_keeps_tensorflow_for_verify() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "prunejob[prune]" in extras["pruner"]
    assert any(req.startswith("tensorflow") for req in extras["pruner"])
    assert "/src/worker-reqs.txt" in stage("worker")
    # The last stage is what a plain `docker build .` gives: still the GPU worker.
    assert re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE, re.M)[-1] == "worker"
