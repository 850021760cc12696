"""Argument types shared by the subcommands: each checks its value when parsed.

A bad value raises `argparse.ArgumentTypeError`, which the parser reports as one line
(`cnntheory <command>: error: argument --x: ...`) with exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

_N = TypeVar("_N", int, float)


def _number(text: str, kind: Callable[[str], _N]) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def positive_float(text: str) -> float:
    """A finite number > 0 (final times, learning rates, tolerances)."""
    x = _number(text, float)
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return x


def finite_float(text: str) -> float:
    """Any finite number."""
    x = _number(text, float)
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return x


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: steps, seeds, starts, grid points)."""
    n = _number(text, int)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return n


def activation(text: str) -> str:
    """A name in the activation registry (the registry's own message lists the choices)."""
    from .._activations import get_activation

    try:
        get_activation(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text
