r"""`SolverConfig`: the options of a solve as one checked, immutable object.

The numbers (`rtol`, `atol`, `dt0`) are pytree leaves, so a `SolverConfig` can be passed
into a compiled function and new tolerances reuse the compiled program; the rest
(`method`, `max_steps`, `max_segments`, `max_events`) are static: they fix the program.

Every function of the package that integrates a flow takes its options the same way:
`config=SolverConfig(...)`, or the same names as keywords (`SolverOptions`), which
`resolve_config` turns into one `SolverConfig`. The names and their meaning are written
once, here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import numpy as np
from typing_extensions import TypedDict

from ._methods import DIFFRAX_SOLVERS, SCIPY_METHODS
from ._validate import as_number, is_traced, require

__all__ = ["SolverConfig", "SolverOptions", "resolve_config"]


def _optional_number(x):
    return None if x is None else as_number(x)


def _count(name: str, value, hint: str) -> None:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
        require(False, f"{name} must be an int >= 1 ({hint}), got {value!r}")


class SolverConfig(eqx.Module):
    """How `cnntheory.solve` integrates: the method, its tolerances and its limits.

    Checked when built (a `ValueError` names the field and the fix); immutable (change a
    field with `dataclasses.replace`). `solve(..., config=SolverConfig(...))` uses it; the
    same names as keywords of `solve` build one.

    **Fields:**

    - `method`: a diffrax solver name (`DIFFRAX_SOLVERS`: `"tsit5"`, `"dopri5"`,
      `"dopri8"`, ...; adaptive, PID step control), `"euler"` (fixed step `dt0`: the
      gradient-descent map) or a scipy `solve_ivp` method (`SCIPY_METHODS`).
    - `rtol`, `atol`: adaptive step control (both `> 0`).
    - `dt0`: the first step (`None`: the solver picks it); the fixed step of `"euler"`,
      which needs one.
    - `max_steps`: the most solver steps per smooth segment.
    - `max_segments`: the most relu mode switches (Filippov events).
    - `max_events`: room in the `Trajectory.events` record of relu mode changes.

    `rtol`, `atol` and `dt0` may be traced (inside `jax.jit` / `jax.vmap` / `jax.grad`):
    they are then checked only when concrete.
    """

    method: str = eqx.field(static=True, default="tsit5")
    rtol: float = eqx.field(converter=as_number, default=1e-8)
    atol: float = eqx.field(converter=as_number, default=1e-10)
    dt0: float | None = eqx.field(converter=_optional_number, default=None)
    max_steps: int = eqx.field(static=True, default=100_000)
    max_segments: int = eqx.field(static=True, default=1000)
    max_events: int = eqx.field(static=True, default=256)

    def __check_init__(self):
        method, rtol, atol, dt0 = self.method, self.rtol, self.atol, self.dt0
        if method not in DIFFRAX_SOLVERS and method not in SCIPY_METHODS:
            require(
                False,
                f"unknown method {method!r}; choose one of: {', '.join(sorted(DIFFRAX_SOLVERS) + list(SCIPY_METHODS))}",
            )
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if not (is_traced(tol) or tol > 0):
                require(False, f"{name} must be > 0 (adaptive step control), got {name}={tol}")
        if method == "euler" and not (dt0 is not None and (is_traced(dt0) or dt0 > 0)):
            require(False, f"method='euler' needs a fixed step dt0 > 0, got dt0={dt0}")
        if dt0 is not None and not (is_traced(dt0) or (math.isfinite(dt0) and dt0 > 0)):
            require(False, f"dt0 must be a finite number > 0 or None (the solver picks the first step), got dt0={dt0}")
        _count("max_steps", self.max_steps, "solver steps per smooth segment; raise it for long or stiff solves")
        _count("max_segments", self.max_segments, "relu mode switches allowed")
        _count("max_events", self.max_events, "rows of the relu events record")

    @property
    def is_scipy(self) -> bool:
        """True when `method` is a scipy `solve_ivp` method."""
        return self.method in SCIPY_METHODS


class SolverOptions(TypedDict, total=False):
    """The fields of `SolverConfig` as keywords: `**options: Unpack[SolverOptions]`.

    A function that takes them builds its `SolverConfig` with `resolve_config`; the
    meaning of each is in `SolverConfig`.
    """

    method: str
    rtol: float
    atol: float
    dt0: float | None
    max_steps: int
    max_segments: int
    max_events: int


_OPTION_NAMES = tuple(SolverOptions.__annotations__)


def _same(a, b) -> bool:
    if a is b:
        return True
    if a is None or b is None or is_traced(a) or is_traced(b):
        return False
    return bool(a == b)


@functools.lru_cache(maxsize=64)
def _cached(defaults: SolverConfig, key) -> SolverConfig:
    return _replace(defaults, {name: value for name, _, value in key})


def _replace(defaults: SolverConfig, options: Mapping[str, Any]) -> SolverConfig:
    return dataclasses.replace(defaults, **options) if options else defaults


def _built(defaults: SolverConfig, options: Mapping[str, Any]) -> SolverConfig:
    """`defaults` with `options` replaced, reused for repeated hashable options (it is immutable)."""
    if not options:  # the common call: no hashing of `defaults` (an equinox Module hash is ~5 us)
        return defaults
    try:
        return _cached(defaults, tuple((name, type(value), value) for name, value in options.items()))
    except TypeError:  # an array or a tracer among the options (or in `defaults`)
        return _replace(defaults, options)


def resolve_config(
    config: SolverConfig | None, options: Mapping[str, Any], *, caller: str, defaults: SolverConfig | None = None
) -> SolverConfig:
    """The `SolverConfig` of a call to `caller`: `config`, or one built from `options`.

    `options` are the solver keywords the caller was given (`SolverOptions`); a name
    that is not one is a `TypeError` naming the valid ones. Without `config` they replace
    the fields of `defaults` (the caller's defaults; `SolverConfig()` when `None`). With
    `config`, a keyword that disagrees with the config's field is a `ValueError`: the
    options come as one object or as keywords, not both.
    """
    unknown = [name for name in options if name not in _OPTION_NAMES]
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"the solver options are {', '.join(_OPTION_NAMES)} (see cnntheory.SolverConfig)"
        )
    if config is None:
        return _built(_DEFAULT if defaults is None else defaults, options)
    if not isinstance(config, SolverConfig):
        require(False, f"config must be a cnntheory.SolverConfig, got {type(config).__name__}")
    conflicts = [name for name, value in options.items() if not _same(value, getattr(config, name))]
    if conflicts:
        require(
            False,
            f"config= and the keyword(s) {', '.join(conflicts)} disagree: pass the solver options either as a SolverConfig "
            f"or as keywords, not both (change a config with dataclasses.replace(config, {conflicts[0]}=...))",
        )
    return config


_DEFAULT = SolverConfig()
