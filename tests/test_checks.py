"""The test run's own checks (tests/conftest.py) are on: annotations, shapes, dtype promotion."""

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest
from helpers_checks import checks_paused, raises_unchecked

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
    with raises_unchecked(ValueError, match="must have shape"):
        problem.loss(np.zeros((2, 2)), np.zeros(3))
    assert not jaxtyping.config.jaxtyping_disable  # back on afterwards
    with pytest.raises(ValueError, match="outside"), checks_paused():
        raise ValueError("outside")
    assert not jaxtyping.config.jaxtyping_disable  # back on after an exception too
    # Only the helper pauses: a plain `pytest.raises` keeps the checks on.
    with pytest.raises(jaxtyping.TypeCheckError):
        problem.loss(np.zeros((2, 2)), np.zeros(3))


def test_dtype_promotion_is_strict():
    assert jax.config.jax_numpy_dtype_promotion == "strict"  # type: ignore[attr-defined]  # jax declares its flags at run time
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.arange(3) * 0.5
