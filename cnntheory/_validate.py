"""Input checks shared by every module: errors name the argument and the fix."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def require(condition: bool | np.bool_, message: str) -> None:
    """Raise `ValueError(message)` unless `condition` holds."""
    if not condition:
        raise ValueError(message)


def is_concrete(*arrays) -> bool:
    """True when no argument is a JAX tracer (so its values can be checked in Python)."""
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays))


def is_traced(x) -> bool:
    """True when `x` is a JAX tracer (inside `jit` / `vmap` / `grad`)."""
    return isinstance(x, jax.core.Tracer)


def as_number(x):
    """A traced number stays traced; a concrete one becomes a numpy float64 (one jit signature)."""
    return jnp.asarray(x, dtype=float) if is_traced(x) else np.float64(x)


def check_times(t0, t1, ts, num_saves: int = 101):
    """The checked interval and save times `(t0, t1, ts)`; `ts=None` is `num_saves` equally spaced.

    Values are checked only when they are concrete; under `jit` / `vmap` / `grad` the
    traced ones pass through unchecked (shapes are still checked). Messages are built only
    on failure: this runs on every solve.
    """
    check_real("t0", t0)
    check_real("t1", t1)
    if ts is not None:
        check_real("ts", ts)
    t0, t1 = as_number(t0), as_number(t1)
    times_concrete = not (is_traced(t0) or is_traced(t1))
    if ts is None:
        ts = (np if times_concrete else jnp).linspace(t0, t1, num_saves)
    ts = jnp.asarray(ts, dtype=float) if is_traced(ts) else np.asarray(ts, dtype=np.float64)
    if not (ts.ndim == 1 and ts.size >= 1):
        require(False, f"ts must be a non-empty 1-D array of save times, got shape {ts.shape}")
    if not is_traced(ts) and not np.isfinite(ts).all():
        require_finite("ts", ts)  # before the order check: NaN compares false
    if times_concrete and not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
        require(False, f"need finite t0 < t1, got t0={t0}, t1={t1}")
    if not is_traced(ts):
        require(bool((ts[1:] >= ts[:-1]).all()), "ts must be sorted in increasing order")
        if times_concrete and not (ts[0] >= t0 and ts[-1] <= t1):
            require(False, f"ts must lie within [t0, t1] = [{t0}, {t1}], got [{ts[0]}, {ts[-1]}]")
    return t0, t1, ts


def require_finite(name: str, value) -> None:
    """Raise a `ValueError` naming `name` unless `value` holds real numbers, all finite.

    Booleans, complex numbers and anything else that is not a number are refused rather
    than converted (`jnp.asarray(x, dtype=float)` would turn `True` into 1.0 and drop an
    imaginary part with only a warning). Traced values have their dtype checked, not
    their values.
    """
    _check_dtype(name, value)
    if is_concrete(value):
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))
            raise ValueError(f"{name} has non-finite entries (first at index {tuple(int(i) for i in bad[0])})")


def check_real(name: str, value) -> None:
    """`require_finite`, cheap when the value is good: one dtype test and one `isfinite`."""
    if _check_dtype(name, value) == "f" and not is_traced(value) and not np.isfinite(np.asarray(value)).all():
        require_finite(name, value)


def _check_dtype(name: str, value) -> str:
    """The dtype kind of `value` (`"f"`, `"i"` or `"u"`); a `ValueError` naming `name` for any other."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        if isinstance(value, (bool, np.bool_)):
            dtype = np.dtype(bool)
        elif isinstance(value, (int, float)):
            dtype = np.dtype(float)
        else:
            try:
                dtype = np.asarray(value).dtype
            except (ValueError, TypeError):
                raise ValueError(f"{name} must be an array of real numbers, got {type(value).__name__}") from None
    kind = np.dtype(dtype).kind
    if kind != "f" and kind not in "iu":
        what = {"b": "boolean", "c": "complex", "U": "text", "S": "bytes", "O": "objects"}.get(kind, f"dtype {dtype}")
        fix = {
            "b": "pass numbers (1.0 / 0.0), not True / False",
            "c": "the quantities are real: pass np.real(x) if the imaginary part is meant to go",
        }.get(kind, "pass real numbers")
        raise ValueError(f"{name} must hold real numbers, got {what} ({np.dtype(dtype)}): {fix}")
    return kind


def require_shape(name: str, value, shape: tuple, hint: str = "") -> None:
    """Raise a `ValueError` when `value.shape != shape`."""
    got = tuple(np.shape(value))
    if got != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}{hint}, got {got}")
