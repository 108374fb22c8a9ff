"""`prunejob` console script: a dispatcher of subcommands with lazy imports.

Each subcommand is one row of `SUBCOMMANDS`: its entry point as "module:function"
(a `def (argv: list[str]) -> int`), the modules it needs and the extra that brings
them. Nothing is imported until a subcommand is chosen, so `prunejob operator` and
`prunejob demo` never load TensorFlow (nor does `prunejob prune`, unless --verify),
and a missing extra is a one-line hint instead of a traceback. Adding a subcommand
is adding one row.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROG = "prunejob"
EXIT_USAGE = 2


@dataclass(frozen=True)
class Subcommand:
    entry: str  # "module:function", the function takes argv and returns an exit code
    summary: str
    extra: str | None = None  # the pip extra that provides `requires`
    requires: tuple[str, ...] = ()  # top-level modules checked (not imported) up front


SUBCOMMANDS: dict[str, Subcommand] = {
    "prune": Subcommand(
        "pruner.cli.prune:prune_main",
        "prune a Keras model with TAO tlt-prune semantics",
        extra="prune",  # --verify also needs `pruner` (TensorFlow), checked when asked for
        requires=("numpy", "h5py"),
    ),
    "encrypt": Subcommand("pruner.cli.crypto:encrypt_main", "encrypt a file with age (passphrase)"),
    "decrypt": Subcommand("pruner.cli.crypto:decrypt_main", "decrypt an age-encrypted file"),
    "operator": Subcommand(
        "prunejob_operator.cli:main",
        "run the PruneJob Kubernetes operator",
        extra="operator",
        requires=("kopf", "kubernetes"),
    ),
    "demo": Subcommand(
        "prunejob.demo:main",
        "run the whole system locally and prune a model three times",
        extra="dev",
        requires=("aiohttp", "moto", "tensorflow"),
    ),
}


class MissingDependency(Exception):
    """A subcommand cannot run in this installation; `str()` is the one-line hint."""


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {cmd.summary}" for name, cmd in SUBCOMMANDS.items())
    return (
        f"usage: {PROG} <command> [options]\n\n"
        f"commands:\n{rows}\n\n"
        f"Run '{PROG} <command> --help' for the options of a command."
    )


def install_hint(name: str, command: Subcommand, missing: str) -> str:
    package = f"prunejob[{command.extra}]" if command.extra else "prunejob"
    return (
        f"the '{name}' command needs the module '{missing}', which is not installed: "
        f"install {package}"
    )


def resolve(name: str, command: Subcommand) -> Callable[[list[str]], int]:
    """Import the entry point of `command`; MissingDependency when it can't be."""
    for module in command.requires:
        if importlib.util.find_spec(module) is None:  # finds without importing
            raise MissingDependency(install_hint(name, command, module))
    module_name, _, function_name = command.entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # Only a module missing from this installation is a hint; anything else is a bug
        # and keeps its traceback.
        missing = err.name or module_name
        entry_module_missing = module_name == missing or module_name.startswith(missing + ".")
        if not entry_module_missing and importlib.util.find_spec(missing.partition(".")[0]):
            raise
        raise MissingDependency(install_hint(name, command, missing)) from None
    entry = getattr(module, function_name, None)
    if not callable(entry):
        raise MissingDependency(
            f"the '{name}' command is not available in this installation "
            f"({command.entry} is missing)"
        )
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return EXIT_USAGE
    name, rest = args[0], args[1:]
    if name in ("-h", "--help", "help"):
        print(usage())
        return 0
    if name == "--version":
        from importlib.metadata import version

        print(f"{PROG} {version('prunejob')}")
        return 0
    command = SUBCOMMANDS.get(name)
    if command is None:
        known = ", ".join(SUBCOMMANDS)
        print(f"{PROG}: error: unknown command {name!r} (one of: {known})", file=sys.stderr)
        return EXIT_USAGE
    try:
        entry = resolve(name, command)
    except MissingDependency as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return int(entry(rest) or 0)
