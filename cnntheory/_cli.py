"""The `cnntheory` command line: one subcommand per job.

Each subcommand lives in `cnntheory/_commands/<name>.py` and defines
`register(subparsers)`, which adds its parser and sets `func` (called with the parsed
arguments, returning an exit code) and, optionally, `check` (the checks that span several
options, run before any work). Modules whose name starts with `_` are helpers.

Three stages, so that nothing is computed before every argument is known to be good:

1. parse: every option has a type that checks its range (`_commands/_types.py`);
2. check: the command's own `check(args)` and the output folder (`--out`), still without
   JAX;
3. run: the package is imported (JAX with it) and `func(args)` does the work.

`--help` and every error of stages 1-2 answer without importing JAX: the console script
(`cnntheory_cli`, beside the package) loads this module without running
`cnntheory/__init__.py`, which happens only at stage 3.

Errors are handled here, once, for every subcommand: a bad argument (an argparse type
that refuses it, or a `ValueError` from a check or from the package's input checks) is
reported as one line on stderr, `cnntheory <command>: error: <message>`, with exit status
2 and no traceback; an `OSError` while writing the results is one line with exit status 1.
Set `CNNTHEORY_TRACEBACK=1` to see the traceback instead.
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


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its allowed range and its default, e.g. `[> 0; default: 60]`.

    A description written on several lines (a module docstring) is kept as written; a
    one-line description is wrapped.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            return text
        extras = []
        range_text = getattr(action.type, "range_text", None)
        if range_text:
            extras.append(range_text)
        if action.choices is not None and action.type is None:
            extras.append("one of " + ", ".join(map(str, action.choices)))
        if "default" not in text:
            extras.append("default: " + _default_text(action))
        return f"{text} [{'; '.join(extras)}]".replace("%", "%%") if extras else text.replace("%", "%%")


def _default_text(action: argparse.Action) -> str:
    if action.nargs == 0:  # a flag
        return "off"
    value = action.default
    if isinstance(value, list) or (action.nargs is not None and isinstance(value, tuple)):
        return " ".join(_default_text_one(v) for v in value)  # one value per word
    return _default_text_one(value)


def _default_text_one(value) -> str:
    if isinstance(value, tuple):
        return ",".join(_default_text_one(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that reads negative lists, shows ranges and defaults, reports errors in one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str):
        # One line, no usage block: the usage is one `--help` away.
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


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


def _load_package() -> None:
    """Import `cnntheory` itself (JAX, float64) when the console script deferred it (`cnntheory_cli`)."""
    name = __package__ or "cnntheory"
    if getattr(sys.modules.get(name), "_deferred", False):
        del sys.modules[name]
        importlib.import_module(name)


def _report(command: str, err: BaseException) -> None:
    """One line on stderr, on a line of its own even if a progress bar was drawing."""
    try:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()  # ends the bar's line
    except ImportError:  # pragma: no cover - tqdm is a dependency
        pass
    message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the message
    print(f"cnntheory {command}: error: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a bad argument already reported in one line
        return done.code if isinstance(done.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ._io import check_out_folder

    try:
        if getattr(args, "check", None):
            args.check(args)
        if getattr(args, "out", None) is not None:
            check_out_folder(args.out)
    except ValueError as err:
        if os.environ.get("CNNTHEORY_TRACEBACK"):
            raise
        _report(args.command, err)
        return 2
    _load_package()
    if getattr(args, "distributed", False) or getattr(args, "coordinator", None) is not None:
        # Before anything starts JAX's backend (the cache's key names it): a multi-process run.
        from ._distributed import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from ._cache import enable_compilation_cache  # compiled programs kept across runs (off: CNNTHEORY_NO_CACHE=1)

    enable_compilation_cache()
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        if os.environ.get("CNNTHEORY_TRACEBACK"):
            raise
        _report(args.command, err)
        return 2 if isinstance(err, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
