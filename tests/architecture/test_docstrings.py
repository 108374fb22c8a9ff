"""The docstring rule of the layout: every module opens with a one-line summary.

A module's docstring starts with a complete summary on its opening line (ending in
`.`, `?` or `!`), then either ends or leaves a blank line before the detail, so that
the first line alone says what the module is (as `pydoc`, IDEs and `git grep` show it).
Checked on every project module: the packages pyproject.toml installs, the tests, the
benches and the dev cluster.
"""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXTRA_ROOTS = ("tests", "bench", "devcluster")


def package_roots() -> list[Path]:
    """The folders of the packages pyproject.toml installs, then the tests, benches, devcluster."""
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    roots = [
        folder
        for where in find["where"]
        for folder in sorted((REPO / where).iterdir())
        if (folder / "__init__.py").is_file()
        and any(fnmatch.fnmatch(folder.name, pattern) for pattern in find["include"])
    ]
    return roots + [REPO / name for name in EXTRA_ROOTS if REPO / name not in roots]


def project_modules() -> Iterator[Path]:
    for root in package_roots():
        for path in sorted(root.rglob("*.py")):
            if ".venv" not in path.relative_to(REPO).parts:
                yield path


def summary_problem(source: str) -> str | None:
    """Why the module's docstring does not open with a one-line summary, or None."""
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    if docstring is None:
        return "no module docstring"
    first, _, rest = docstring.partition("\n")
    if not first.strip() or first != first.strip():
        return "the summary is not on the opening line"
    if not first.endswith((".", "?", "!")):
        return f"the first line is not a complete sentence: {first!r}"
    if rest and rest.partition("\n")[0].strip():
        return f"the summary runs on past its first line: {first!r}"
    return None


def test_the_roots_include_every_installed_package_and_the_rest() -> None:
    names = {root.relative_to(REPO).as_posix() for root in package_roots()}
    assert {"prunejob", "pruner", "devcluster", "tests", "bench"} <= names
    assert {"operator/prunejob_operator", "contract/prunejob_contract"} <= names


def test_every_module_opens_with_a_one_line_summary() -> None:
    bad = [
        f"{path.relative_to(REPO)}: {problem}"
        for path in project_modules()
        if (problem := summary_problem(path.read_text())) is not None
    ]
    assert bad == []


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ('"""Summary."""\n', True),
        ('"""Summary?\n\nDetail\nmore detail.\n"""\n', True),
        ('"""Summary.\n"""\n', True),
        ("from __future__ import annotations\n", False),
        ('"""A summary that runs on\ninto a second line."""\n', False),
        ('"""A summary that runs on\ninto a second line.\n\nDetail.\n"""\n', False),
        ('"""\nSummary on the second line.\n"""\n', False),
        ('"""Summary without an end"""\n', False),
    ],
)
def test_the_check_tells_one_line_summaries_from_the_rest(source: str, ok: bool) -> None:
    assert (summary_problem(source) is None) == ok
