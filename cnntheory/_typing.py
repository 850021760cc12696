"""The array type of annotated inputs: a jax or a numpy array (outputs are jax `Array`s)."""

import numpy as np
from jax import Array

AnyArray = Array | np.ndarray
