"""The test run's own checks (tests/conftest.py) are on: annotations, shapes, dtype promotion."""

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

from cnntheory import shape_counting


def test_annotations_are_checked():
    problem = shape_counting()
    problem.loss(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(jaxtyping.TypeCheckError):
        problem.loss(np.zeros((2, 2), dtype=int), np.zeros(2))  # Float[..., "L P"] gets ints
    with pytest.raises(jaxtyping.TypeCheckError):
        problem.loss(np.zeros((2, 2)), np.zeros(3))  # L = 2 from m, 3 from v


def test_checks_pause_while_a_value_error_is_expected():
    problem = shape_counting()
    with pytest.raises(ValueError, match="must have shape"):
        problem.loss(np.zeros((2, 2)), np.zeros(3))
    assert not jaxtyping.config.jaxtyping_disable  # back on afterwards


def test_dtype_promotion_is_strict():
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.arange(3) * 0.5
