"""The kubectl on PATH, and why a test that needs kubectl's validated apply cannot run.

kubectl before 1.27 validates `apply`/`create` against OpenAPI v2 (protobuf), which the
dev cluster does not serve (it serves OpenAPI v3, what kubectl 1.27+ downloads); Debian
12's `kubernetes-client` is 1.20. Such a kubectl still gets, lists and patches.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

KUBECTL = shutil.which("kubectl")
VALIDATING_MINOR = 27  # the first kubectl that validates against OpenAPI v3


def _minor(kubectl: str) -> int | None:
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        found = re.match(r"\d+", json.loads(out)["clientVersion"]["minor"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    return int(found.group()) if found else None


def why_no_validated_apply() -> str | None:
    """None when the kubectl on PATH can `apply -f` with its default validation here."""
    if KUBECTL is None:
        return "kubectl is not installed"
    minor = _minor(KUBECTL)
    if minor is None:
        return f"cannot read the version of {KUBECTL}"
    if minor < VALIDATING_MINOR:
        return (
            f"kubectl 1.{minor} validates against OpenAPI v2, which the dev cluster does not "
            f"serve: validated apply needs kubectl >= 1.{VALIDATING_MINOR}"
        )
    return None


NO_VALIDATED_APPLY = why_no_validated_apply()
