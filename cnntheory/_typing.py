"""Types of the annotations: array inputs take a jax or a numpy array (outputs are jax
`Array`s); scalars that `jit`, `vmap` or `grad` may trace take a 0-d jax array too."""

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
from jax import Array
from jaxtyping import Float

#: An array input: a jax or a numpy array.
AnyArray: TypeAlias = Array | np.ndarray
#: Save times and other inputs converted with `jnp.asarray`: an array or a list of numbers.
Times: TypeAlias = Float[AnyArray, " T"] | Sequence[float]
#: A scalar input that `jit`, `vmap` or `grad` may trace (times, tolerances).
Scalar: TypeAlias = float | Float[Array, ""]
