"""Argument types shared by the subcommands: each checks its value when parsed.

A bad value raises `argparse.ArgumentTypeError`, which the parser reports as one line
(`cnntheory <command>: error: argument --x: ...`) with exit status 2. Every type carries
its allowed range as `range_text`, which `--help` shows beside the default.

This module (like every `register` of a subcommand) imports neither JAX nor the package:
`cnntheory --help` answers without them. The names the options accept (activations,
solvers, data sets) are therefore listed here; a test checks them against the package's
registries.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

#: `cnntheory.ACTIVATIONS` (checked by tests/test_cli_arguments.py).
ACTIVATION_NAMES = (
    "erf", "gelu", "indicator", "linear", "quadratic", "relu", "scaled_erf", "sigmoid", "softplus", "swish", "tanh",
)  # fmt: skip
#: The names whose `Activation.smooth` is False.
NONSMOOTH_ACTIVATIONS = ("relu",)
#: `cnntheory.DIFFRAX_SOLVERS` then `cnntheory.SCIPY_METHODS`.
METHOD_NAMES = (
    "tsit5", "dopri5", "dopri8", "bosh3", "heun", "midpoint", "ralston", "kvaerno3", "kvaerno4", "kvaerno5", "euler",
    "RK23", "RK45", "DOP853", "LSODA", "Radau", "BDF",
)  # fmt: skip
#: `cnntheory.energy.DATASETS`.
DATASET_NAMES = ("photos", "digits", "powerlaw")
#: The largest seed: `jax.random.key` takes a 32-bit unsigned seed.
MAX_SEED = 2**32 - 1


class Range:
    """A number type with bounds: `Range(float, gt=0)` accepts finite numbers > 0.

    Called on the text of an option, it returns the number or raises
    `argparse.ArgumentTypeError` saying the allowed range.
    """

    def __init__(self, kind: type, *, gt=None, ge=None, lt=None, le=None):
        self.kind, self.gt, self.ge, self.lt, self.le = kind, gt, ge, lt, le
        self.__name__ = kind.__name__  # argparse names the type in some messages

    @property
    def range_text(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        parts = [f"> {self.gt:g}" if self.gt is not None else "", f">= {self.ge:g}" if self.ge is not None else ""]
        parts += [f"< {self.lt:g}" if self.lt is not None else "", f"<= {self.le:g}" if self.le is not None else ""]
        bounds = " and ".join(p for p in parts if p)
        return f"{what} {bounds}" if bounds else what

    def __call__(self, text: str):
        try:
            x = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.range_text}, got {text!r}") from None
        ok = math.isfinite(x)
        ok = ok and (self.gt is None or x > self.gt) and (self.ge is None or x >= self.ge)
        ok = ok and (self.lt is None or x < self.lt) and (self.le is None or x <= self.le)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {self.range_text}, got {text!r}")
        return x


positive_float = Range(float, gt=0)  # final times, learning rates, tolerances
finite_float = Range(float)
positive_int = Range(int, ge=1)  # counts: steps, seeds, starts
seed = Range(int, ge=0, le=MAX_SEED)
overlap = Range(float, gt=-1, lt=1)  # a Gram overlap of two unit-norm atoms
tolerance = Range(float, gt=0, lt=1)  # rtol
num_points = Range(int, ge=2)  # save times: the start and at least one more


class NumberList:
    """Comma-separated numbers, each in `item` (a `Range`), `length` of them when given."""

    def __init__(
        self, item: Range, length: int | None = None, min_length: int = 1, max_length: int | None = None, what="numbers"
    ):
        self.item, self.what = item, what
        self.min_length, self.max_length = (length, length) if length else (min_length, max_length)
        self.__name__ = "list"

    @property
    def range_text(self) -> str:
        lo, hi = self.min_length, self.max_length
        count = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi else f"{lo} or more"
        return f"{count} comma-separated {self.what}, each {self.item.range_text}"

    def __call__(self, text: str) -> tuple:
        try:
            values = tuple(self.item.kind(x) for x in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.range_text}, got {text!r}") from None
        if not self.min_length <= len(values) <= (self.max_length or len(values)):
            raise argparse.ArgumentTypeError(f"needs {self.range_text}, got {len(values)} in {text!r}")
        for x in values:
            try:
                self.item(repr(x))
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(f"needs {self.range_text}, got {text!r}") from None
        return values


#: Dirichlet parameters of the two shapes X and O.
alpha = NumberList(Range(float, gt=0), length=2, what="Dirichlet parameters")
#: The initial overlaps m11, m12, m21, m22.
m0 = NumberList(finite_float, length=4, what="numbers m11,m12,m21,m22")


def require(condition: bool, message: str) -> None:
    """Raise `ValueError(message)` unless `condition` holds (a cross-option check)."""
    if not condition:
        raise ValueError(message)


def checker(*checks: Callable) -> Callable:
    """One `check(args)` running every check: the command's arguments, before any work."""

    def check(args) -> None:
        for c in checks:
            c(args)

    return check
