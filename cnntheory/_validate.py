"""Input checks shared by every module: errors name the argument and the fix."""

from __future__ import annotations

import jax
import numpy as np


def require(condition: bool | np.bool_, message: str) -> None:
    """Raise `ValueError(message)` unless `condition` holds."""
    if not condition:
        raise ValueError(message)


def is_concrete(*arrays) -> bool:
    """True when no argument is a JAX tracer (so its values can be checked in Python)."""
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays))


def require_finite(name: str, value) -> None:
    """Raise a `ValueError` naming `name` when a concrete array has NaN or inf entries."""
    if is_concrete(value):
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))
            raise ValueError(f"{name} has non-finite entries (first at index {tuple(int(i) for i in bad[0])})")


def require_shape(name: str, value, shape: tuple, hint: str = "") -> None:
    """Raise a `ValueError` when `value.shape != shape`."""
    got = tuple(np.shape(value))
    if got != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}{hint}, got {got}")
