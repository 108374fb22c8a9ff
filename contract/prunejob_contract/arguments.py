"""argparse for every prunejob command: a usage error is one line, not the usage text."""

from __future__ import annotations

import argparse
from typing import NoReturn

from prunejob_contract.errors import InvalidArgument


class OneLineParser(argparse.ArgumentParser):
    """A usage error raises InvalidArgument (one line, exit 2) naming `--help`; each
    command's main prints it as `<prog>: error: ...`."""

    def error(self, message: str) -> NoReturn:
        raise InvalidArgument(f"{message} (see {self.prog} --help)")
