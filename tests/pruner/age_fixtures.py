"""Fixtures for the age format tests (tests/pruner/conftest.py registers them).

Drive the `age` binary, answering its passphrase prompts through a pseudo-terminal.

age reads passphrases from the controlling terminal only, so the tests run it under
`pty.fork()` (which makes the pty the child's controlling terminal) and type the
passphrase whenever a prompt appears.
"""

from __future__ import annotations

import os
import select
import shutil
import time
from dataclasses import dataclass

import pytest

from tests.pruner.age_terminal import PASSPHRASE_PROMPT, spawn_on_pty

AGE = shutil.which("age")


@dataclass(frozen=True)
class AgeRun:
    returncode: int
    transcript: str  # what age printed on the terminal (prompts and errors)


def run_age(args: list[str], passphrase: str, *, timeout: float = 60.0) -> AgeRun:
    """Run `age ARGS`, typing `passphrase` at every passphrase prompt."""
    assert AGE is not None
    pid, fd = spawn_on_pty(AGE, args)
    transcript = bytearray()
    answered_up_to = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                raise TimeoutError(f"age {' '.join(args)} did not finish in {timeout} s")
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: every copy of the terminal closed, age exited
                break
            if not data:
                break
            transcript += data
            if PASSPHRASE_PROMPT.search(bytes(transcript[answered_up_to:])):
                os.write(fd, passphrase.encode() + b"\n")
                answered_up_to = len(transcript)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return AgeRun(os.waitstatus_to_exitcode(status), transcript.decode(errors="replace"))


@pytest.fixture
def age_tool():
    """`run_age`, or a skip when the `age` binary is missing (CI installs it)."""
    if AGE is None:
        pytest.skip("the `age` binary is not installed (apt-get install -y age)")
    return run_age


FAST_WORK_FACTOR = 10  # 1 MiB of scrypt memory: keeps the tests fast


@pytest.fixture
def encrypt_bytes():
    """Encrypt bytes with a low scrypt work factor (the format is the same)."""
    import io

    from pruner.io import age

    def encrypt(data: bytes, passphrase: str, work_factor: int = FAST_WORK_FACTOR) -> bytes:
        out = io.BytesIO()
        age.encrypt_stream(io.BytesIO(data), out, passphrase, work_factor=work_factor)
        return out.getvalue()

    return encrypt
