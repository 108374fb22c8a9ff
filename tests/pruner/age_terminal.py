"""Run the `age` binary on a pseudo-terminal, to type its passphrases.

age reads passphrases from its controlling terminal only, so the age tests and the
crypto bench run it under `pty.fork()`.
"""

from __future__ import annotations

import os
import pty
import re

# What age prints when it wants a passphrase (typed in answer, then a newline).
PASSPHRASE_PROMPT = re.compile(rb"passphrase[^\n]*: ?$", re.IGNORECASE)


def spawn_on_pty(binary: str, args: list[str]) -> tuple[int, int]:
    """Start `binary ARGS` with a new pty as its controlling terminal: (its pid, the
    pty's controller fd, to read its output from and type into)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: exec the binary with the pty as its controlling terminal
        try:
            os.execv(binary, [binary, *args])
        finally:
            os._exit(127)
    return pid, fd
