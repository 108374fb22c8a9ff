"""Writing the termination log: the worker's result, where Kubernetes reads it."""

from __future__ import annotations

import os
import sys

from prunejob_contract.termination import TERMINATION_LOG


def write_termination_log(path: str | None, text: str) -> None:
    """Leave the worker's result for Kubernetes (and so the operator).

    With no path, TERMINATION_LOG (/dev/termination-log) is used when it is writable
    (it is in a pod). Never raises: failing to report must not change the run's
    outcome.
    """
    target = path
    if target is None:
        if not os.access(TERMINATION_LOG, os.W_OK):
            return
        target = TERMINATION_LOG
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
    except Exception as err:  # never raise from the reporting path
        print(f"warning: cannot write the termination log {target}: {err}", file=sys.stderr)
