"""The Gaussian integrals of `cnntheory.gaussian._integrals` (`closed_form`, `quadrature`,
`gaussian_expectation`, `expectation`): the closed forms against the Gauss-Hermite quadrature
and against numpy Monte Carlo; the quadrature against exact moments (Isserlis) and, for an
activation without a closed form, against Monte Carlo; and which path `expectation` picks."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnntheory import get_activation
from cnntheory.gaussian import closed_form, expectation, gaussian_expectation, hermite_rule
from cnntheory.gaussian._integrals import quadrature

# Slots per kind: the number of variables of the sub-covariance.
DIMS = {"I2": 2, "I3": 3, "I4": 4, "J2": 2, "J3": 3, "M1": 2}


def random_cov(rng, k, scale=1.0):
    """A random covariance with O(1) correlations (never singular)."""
    A = rng.normal(size=(k, k)) * scale
    return A @ A.T / k + 0.1 * np.eye(k)


@pytest.mark.slow
def test_quadrature_exact_for_polynomials():
    rng = np.random.default_rng(0)
    C = random_cov(rng, 4)
    got = float(gaussian_expectation(lambda u: u[..., 0] * u[..., 1] * u[..., 2] * u[..., 3], jnp.asarray(C), n=4))
    isserlis = C[0, 1] * C[2, 3] + C[0, 2] * C[1, 3] + C[0, 3] * C[1, 2]
    # Degree 4 < 2n: the rule is exact up to round-off.
    assert got == pytest.approx(isserlis, rel=1e-12, abs=1e-14)
    got6 = float(gaussian_expectation(lambda u: u[..., 0] ** 6, jnp.asarray(C[:1, :1]), n=4))
    assert got6 == pytest.approx(15 * C[0, 0] ** 3, rel=1e-12)


def test_quadrature_singular_covariance():
    # a = b exactly (rank 1): E[a^2 b^2] = 3 C_aa^2.
    C = jnp.asarray([[0.7, 0.7], [0.7, 0.7]])
    got = float(gaussian_expectation(lambda u: u[..., 0] ** 2 * u[..., 1] ** 2, C, n=6))
    assert got == pytest.approx(3 * 0.49, rel=1e-10)


SMOOTH_CASES = [(name, kind) for name in ("scaled_erf", "linear") for kind in ("I2", "I3", "I4", "J2", "J3", "M1")]


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", SMOOTH_CASES)
def test_smooth_closed_forms_match_quadrature(name, kind):
    rng = np.random.default_rng(zlib.crc32(f"{name}-{kind}".encode()))  # hash() of str varies per process
    fn = closed_form(name, kind)
    g = get_activation(name)
    n = 32 if DIMS[kind] == 4 else 48
    quad = jax.jit(quadrature(kind, g, g, n=n))
    for _ in range(3):
        # Variances O(1): at variance >> 1 erf(x / sqrt 2) is step-like and the rule slows down.
        C = jnp.asarray(random_cov(rng, DIMS[kind], scale=0.7))
        # Analytic integrands: Gauss-Hermite converges exponentially (measured: I3 at variance
        # ~2 has error 1e-5, 7e-8, 4e-10 at n = 16, 24, 32), so 1e-9 is ample at these n.
        assert float(fn(C)) == pytest.approx(float(quad(C)), rel=1e-9, abs=1e-9)


def monte_carlo(kind, g, C, rng, n=400_000):
    """Mean and standard error of the integrand over n samples (numpy, independent of the package)."""
    u = rng.multivariate_normal(np.zeros(C.shape[0]), C, size=n)
    f, df = (lambda x: np.asarray(g.fn(x))), (lambda x: np.asarray(g.derivative(x)))
    vals = {
        "I2": lambda: f(u[:, 0]) * f(u[:, 1]),
        "I3": lambda: df(u[:, 0]) * u[:, 1] * f(u[:, 2]),
        "I4": lambda: df(u[:, 0]) * df(u[:, 1]) * f(u[:, 2]) * f(u[:, 3]),
        "J2": lambda: df(u[:, 0]) * df(u[:, 1]),
        "J3": lambda: df(u[:, 0]) * df(u[:, 1]) * f(u[:, 2]),
        "M1": lambda: df(u[:, 0]) * u[:, 1],
    }[kind]()
    return vals.mean(), vals.std() / np.sqrt(n)


MC_CASES = [("scaled_erf", k) for k in ("I2", "I3", "I4", "J2")] + [
    ("relu", k) for k in ("I2", "I3", "I4", "J2", "J3", "M1")
]


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", MC_CASES)
def test_closed_forms_match_monte_carlo(name, kind):
    rng = np.random.default_rng(7 + len(kind) + len(name))
    g = get_activation(name)
    fn = closed_form(name, kind)
    for _ in range(2):
        C = random_cov(rng, DIMS[kind])
        mean, se = monte_carlo(kind, g, C, rng)
        # 5 standard errors: a false alarm has probability ~6e-7 per check.
        assert abs(float(fn(jnp.asarray(C))) - mean) < 5 * se + 1e-12


@pytest.mark.slow
def test_relu_mean_and_closed_forms_match_quadrature():
    """relu closed forms against the quadrature, which converges only like 1/n at the kink:
    measured errors at n = 80 are 5e-4 to 2e-2 depending on the covariance, so 3e-2. The
    closed forms themselves are held to Monte Carlo above (and in test_relu.py);
    this checks the quadrature path that `method="quadrature"` takes."""
    rng = np.random.default_rng(3)
    g = get_activation("relu")
    for kind in ("I2", "I3", "J2", "M1", "J3", "I4"):
        C = jnp.asarray(random_cov(rng, DIMS[kind]))
        n = 24 if kind == "I4" else 80  # 24^4 points: error measured ~1e-2 (below)
        assert float(closed_form("relu", kind)(C)) == pytest.approx(float(quadrature(kind, g, g, n=n)(C)), abs=3e-2)
    c = 1.7
    assert float(closed_form("relu", "mean")(c)) == pytest.approx(np.sqrt(c / (2 * np.pi)), rel=1e-14)
    assert float(quadrature("mean", g, g, n=80)(c)) == pytest.approx(np.sqrt(c / (2 * np.pi)), abs=5e-3)


@pytest.mark.slow
def test_quadrature_for_activation_without_closed_form_matches_monte_carlo():
    """tanh has no closed form: `expectation` falls back to the quadrature."""
    rng = np.random.default_rng(11)
    g = get_activation("tanh")
    C = random_cov(rng, 4)
    fn = expectation("I4", "tanh", "tanh", which=("s", "s"))
    mean, se = monte_carlo("I4", g, C, rng)
    assert abs(float(fn(jnp.asarray(C))) - mean) < 5 * se


def test_auto_uses_closed_form_only_when_all_activations_have_one():
    assert expectation("I2", "scaled_erf", "scaled_erf", which=("s", "t")) is closed_form("scaled_erf", "I2")
    assert expectation("I2", "scaled_erf", "tanh", which=("s", "t")) is not closed_form("scaled_erf", "I2")
    assert expectation("I4", "relu", "relu", which=("s", "t")) is closed_form("relu", "I4")
    assert expectation("I4", "relu", "relu", which=("s", "t"), method="quadrature") is not closed_form("relu", "I4")
    assert expectation("I4", "relu", "tanh", which=("s", "t")) is not closed_form("relu", "I4")  # quadrature fallback


@pytest.mark.parametrize("n", [3, 8, 16])
def test_hermite_rule_is_the_normalised_probabilists_rule(n):
    import scipy.special

    nodes, weights = hermite_rule(1, n)
    assert nodes.shape == (n, 1) and weights.shape == (n,)
    # scipy's probabilists' Gauss-Hermite rule (weight exp(-x^2/2), total sqrt(2 pi)), normalised
    x, w = scipy.special.roots_hermitenorm(n)
    np.testing.assert_allclose(nodes[:, 0], x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(weights, w / np.sqrt(2 * np.pi), rtol=1e-10, atol=1e-300)
    # standard normal moments E x^(2m) = (2m - 1)!!, exact for degree 2m < 2n (round-off 1e-13 relative)
    for m, value in [(0, 1.0), (1, 1.0), (2, 3.0), (3, 15.0), (4, 105.0)]:
        got = np.sum(weights * nodes[:, 0] ** (2 * m))
        if 2 * m < 2 * n:
            assert got == pytest.approx(value, rel=1e-12)
        else:  # beyond the rule's degree: not exact (n = 3, x^6 and x^8)
            assert abs(got - value) > 1e-3
        assert np.sum(weights * nodes[:, 0] ** (2 * m + 1)) == pytest.approx(0.0, abs=1e-12 * value)


def test_hermite_rule_tensor_grid_in_dimension_three():
    n = 4
    nodes, weights = hermite_rule(3, n)
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / np.sqrt(2 * np.pi)
    assert nodes.shape == (n**3, 3) and weights.shape == (n**3,)
    # every triple of 1-d nodes once, in C order, with the product weight
    ref_nodes = np.array([[a, b, c] for a in x for b in x for c in x])
    ref_weights = np.array([wa * wb * wc for wa in w for wb in w for wc in w])
    np.testing.assert_array_equal(nodes, ref_nodes)
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-15)
    # N(0, I_3) moments: E[x^2 y^4 z^6] = 1 * 3 * 15 (each degree < 2n = 8), E[x y] = 0
    assert np.sum(weights * nodes[:, 0] ** 2 * nodes[:, 1] ** 4 * nodes[:, 2] ** 6) == pytest.approx(45.0, rel=1e-12)
    assert np.sum(weights * nodes[:, 0] * nodes[:, 1]) == pytest.approx(0.0, abs=1e-14)
    assert np.sum(weights) == pytest.approx(1.0, rel=1e-14)


def test_hermite_rule_arrays_are_read_only():
    """The rule is cached and shared: writing into it would corrupt every later quadrature."""
    nodes, weights = hermite_rule(2, 4)
    for x in (nodes, weights):
        with pytest.raises(ValueError, match="read-only"):
            x[0] = 0.0
