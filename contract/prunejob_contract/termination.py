"""The termination message: the compact JSON a worker pod leaves in its termination log.

Kubernetes keeps at most 4096 bytes of a container's termination message, read from
`TERMINATION_LOG`; the operator builds the PruneJob status from it. Pure functions.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

TERMINATION_LOG = "/dev/termination-log"  # the container's terminationMessagePath
TERMINATION_LIMIT = 4096
FORMAT_VERSION = 1


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def success_message(
    report: dict[str, Any],
    *,
    output: dict[str, Any] | None = None,
    report_uri: str | None = None,
    limit: int = TERMINATION_LIMIT,
) -> str:
    """Encode a successful run; `report` is the pruner's JSON report.

    Per-layer counts go in plain (`layers`), else zlib+base64 (`layersZ`), else are
    dropped (`layersOmitted` = their number) so the message always fits in `limit`.
    """
    layers = [[item["name"], item["before"], item["after"]] for item in report.get("layers", [])]
    message: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "status": "Succeeded",
        "params": [report["params"]["before"], report["params"]["after"]],
        "filters": [report["filters"]["before"], report["filters"]["after"]],
        "flops": [report["flops"]["before"], report["flops"]["after"]],
        "pruningRatio": round(float(report["pruningRatio"]), 6),
    }
    threshold = report.get("settings", {}).get("threshold")
    if threshold is not None:
        message["threshold"] = threshold
    if output:
        message["output"] = {k: output[k] for k in ("uri", "sha256", "bytes") if k in output}
    if report_uri:
        message["reportUri"] = report_uri

    plain = _dump({**message, "layers": layers})
    if len(plain) <= limit:
        return plain
    packed = base64.b64encode(zlib.compress(_dump({"layers": layers}).encode(), 9)).decode()
    compressed = _dump({**message, "layersZ": packed})
    if len(compressed) <= limit:
        return compressed
    return _dump({**message, "layersOmitted": len(layers)})


def failure_message(reason: str, message: str, *, limit: int = TERMINATION_LIMIT) -> str:
    """Encode a failed run: a reason code and a one-line message, cut to fit."""
    body = {"v": FORMAT_VERSION, "status": "Failed", "reason": reason, "message": message}
    text = _dump(body)
    while len(text) > limit and body["message"]:
        body["message"] = body["message"][: max(0, len(body["message"]) - (len(text) - limit) - 3)]
        body["message"] += "..."
        text = _dump(body)
    return text


def decode_message(text: str) -> dict[str, Any]:
    """Decode a termination message into a dict; `layers` is always a list of
    `{"name", "before", "after"}` (empty when the message omitted them).

    Raises ValueError when the text is not a termination message of ours.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"termination message is not JSON: {err}") from None
    if not isinstance(data, dict) or data.get("status") not in ("Succeeded", "Failed"):
        raise ValueError("termination message has no status Succeeded/Failed")
    raw_layers = data.pop("layers", None)
    packed = data.pop("layersZ", None)
    if packed is not None:
        raw_layers = json.loads(zlib.decompress(base64.b64decode(packed)))["layers"]
    data["layers"] = [
        {"name": name, "before": before, "after": after} for name, before, after in raw_layers or []
    ]
    return data
