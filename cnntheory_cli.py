"""The `cnntheory` console script: answers `--help` and bad arguments without importing JAX.

`cnntheory/__init__.py` imports JAX (float64 must be on before any array exists), which takes
seconds. The argument parsers (`cnntheory._cli`, `cnntheory._commands`) need neither JAX nor
the package, so this launcher registers a placeholder for the `cnntheory` package, imports
the command line through it and leaves the real import to `cnntheory._cli.main`, once the
arguments are known to be good and a command is about to run. `python -m cnntheory` runs the
same `main` after a normal import.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def main(argv: list[str] | None = None) -> int:
    """Run `cnntheory` with `argv` (default: the command line); the exit status."""
    if "cnntheory" not in sys.modules:
        spec = importlib.util.find_spec("cnntheory")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("the cnntheory package is not installed")
        placeholder = types.ModuleType("cnntheory", "placeholder until a command runs (see cnntheory_cli)")
        placeholder.__path__ = list(spec.submodule_search_locations)
        placeholder._deferred = True  # type: ignore[attr-defined]  # cnntheory._cli._load_package swaps it
        sys.modules["cnntheory"] = placeholder
    from cnntheory._cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
