"""The shared input checks: each error names the argument, and traced values pass unchecked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnntheory._validate import is_concrete, require, require_finite, require_shape


def test_require_raises_the_message():
    require(True, "never")
    with pytest.raises(ValueError, match="^lr must be > 0$"):
        require(np.bool_(False), "lr must be > 0")


def test_require_finite_names_the_argument_and_the_first_bad_index():
    require_finite("m0", np.ones((2, 3)))
    bad = np.ones((2, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"m0 has non-finite entries \(first at index \(1, 2\)\)"):
        require_finite("m0", bad)


def test_traced_values_are_not_checked():
    assert is_concrete(np.ones(2), 1.0, {"a": jnp.ones(3)})

    @jax.jit
    def f(x):
        assert not is_concrete(x, 1.0)
        require_finite("x", x)  # a tracer: nothing to check, no error
        return x

    np.testing.assert_array_equal(f(jnp.array([jnp.inf])), [np.inf])


def test_require_shape_says_expected_and_got():
    require_shape("v0", np.zeros(3), (3,))
    with pytest.raises(ValueError, match=r"v0 must have shape \(2,\) \(one per unit\), got \(3,\)"):
        require_shape("v0", np.zeros(3), (2,), " (one per unit)")
