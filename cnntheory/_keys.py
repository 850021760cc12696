"""`key=`: a JAX PRNG key, or an int where that is convenient, as either kind of generator.

One vocabulary for randomness: every public entry point that draws takes `key`. JAX code
wants a key (`as_key`: an int `s` is `jax.random.PRNGKey(s)`, what the old `seed=s` did);
numpy code wants a `Generator` (`as_rng`: an int `s` is `np.random.default_rng(s)`, again
what `seed=s` did, so an old call and its renamed one give identical draws).
"""

from __future__ import annotations

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from ._validate import require


def _is_int(key) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, bool)


def _check(key, name: str) -> None:
    is_key = isinstance(key, jax.Array) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == np.uint32 and key.shape in ((2,), (4,)))
    )
    require(
        _is_int(key) or is_key,
        f"{name} must be a JAX PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)) or an int seed, got {key!r}",
    )


def as_key(key: int | PRNGKeyArray, name: str = "key") -> PRNGKeyArray:
    """A JAX key: an int `s` becomes `jax.random.PRNGKey(s)`; a key is returned as it is."""
    _check(key, name)
    if isinstance(key, (int, np.integer)):
        return jax.random.PRNGKey(int(key))
    return key


def as_rng(key: int | PRNGKeyArray, name: str = "key") -> np.random.Generator:
    """A numpy `Generator`: an int `s` gives `default_rng(s)`; a JAX key seeds it from its bits."""
    _check(key, name)
    if isinstance(key, (int, np.integer)):
        return np.random.default_rng(int(key))
    data = key if key.dtype == np.uint32 else jax.random.key_data(key)
    return np.random.default_rng(np.asarray(data).ravel().tolist())
