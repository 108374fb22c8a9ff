"""The README's sections and their `sh` blocks' commands, for tests that run them as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    """The README text from the heading `title` to the next heading (outside code blocks)."""
    lines, inside, fenced = [], False, False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            if inside:
                break
            inside = line == title
        if inside:
            lines.append(line)
    return "\n".join(lines) + "\n"


def commands(text: str, tools: tuple[str, ...] | None = None) -> list[list[str]]:
    """The commands in the `sh` blocks of `text` (those of `tools` only, if given), as
    words, continuation lines joined and comments dropped."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and (tools is None or words[0] in tools):
                found.append(words)
    return found
