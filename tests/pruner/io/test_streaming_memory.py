"""Memory stays flat while streaming: measured as peak RSS in a fresh subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STREAM_MIB = 256
# What is allowed on top of the process' peak before streaming: the three chunk
# buffers (~200 KiB) plus allocator noise; a buffering bug would add ~STREAM_MIB.
ALLOWED_GROWTH_MIB = 16

SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    from pruner.io import age

    size = int(sys.argv[1]) << 20

    class Zeros(io.RawIOBase):  # a plaintext stream that exists nowhere in memory
        def __init__(self, size):
            self.left = size
        def readable(self):
            return True
        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n) if n < 4096 else b"\\0" * n
            self.left -= n
            return n

    class Sink(io.RawIOBase):  # counts and drops what is written
        def __init__(self):
            self.size = 0
        def writable(self):
            return True
        def write(self, data):
            self.size += len(data)
            return len(data)

    class Encrypted(io.RawIOBase):  # the ciphertext of `size` zeros, produced on the fly
        def __init__(self, size):
            import threading, os
            read_fd, write_fd = os.pipe()
            self.pipe = os.fdopen(read_fd, "rb", buffering=0)
            def produce():
                with os.fdopen(write_fd, "wb") as out:
                    age.encrypt_stream(Zeros(size), out, "k", work_factor=10)
            self.thread = threading.Thread(target=produce, daemon=True)
            self.thread.start()
        def readable(self):
            return True
        def readinto(self, buffer):
            return self.pipe.readinto(buffer)

    def peak_mib():
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
        # (pytest) across exec, while VmHWM belongs to this process image alone.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status")

    # Warm up (imports, first allocations), then measure the growth of the peak.
    age.encrypt_stream(Zeros(1 << 20), Sink(), "k", work_factor=10)
    before = peak_mib()
    sink = Sink()
    age.encrypt_stream(Zeros(size), sink, "k", work_factor=10)
    after_encrypt = peak_mib()
    out = Sink()
    age.decrypt_stream(io.BufferedReader(Encrypted(size)), out, "k")
    after_decrypt = peak_mib()
    print(json.dumps({"before": before, "encrypt": after_encrypt, "decrypt": after_decrypt,
                      "encrypted": sink.size, "decrypted": out.size}))
    """
)


@pytest.mark.timeout(180)
def test_streaming_keeps_memory_flat(tmp_path: Path) -> None:
    script = tmp_path / "stream.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(STREAM_MIB)],
        capture_output=True,
        text=True,
        check=True,
        timeout=170,
    )
    result = json.loads(done.stdout)
    assert result["decrypted"] == STREAM_MIB << 20
    assert result["encrypted"] > result["decrypted"]
    assert result["encrypt"] - result["before"] < ALLOWED_GROWTH_MIB, result
    assert result["decrypt"] - result["before"] < ALLOWED_GROWTH_MIB, result
    assert result["decrypt"] < 64, result  # the bound, for the whole process
