"""The activation registry against independent references (jax.nn, scipy, sympy, jax.grad)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import sympy as sp
from helpers_checks import raises_unchecked

from cnntheory import ACTIVATIONS, Activation, get_activation
from cnntheory._activations import INDICATOR_TOL

NAMES = sorted(ACTIVATIONS)

# Generic points: a grid that avoids 0 exactly (relu's kink) and 1 exactly (indicator's
# spike), plus some random ones.
_rng = np.random.default_rng(1234)
POINTS = np.concatenate([np.linspace(-6.1, 5.9, 121), _rng.normal(scale=3.0, size=200), [1e-8, -1e-8, 0.5, -0.5]])
assert not np.any(POINTS == 0.0)

# Reference implementations written independently of cnntheory.
REFERENCES = {
    "relu": lambda x: np.asarray(jax.nn.relu(x)),
    "sigmoid": lambda x: np.asarray(jax.nn.sigmoid(x)),
    "tanh": np.tanh,
    "swish": lambda x: np.asarray(jax.nn.silu(x)),
    "gelu": lambda x: np.asarray(jax.nn.gelu(x, approximate=False)),
    "softplus": lambda x: np.asarray(jax.nn.softplus(x)),
    "erf": scipy.special.erf,
    "scaled_erf": lambda x: scipy.special.erf(x / np.sqrt(2)),
    "linear": lambda x: x,
    "quadratic": lambda x: x**2,
    "indicator": lambda x: (np.abs(x - 1) < INDICATOR_TOL).astype(float),
}


def test_registry_is_complete():
    assert set(REFERENCES) == set(ACTIVATIONS)
    for name, act in ACTIVATIONS.items():
        assert isinstance(act, Activation) and act.name == name


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_fn_matches_reference(name):
    act = ACTIVATIONS[name]
    got = np.asarray(act.fn(jnp.asarray(POINTS)))
    # Both sides are float64 evaluations of the same function (different formulas for
    # e.g. softplus / gelu): agreement to a few ulps of the value, never worse than 1e-14.
    np.testing.assert_allclose(got, REFERENCES[name](POINTS), rtol=1e-14, atol=1e-15)
    # `__call__` is `fn`.
    np.testing.assert_array_equal(np.asarray(act(jnp.asarray(POINTS))), got)
    assert got.dtype == np.float64


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_jax_grad(name):
    act = ACTIVATIONS[name]
    auto = np.asarray(jax.vmap(jax.grad(act.fn))(jnp.asarray(POINTS)))
    hand = np.asarray(act.derivative(jnp.asarray(POINTS)))
    # Closed-form derivative vs reverse-mode AD of the same float64 function: round-off only.
    np.testing.assert_allclose(hand, auto, rtol=1e-13, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_differences(name):
    """A check of `derivative` that does not go through the same code path as `fn`."""
    if name == "indicator":
        pytest.skip("the indicator is piecewise constant: its derivative is 0 and checked by jax.grad")
    act = ACTIVATIONS[name]
    x = POINTS[np.abs(POINTS) > 1e-3]  # keep the central difference off relu's kink
    h = 1e-5
    fd = (np.asarray(act.fn(jnp.asarray(x + h))) - np.asarray(act.fn(jnp.asarray(x - h)))) / (2 * h)
    # Central differences: truncation h^2 |f'''| / 6 ~ 1e-10 plus round-off eps |f| / h ~ 1e-10.
    np.testing.assert_allclose(np.asarray(act.derivative(jnp.asarray(x))), fd, rtol=1e-8, atol=1e-8)


def test_relu_derivative_at_zero_is_jax_convention():
    relu = ACTIVATIONS["relu"]
    assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0
    assert float(relu.derivative(jnp.asarray(0.0))) == float(jax.grad(jax.nn.relu)(0.0))
    # `fn` is `jax.nn.relu`, so differentiating it through JAX gives the same convention.
    assert float(jax.grad(relu.fn)(0.0)) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sympy_expression_matches_fn(name):
    act = ACTIVATIONS[name]
    x = sp.Symbol("x", real=True)
    expr = act.sympy(x)
    pts = np.concatenate([POINTS[::7], [1.0, 1.0 + 0.5 * INDICATOR_TOL, 1.0 + 2 * INDICATOR_TOL]])
    ref = np.array([float(expr.subs(x, sp.Float(float(p), 30)).evalf(30)) for p in pts])
    # sympy evaluates at 30 digits: the float64 `fn` is within a few ulps of the exact value.
    np.testing.assert_allclose(np.asarray(act.fn(jnp.asarray(pts))), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n != "indicator"])
def test_sympy_derivative_matches_derivative(name):
    act = ACTIVATIONS[name]
    x = sp.Symbol("x", real=True)
    dexpr = sp.diff(act.sympy(x), x)
    pts = POINTS[::11]
    ref = np.array([float(dexpr.subs(x, sp.Float(float(p), 30)).evalf(30)) for p in pts])
    # Exact symbolic derivative at 30 digits vs the float64 closed form.
    np.testing.assert_allclose(np.asarray(act.derivative(jnp.asarray(pts))), ref, rtol=1e-12, atol=1e-12)


def test_flags():
    assert [n for n in NAMES if not ACTIVATIONS[n].smooth] == ["relu"]
    assert sorted(n for n in NAMES if ACTIVATIONS[n].homogeneous) == ["linear", "relu"]
    # The homogeneous ones really are 1-homogeneous for c > 0; the others are not.
    x = jnp.asarray(POINTS)
    for name in NAMES:
        act = ACTIVATIONS[name]
        same = bool(jnp.allclose(act.fn(2.5 * x), 2.5 * act.fn(x), rtol=1e-14, atol=0))
        assert same == act.homogeneous, name


def test_indicator_tolerance():
    ind = ACTIVATIONS["indicator"]

    def at(x):
        return float(ind.fn(jnp.asarray(x, dtype=float)))

    assert at(1.0) == 1.0
    # Round-off in a computed Gram diagonal must still count as "m = 1".
    assert at(sum([0.1] * 10)) == 1.0  # 0.9999999999999999
    assert at(1.0 + 0.5 * INDICATOR_TOL) == 1.0
    assert at(1.0 - 0.5 * INDICATOR_TOL) == 1.0
    assert at(1.0 + 2 * INDICATOR_TOL) == 0.0
    assert at(1.0 - 2 * INDICATOR_TOL) == 0.0
    assert at(0.0) == 0.0 and at(0.8) == 0.0 and at(-1.0) == 0.0 and at(2.0) == 0.0
    out = ind.fn(jnp.array([[1.0, 0.8], [0.8, 1.0]]))
    np.testing.assert_array_equal(np.asarray(out), np.eye(2))
    assert out.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(ind.derivative(jnp.array([0.5, 1.0]))), [0.0, 0.0])


def test_get_activation():
    assert get_activation("tanh") is ACTIVATIONS["tanh"]
    act = ACTIVATIONS["gelu"]
    assert get_activation(act) is act


@pytest.mark.parametrize("bad", ["ReLU", "softmax", "", None, 3])
def test_unknown_activation_names_the_known_ones(bad):
    with raises_unchecked(ValueError) as info:
        get_activation(bad)
    msg = str(info.value)
    assert "unknown activation" in msg
    for name in NAMES:
        assert name in msg
