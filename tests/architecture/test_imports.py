"""The import rules of the layout (README "Development"), checked on the source files.

Every project module's imports are read with `ast` (function-local ones too, so no
rule can be dodged by importing late) and checked against the rooms' rules.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = {
    "prunejob_contract": REPO / "contract" / "prunejob_contract",
    "prunejob_operator": REPO / "operator" / "prunejob_operator",
    "pruner": REPO / "pruner",
    "prunejob": REPO / "prunejob",
    "devcluster": REPO / "devcluster",
}
PROJECT_PACKAGES = frozenset(SOURCE_ROOTS)


def module_name(package: str, path: Path) -> str:
    parts = [package, *path.relative_to(SOURCE_ROOTS[package]).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[str, Path]]:
    for package, root in SOURCE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            yield module_name(package, path), path


def imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name, node.lineno
            for alias in node.names:  # `from pkg import submodule`
                yield f"{name}.{alias.name}", node.lineno


def project_imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    for name, line in imported(module, path):
        if name.partition(".")[0] in PROJECT_PACKAGES:
            yield name, line


ALL = dict(modules())


def top(name: str) -> str:
    return name.partition(".")[0]


def test_every_module_opens_with_a_docstring() -> None:
    missing = [
        str(path.relative_to(REPO))
        for _, path in ALL.items()
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("prunejob_contract", set()),
        ("prunejob_operator", {"prunejob_contract"}),
        ("pruner.core", {"prunejob_contract"}),
        ("pruner.io", {"prunejob_contract"}),
        ("pruner.app", {"prunejob_contract", "pruner.core", "pruner.io"}),
        ("pruner.cli", {"prunejob_contract", "pruner.core", "pruner.io", "pruner.app"}),
        ("devcluster", set()),
        ("devcluster.apiserver", {"devcluster.clock"}),
        ("devcluster.runner", {"devcluster.clock", "devcluster.loop"}),
    ],
)
def test_package_imports_only_what_its_room_allows(package: str, allowed: set[str]) -> None:
    rooms = allowed | {package}
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in ALL.items()
        if in_room(module, package)
        for name, line in project_imports(module, path)
        if not any(in_room(name, room) for room in rooms) and name not in parents(package)
    ]
    assert bad == []


def in_room(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def parents(name: str) -> set[str]:
    """`pruner` for `pruner.core`: importing a room's parent package is no dependency."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_contract_needs_no_third_party_package() -> None:
    stdlib = {"__future__", "base64", "json", "zlib", "dataclasses", "typing", "argparse"}
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in ALL.items()
        if top(module) == "prunejob_contract"
        for name, line in imported(module, path)
        if top(name) not in stdlib | {"prunejob_contract"}
    ]
    assert bad == []


HEAVY = ("tensorflow", "keras", "tf_keras")
# Where the pruner may import Keras/TensorFlow (all of them lazily): --verify only.
VERIFY_MODULES = {"pruner.core.build", "pruner.app.verify", "pruner.app.pipeline"}


def test_pruner_imports_keras_only_for_verify() -> None:
    """Model files are read and written with h5py + numpy (io), planned and edited on
    config + weights (core): Keras is imported only where --verify builds models."""
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in ALL.items()
        if top(module) == "pruner" and module not in VERIFY_MODULES
        for name, line in imported(module, path)
        if top(name) in HEAVY
    ]
    assert bad == []


def test_prune_extra_has_no_tensorflow() -> None:
    """What the worker-cpu image installs: the base dependencies and the prune extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["prune"]
    assert not [req for req in wanted if req.lower().startswith(HEAVY)]
    assert "--extra prune" in (REPO / "Dockerfile").read_text()


def test_operator_install_has_no_tensorflow() -> None:
    """What the operator image installs: the base dependencies and the operator extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["operator"]
    assert not [req for req in wanted if req.lower().startswith(("tensorflow", "keras"))]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--extra operator" in dockerfile


def resolve(name: str) -> str | None:
    """The project module an imported name refers to (`from pkg import func` -> pkg)."""
    while name and name not in ALL:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in ALL}
    for module, path in ALL.items():
        for name, _ in project_imports(module, path):
            target = resolve(name)
            if target is not None and target != module and target not in parents(module):
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_anywhere() -> None:
    """Function-local and TYPE_CHECKING imports count: a late import hides no cycle."""
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Which operator modules may touch which client library: the reconcile and the pure
# decisions never see kopf, aiohttp or the kubernetes package.
OPERATOR_LIBRARIES = {
    "kopf": {"prunejob_operator.handlers", "prunejob_operator.cli"},
    "aiohttp": {"prunejob_operator.client"},
    "kubernetes": {"prunejob_operator.connection"},
    "prometheus_client": {"prunejob_operator.metrics"},
}


@pytest.mark.parametrize("library", sorted(OPERATOR_LIBRARIES))
def test_operator_client_libraries_stay_at_the_edges(library: str) -> None:
    users = {
        module
        for module, path in ALL.items()
        if top(module) == "prunejob_operator"
        for name, _ in imported(module, path)
        if top(name) == library
    }
    assert users <= OPERATOR_LIBRARIES[library]


def test_nothing_uses_kopf_private_modules() -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in ALL.items()
        for name, line in imported(module, path)
        if name.startswith("kopf._")
    ]
    assert bad == []
