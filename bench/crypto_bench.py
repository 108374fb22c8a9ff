"""Throughput and memory of our age implementation against the `age` binary.

    python bench/crypto_bench.py [--size-mib 1024] [--repeat 2] [--dir /dev/shm]

Encrypts and decrypts the same random file with both, in the same run (runs
interleaved, best of N), and prints MB/s (10^6 bytes/s) per direction and the ratio
ours/age. Inputs sit on tmpfs and outputs go to /dev/null: on this VM writing fresh
pages (tmpfs or page cache) runs at ~200 MB/s for any program, which would hide the
crypto; one file-to-file encryption per tool is reported too. Each decrypts the
other's file (same bytes for both).

Each run pays one scrypt (work factor 2^18, ~1 s, 256 MiB) before streaming. Both
tools are timed the same way from outside: "payload" starts when the process has
written its first 32 KiB (/proc/PID/io wchar, polled every ms), i.e. once the key is
derived, and ends when it exits; "total" includes start-up and scrypt. Peak RSS is
the whole process (scrypt's 256 MiB included, for age too); for ours also the peak
while streaming (VmHWM reset once the key is derived).
Targets from the issue: >= 1000 MB/s payload per direction, ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: the age helpers live in tests/
from tests.pruner.age_terminal import PASSPHRASE_PROMPT, spawn_on_pty  # noqa: E402

KEY = "benchmark passphrase"
MB = 1_000_000
STREAMING_MARK = 32 * 1024  # bytes written once streaming has begun (headers are ~200)

# Our side, in a fresh interpreter so its memory is its own; prints one JSON line.
OURS = r"""
import sys
from pruner.io import age

direction, source, target, key = sys.argv[1:5]

def hwm_mib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024

class ResetPeakOnPayload:
    # Wraps the output; at the first payload write (the key is derived by then),
    # note the peak so far and reset it, so the streaming peak excludes scrypt.
    def __init__(self, handle, header_writes):
        self.handle, self.header_writes, self.kdf_peak = handle, header_writes, None
    def write(self, data):
        if self.header_writes == 0 and self.kdf_peak is None:
            self.kdf_peak = hwm_mib()
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
        self.header_writes -= 1
        return self.handle.write(data)

with open(source, "rb") as src, open(target, "wb", buffering=0) as dst:
    out = ResetPeakOnPayload(dst, 2 if direction == "encrypt" else 0)
    run = age.encrypt_stream if direction == "encrypt" else age.decrypt_stream
    moved = run(src, out, key)
print('{"bytes": %d, "peak_mib": %.1f, "streaming_peak_mib": %.1f}'
      % (moved, max(out.kdf_peak or 0, hwm_mib()), hwm_mib()))
"""


def _written(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as io_stats:
            for line in io_stats:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _watch(pid: int, start: float, poll: Callable[[], bool]) -> dict[str, float]:
    """Wait for `pid` while `poll()` is true, noting when streaming began."""
    streaming_at = None
    while poll():
        if streaming_at is None and _written(pid) >= STREAMING_MARK:
            streaming_at = time.perf_counter()
    end = time.perf_counter()
    return {"seconds": end - start, "payload_seconds": end - (streaming_at or start)}


def run_ours(direction: str, source: Path, target: Path) -> dict[str, float]:
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", OURS, direction, str(source), str(target), KEY],
        stdout=subprocess.PIPE,
        text=True,
    )

    def running() -> bool:
        try:
            process.wait(timeout=0.001)
        except subprocess.TimeoutExpired:
            return True
        return False

    timing = _watch(process.pid, start, running)
    assert process.stdout is not None
    result = json.loads(process.stdout.read())
    if process.returncode != 0:
        raise RuntimeError(f"our {direction} failed")
    return {**timing, **result}


def run_age(args: list[str]) -> dict[str, float]:
    """Run `age`, typing the passphrase at its prompts through a pseudo-terminal."""
    binary = shutil.which("age")
    assert binary
    start = time.perf_counter()
    pid, fd = spawn_on_pty(binary, args)
    transcript = bytearray()
    answered = 0

    def running() -> bool:
        nonlocal answered
        if not select.select([fd], [], [], 0.001)[0]:
            return True
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: age exited and closed the terminal
            return False
        transcript.extend(data)
        if PASSPHRASE_PROMPT.search(bytes(transcript[answered:])):
            os.write(fd, KEY.encode() + b"\n")
            answered = len(transcript)
        return bool(data)

    try:
        timing = _watch(pid, start, running)
    finally:
        os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"age {args} failed: {transcript.decode(errors='replace')}")
    return {**timing, "peak_mib": usage.ru_maxrss / 1024}


def measure(work: Path, size: int, repeat: int) -> dict[str, dict[str, dict[str, float]]]:
    plain = work / "plain.bin"
    with open(plain, "wb") as handle:
        for _ in range(size // (64 << 20)):
            handle.write(os.urandom(64 << 20))
        handle.write(os.urandom(size % (64 << 20)))
    sink = Path(os.devnull)
    results: dict[str, dict[str, dict[str, float]]] = {"ours": {}, "age": {}}
    print("file to file: each tool writes its ciphertext to tmpfs", file=sys.stderr)
    results["ours"]["encrypt_file"] = run_ours("encrypt", plain, work / "ours.age")
    results["age"]["encrypt_file"] = run_age(["-p", "-o", str(work / "age.age"), str(plain)])
    runs = {
        ("ours", "encrypt"): partial(run_ours, "encrypt", plain, sink),
        ("age", "encrypt"): partial(run_age, ["-p", "-o", str(sink), str(plain)]),
        ("ours", "decrypt"): partial(run_ours, "decrypt", work / "age.age", sink),
        ("age", "decrypt"): partial(run_age, ["-d", "-o", str(sink), str(work / "ours.age")]),
    }
    for attempt in range(repeat):  # interleaved, so background load hits both alike
        print(f"to /dev/null, round {attempt + 1} of {repeat}", file=sys.stderr)
        for (tool, direction), run in runs.items():
            result = run()
            best = results[tool].get(direction)
            if best is None or result["payload_seconds"] < best["payload_seconds"]:
                results[tool][direction] = result
    if results["ours"]["decrypt"].get("bytes") != size:
        raise RuntimeError("decrypting age's file did not give the original size back")
    return results


def report(results: dict, size: int) -> dict:
    summary: dict = {"size_bytes": size}
    for direction in ("encrypt", "decrypt"):
        row: dict = {}
        for tool in ("ours", "age"):
            run = results[tool][direction]
            row[tool] = {
                "payload_MBps": round(size / MB / run["payload_seconds"], 1),
                "total_MBps": round(size / MB / run["seconds"], 1),
                "total_seconds": round(run["seconds"], 3),
                "peak_rss_MiB": round(run["peak_mib"], 1),
            }
            if "streaming_peak_mib" in run:
                row[tool]["streaming_peak_rss_MiB"] = round(run["streaming_peak_mib"], 1)
        for kind in ("payload", "total"):
            row[f"ratio_{kind}_ours_over_age"] = round(
                row["ours"][f"{kind}_MBps"] / row["age"][f"{kind}_MBps"], 3
            )
        summary[direction] = row
    summary["encrypt_file_to_tmpfs"] = {
        tool: {
            "payload_MBps": round(size / MB / results[tool]["encrypt_file"]["payload_seconds"], 1),
            "total_MBps": round(size / MB / results[tool]["encrypt_file"]["seconds"], 1),
        }
        for tool in ("ours", "age")
    }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs per case")
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where the files go (tmpfs keeps disk speed out of it)",
    )
    args = parser.parse_args()
    if shutil.which("age") is None:
        print(
            "error: the `age` binary is needed for the comparison (apt-get install -y age)",
            file=sys.stderr,
        )
        return 1
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="crypto-bench-", dir=args.dir) as work:
        summary = report(measure(Path(work), size, args.repeat), size)
    print(json.dumps(summary, indent=2))
    for direction in ("encrypt", "decrypt"):
        row = summary[direction]
        print(
            f"{direction}: ours {row['ours']['payload_MBps']} MB/s payload "
            f"({row['ours']['total_MBps']} total), age {row['age']['payload_MBps']} MB/s "
            f"({row['age']['total_MBps']} total), payload ratio "
            f"{row['ratio_payload_ours_over_age']}; "
            f"ours peak RSS {row['ours']['peak_rss_MiB']} MiB "
            f"(streaming {row['ours']['streaming_peak_rss_MiB']} MiB), "
            f"age peak RSS {row['age']['peak_rss_MiB']} MiB",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
