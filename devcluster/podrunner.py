"""The pod runner (kwok-like Job controller + kubelet): work in progress."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class PodRunner:
    def __init__(
        self,
        url: str,
        *,
        gpus: int = 8,
        node_labels: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        raise NotImplementedError("the pod runner is not there yet: use run_pods=False/--no-pods")

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def start_in_thread(self) -> None: ...

    def stop_thread(self) -> None: ...
