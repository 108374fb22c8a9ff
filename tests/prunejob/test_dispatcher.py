"""The `prunejob` dispatcher: subcommand table, lazy imports, install hints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prunejob.cli import SUBCOMMANDS, MissingDependency, Subcommand, main, resolve

pytestmark = pytest.mark.timeout(60)
SCRIPTS = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=50, check=False)


def test_console_script_help_lists_every_subcommand() -> None:
    result = run(str(SCRIPTS / "prunejob"), "--help")
    assert result.returncode == 0
    for name in ("prune", "encrypt", "decrypt", "operator", "demo"):
        assert f"\n  {name} " in result.stdout


def test_python_dash_m_is_the_same_dispatcher() -> None:
    result = run(sys.executable, "-m", "prunejob", "--help")
    assert result.returncode == 0
    assert "prune" in result.stdout


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: prunejob <command>" in capsys.readouterr().err


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prnue"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("prunejob: error: unknown command 'prnue'")


def test_arguments_and_exit_code_pass_through_the_console_script() -> None:
    result = run(str(SCRIPTS / "prunejob"), "prune", "-m", "a.keras", "-o", "b.keras", "-n", "foo")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "prunejob: error: argument -n/--normalizer: invalid choice: 'foo' "
        "(choose from 'max', 'L2', 'off') (see prunejob prune --help)"
    ]


def test_missing_dependency_is_a_hint_naming_the_extra() -> None:
    command = Subcommand(
        "pruner.cli.prune:prune_main", "x", extra="pruner", requires=("no_such_dep",)
    )
    with pytest.raises(MissingDependency, match=r"'no_such_dep'.*install prunejob\[pruner\]"):
        resolve("prune", command)


def test_missing_entry_module_is_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    command = Subcommand("prunejob_no_such_module.cli:main", "x", extra="operator")
    with pytest.raises(MissingDependency, match=r"install prunejob\[operator\]"):
        resolve("operator", command)


def test_every_entry_names_module_and_function() -> None:
    for command in SUBCOMMANDS.values():
        module, _, function = command.entry.partition(":")
        assert module and function.isidentifier()


@pytest.mark.parametrize("name", ["operator", "demo", "encrypt"])
def test_subcommands_without_the_pruner_do_not_import_tensorflow(name: str) -> None:
    # Whatever the subcommand does with --help (print it, or report a missing extra),
    # going through the dispatcher must not load TensorFlow.
    probe = (
        "import sys\n"
        "from prunejob.cli import main\n"
        "try:\n"
        f"    main([{name!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TF-LOADED' if 'tensorflow' in sys.modules else 'TF-FREE')\n"
    )
    result = run(sys.executable, "-c", probe)
    assert result.stdout.strip().splitlines()[-1] == "TF-FREE", result.stderr[-2000:]


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("demo", ["--thresholds", "x"], "--thresholds 'x' must be numbers separated by commas"),
        ("demo", ["--bogus"], "unrecognized arguments: --bogus"),
        ("operator", ["--bogus"], "unrecognized arguments: --bogus"),
        ("operator", ["-A", "-n", "ns"], "not allowed with argument -A/--all-namespaces"),
    ],
)
def test_usage_errors_of_every_command_are_one_line(
    command: str, args: list[str], message: str
) -> None:
    result = run(str(SCRIPTS / "prunejob"), command, *args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"prunejob {command}: error: ")
    assert message in lines[0] and lines[0].endswith(f"(see prunejob {command} --help)")
