"""The `cnntheory` command line: one subcommand per job.

Each subcommand lives in `cnntheory/_commands/<name>.py` and defines
`register(subparsers)`, which adds its parser and sets `func` (called with the parsed
arguments, returning an exit code). Modules whose name starts with `_` are helpers.

Errors are handled here, once, for every subcommand: a bad argument (an argparse type
that refuses it, or a `ValueError` from the package's input checks) is reported as one
line on stderr, `cnntheory <command>: error: <message>`, with exit status 2 and no
traceback. Set `CNNTHEORY_TRACEBACK=1` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys

from . import _commands

# argparse takes `-1,1` for an option because only `-1` / `-.5` count as negative numbers;
# with no option spelled like a number, any token starting `-<digit>` or `-.<digit>` is a value.
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that reads negative lists and reports errors in one line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str):
        # One line, no usage block: the usage is one `--help` away.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnntheory",
        description="Learning dynamics of CNNs in the teacher-student setting.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    infos = (i for i in pkgutil.iter_modules(_commands.__path__) if not i.name.startswith("_"))
    for info in sorted(infos, key=lambda i: i.name):
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a bad argument already reported in one line
        return done.code if isinstance(done.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ._cache import enable_compilation_cache  # compiled programs kept across runs (off: CNNTHEORY_NO_CACHE=1)

    enable_compilation_cache()
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        if os.environ.get("CNNTHEORY_TRACEBACK"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the message
        print(f"cnntheory {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
