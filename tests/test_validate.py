"""The shared input checks: each error names the argument, and traced values pass unchecked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_checks import raises_unchecked

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


# --- bad API calls: every one a ValueError naming the argument (tests/api_probes.py) ------------

from api_probes import probes  # noqa: E402

_PROBES = probes()


@pytest.mark.parametrize("label", [label for label, _, _ in _PROBES])
def test_bad_api_call_names_the_argument(label):
    _, fragment, call = next(p for p in _PROBES if p[0] == label)
    with raises_unchecked(ValueError) as info:
        call()
    assert fragment in " ".join(str(info.value).split())


def test_complex_and_bool_are_refused_not_converted():
    from cnntheory._validate import check_real

    check_real("x", np.arange(3))  # integers are numbers
    check_real("x", 2.5)
    for value, what in ((np.ones(2) + 1j, "complex"), (np.array([True]), "boolean"), (True, "boolean")):
        with pytest.raises(ValueError, match=f"^x must hold real numbers, got {what}"):
            check_real("x", value)
    with pytest.raises(ValueError, match="x must hold real numbers, got text"):
        check_real("x", ["a"])

    @jax.jit
    def f(x):
        check_real("x", x)  # a traced float: its dtype is checked, its values are not
        return x

    np.testing.assert_array_equal(f(jnp.array([jnp.nan])), [np.nan])


def test_nan_save_time_is_named_as_such():
    from cnntheory._validate import check_times

    with pytest.raises(ValueError, match=r"^ts has non-finite entries \(first at index \(1,\)\)$"):
        check_times(0.0, 10.0, [0.0, np.nan, 10.0])
    with pytest.raises(ValueError, match="ts must be sorted"):
        check_times(0.0, 10.0, [0.0, 5.0, 4.0])
