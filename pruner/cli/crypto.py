"""`prunejob encrypt` and `prunejob decrypt`: age passphrase files from the command line.

    prunejob encrypt -i model.keras -o model.keras.age --key-file key.txt
    PRUNEJOB_KEY=... prunejob decrypt -i model.keras.age -o model.keras

The output appears only when the whole input was processed (and, for decrypt,
authenticated): it is written to a temporary file beside it and renamed.
Decrypted output is created mode 0600.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from prunejob_contract.arguments import OneLineParser
from prunejob_contract.errors import InvalidArgument, KeyRequired, ModelNotFound, PrunejobError
from pruner.io import age
from pruner.io.atomic import atomic_write
from pruner.io.formats import AGE_MAGIC, is_encrypted
from pruner.io.keys import KEY_ENV, resolve_key


def _parser(command: str, verb: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=f"prunejob {command}",
        description=f"{verb} a file in the age v1 format with a passphrase (scrypt).",
        epilog=f"The key comes from -k, --key-file or {KEY_ENV}, in that order.",
    )
    parser.add_argument("-i", "--input", required=True, metavar="IN", help="file to read")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("-k", "--key", metavar="KEY", help="passphrase (visible in `ps`)")
    keys.add_argument("--key-file", metavar="PATH", help="file holding the passphrase")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return parser


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    source, target = Path(args.input), Path(args.output)
    if not source.is_file():
        raise ModelNotFound(f"input {source} does not exist or is not a file")
    if target.exists() and target.resolve() == source.resolve():
        raise InvalidArgument(f"output {target} is the input; write to another file")
    return source, target


def _key(args: argparse.Namespace) -> str:
    key = resolve_key(args.key, args.key_file)
    if key is None:
        raise KeyRequired(f"no key: pass --key-file PATH or set {KEY_ENV} (or -k KEY)")
    return key


def _run(command: str, argv: Sequence[str] | None, encrypt: bool) -> int:
    parser = _parser(command, "Encrypt" if encrypt else "Decrypt")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help printed the help
        return int(exit_.code or 0)
    except InvalidArgument as err:
        print(f"prunejob {command}: error: {err}", file=sys.stderr)
        return err.exit_code
    try:
        source, target = _paths(args)
        key = _key(args)
        with open(source, "rb") as src:
            if not encrypt and not is_encrypted(src.peek(len(AGE_MAGIC))[: len(AGE_MAGIC)]):
                raise InvalidArgument(f"input {source} is not an age-encrypted file")
            with atomic_write(target, overwrite=args.overwrite, private=not encrypt) as dst:
                if encrypt:
                    age.encrypt_stream(src, dst, key)
                else:
                    age.decrypt_stream(src, dst, key)
    except PrunejobError as err:
        print(f"prunejob {command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"prunejob {command}: error: {err.filename or ''}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


def encrypt_main(argv: Sequence[str] | None = None) -> int:
    return _run("encrypt", argv, encrypt=True)


def decrypt_main(argv: Sequence[str] | None = None) -> int:
    return _run("decrypt", argv, encrypt=False)
