"""relu's closed-form I4 and J3 and the orthant probability (`cnntheory.gaussian._relu`): I4 and J3
against numpy Monte Carlo on random and degenerate covariances, against exact identities
(symmetries, homogeneity, independence, duplicated fields), continuity and finite derivatives
near degeneracy; the 4-variate orthant probability against exact special values and scipy's
Genz integration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from cnntheory.gaussian._integrals import closed_form
from cnntheory.gaussian._relu import orthant4, relu_I4, relu_J3

# Compiled once per shape: eager evaluation of these small graphs is what costs time.
I4 = jax.jit(relu_I4)
J3 = jax.jit(relu_J3)
I2 = jax.jit(closed_form("relu", "I2"))
J2 = jax.jit(closed_form("relu", "J2"))
P4 = jax.jit(orthant4, static_argnums=1)


def monte_carlo(L, rng, n):
    """Means and standard errors of the I4 and J3 integrands (first three fields) for fields
    `u = L z` (exact duplicates stay exact in the samples)."""
    u = rng.normal(size=(n, L.shape[1])) @ L.T
    j3 = (u[:, 0] > 0) * (u[:, 1] > 0) * np.maximum(u[:, 2], 0.0)
    i4 = j3 * np.maximum(u[:, 3], 0.0)
    return (i4.mean(), i4.std() / np.sqrt(n)), (j3.mean(), j3.std() / np.sqrt(n))


_rng = np.random.default_rng(2026)
_s, _t1, _t2, _t3 = _rng.normal(size=(4, 3))
# Field vectors (rows of L, fields u = L z, z ~ N(0, I_3)): generic and every degeneracy of the
# flow (the same field twice, a student equal or opposite to a teacher, fields in a plane,
# zero variance).
CASES = {
    "generic": [_s, _t1, _t2, _t3],
    "a=b": [_s, _s, _t1, _t2],
    "c=d": [_s, _t1, _t2, _t2],
    "a=c": [_s, _t1, _s, _t2],
    "a=b=c=d": [_s, _s, _s, _s],
    "a=b,c=d": [_s, _s, _t1, _t1],
    "a=d,b=c": [_s, _t1, _t1, _s],
    "b=2a": [_s, 2 * _s, _t1, _t2],
    "a=-b": [_s, -_s, _t1, _t2],
    "c=-d": [_s, _t1, _t2, -_t2],
    "plateau: a=b in span(c,d)": [_t1 + _t2, _t1 + _t2, _t1, _t2],
    "a in span(c,d)": [_t1 + 0.5 * _t2, _t3, _t1, _t2],
    "four fields in a plane": [_t1, _t2, _t1 + 0.3 * _t2, _t1 - 0.7 * _t2],
    "three fields in a plane": [_t1 + _t2, _t1 - 0.2 * _t2, _t1, _t3],
    "zero variance a": [0 * _s, _t1, _t2, _t3],
    "zero variance d": [_s, _t1, _t2, 0 * _t3],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_relu_I4_J3_match_monte_carlo(name):
    L = np.array(CASES[name])
    C = jnp.asarray(L @ L.T)
    mc = monte_carlo(L, np.random.default_rng(len(name)), 1_000_000)
    for (mean, se), got in zip(mc, (I4(C), J3(C[:3, :3])), strict=True):
        # 5 standard errors: a false alarm has probability 6e-7 per check. The formula is exact,
        # so the only tolerance is the Monte Carlo one (se ~ 2e-3 of the value here).
        assert abs(float(got) - mean) <= 5 * se + 1e-15, (float(got), mean, se)


@pytest.mark.slow
def test_relu_I4_J3_match_monte_carlo_1e7():
    rng = np.random.default_rng(5)
    L = rng.normal(size=(4, 4))
    L[0] *= 1.5  # unequal variances
    C = jnp.asarray(L @ L.T)
    (m4, s4), (m3, s3) = monte_carlo(L, rng, 10_000_000)
    # se ~ 3e-4 of the values: 5 se.
    assert abs(float(I4(C)) - m4) < 5 * s4
    assert abs(float(J3(C[:3, :3])) - m3) < 5 * s3


def random_cov(rng, k):
    A = rng.normal(size=(k, k))
    return jnp.asarray(A @ A.T / k + 0.05 * np.eye(k))


@pytest.mark.slow
def test_orthant4_exact_values_and_scipy():
    # Equicorrelated: P = 1/16 at rho = 0, 1/(n + 1) = 1/5 at rho = 1/2 (exact).
    assert float(P4(jnp.eye(4), 48)) == pytest.approx(1 / 16, rel=1e-14)
    R = 0.5 * np.eye(4) + 0.5
    assert float(P4(jnp.asarray(R), 48)) == pytest.approx(1 / 5, rel=1e-13)
    # Two independent pairs: product of bivariate orthants; a singular R (x_1 = x_2): the
    # trivariate closed form 1/8 + sum arcsin / 4 pi.
    r, q = 0.6, -0.3
    R = np.array([[1, r, 0, 0], [r, 1, 0, 0], [0, 0, 1, q], [0, 0, q, 1]])
    bi = lambda x: 0.25 + np.arcsin(x) / (2 * np.pi)
    assert float(P4(jnp.asarray(R), 48)) == pytest.approx(bi(r) * bi(q), rel=1e-13)
    L = np.array(CASES["a=b"])
    C = L @ L.T
    sd = np.sqrt(np.diag(C))
    R = C / np.outer(sd, sd)
    tri = 0.125 + (np.arcsin(R[0, 2]) + np.arcsin(R[0, 3]) + np.arcsin(R[2, 3])) / (4 * np.pi)
    # Singular R: the t-substitution keeps the integrand smooth; 48 points give 1e-10.
    assert float(P4(jnp.asarray(R), 48)) == pytest.approx(tri, abs=1e-10)
    # Random R against scipy's Genz integration (its own accuracy ~1e-6 at abseps 1e-8) and
    # against 400 Legendre points (the 48-point rule has converged to round-off).
    rng = np.random.default_rng(1)
    for _ in range(5):
        C = np.asarray(random_cov(rng, 4))
        sd = np.sqrt(np.diag(C))
        R = C / np.outer(sd, sd)
        ours = float(P4(jnp.asarray(R), 48))
        assert ours == pytest.approx(float(P4(jnp.asarray(R), 400)), abs=1e-13)
        assert ours == pytest.approx(
            multivariate_normal(np.zeros(4), R, abseps=1e-8, releps=1e-8).cdf(np.zeros(4)), abs=2e-6
        )


@pytest.mark.slow
def test_relu_identities_on_random_covariances():
    """Exact consequences of the definitions, on 50 random covariances: symmetries,
    homogeneity, factorisation under independence, and the reductions of duplicated fields to
    relu's two-field closed forms (which Monte Carlo holds in test_integrals.py)."""
    rng = np.random.default_rng(3)
    vm = {relu_I4: jax.jit(jax.vmap(relu_I4)), relu_J3: jax.jit(jax.vmap(relu_J3))}
    batch = lambda f, Cs: np.asarray(vm[f](jnp.stack(Cs)))
    C4 = [random_cov(rng, 4) for _ in range(50)]
    swap = lambda C, p: C[jnp.ix_(jnp.array(p), jnp.array(p))]
    base = batch(relu_I4, C4)
    # Round-off level: every term is O(1) and the sums are short.
    np.testing.assert_allclose(batch(relu_I4, [swap(C, [1, 0, 2, 3]) for C in C4]), base, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(batch(relu_I4, [swap(C, [0, 1, 3, 2]) for C in C4]), base, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(batch(relu_I4, [2.5 * C for C in C4]), 2.5 * base, rtol=1e-12, atol=1e-14)
    J = batch(relu_J3, [C[:3, :3] for C in C4])
    np.testing.assert_allclose(batch(relu_J3, [swap(C, [1, 0, 2]) for C in C4]), J, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(batch(relu_J3, [4.0 * C[:3, :3] for C in C4]), 2.0 * J, rtol=1e-12, atol=1e-14)
    for C in C4[:10]:
        # (a, b) independent of (c, d): I4 = J2(a, b) I2(c, d); J3 = J2(a, b) E relu(c).
        blk = C.at[:2, 2:].set(0.0).at[2:, :2].set(0.0)
        assert float(I4(blk)) == pytest.approx(float(J2(blk[:2, :2]) * I2(blk[2:, 2:])), rel=1e-12)
        assert float(J3(blk[:3, :3])) == pytest.approx(
            float(J2(blk[:2, :2])) * np.sqrt(float(blk[2, 2]) / (2 * np.pi)), rel=1e-12
        )
        # theta(a)^2 relu(a) relu(d) = relu(a) relu(d): I4(a, a, a, d) = I2(a, d); also (a, b, a, b).
        assert float(I4(swap(C, [0, 0, 0, 3]))) == pytest.approx(float(I2(swap(C, [0, 3]))), rel=1e-12)
        assert float(I4(swap(C, [0, 1, 0, 1]))) == pytest.approx(float(I2(swap(C, [0, 1]))), rel=1e-12)
        # I4(a, a, a, a) = E[theta(a) a^2] = C_aa / 2; J3(a, a, a) = E relu(a) = sqrt(C_aa / 2 pi).
        assert float(I4(swap(C, [1, 1, 1, 1]))) == pytest.approx(float(C[1, 1]) / 2, rel=1e-12)
        assert float(J3(swap(C, [1, 1, 1]))) == pytest.approx(np.sqrt(float(C[1, 1]) / (2 * np.pi)), rel=1e-12)
        # J3(a, b, a) = E[theta(b) relu(a)] = C_ab / (2 sqrt(2 pi C_bb)) + sqrt(C_aa / 2 pi) / 2 (Stein).
        want = float(C[0, 1]) / (2 * np.sqrt(2 * np.pi * float(C[1, 1]))) + np.sqrt(float(C[0, 0]) / (2 * np.pi)) / 2
        assert float(J3(swap(C, [0, 1, 0]))) == pytest.approx(want, rel=1e-12)
        # An independent constraint field halves the integral: I4(z, b, c, d) = I4(b, b, c, d) / 2.
        ind = C.at[0, 1:].set(0.0).at[1:, 0].set(0.0)
        assert float(I4(ind)) == pytest.approx(float(I4(swap(C, [1, 1, 2, 3]))) / 2, rel=1e-12)


def test_relu_near_degenerate_is_continuous():
    """Approaching a = b (correlation 1 - 1e-k) the formula tends to the deduplicated value."""
    L = np.array(CASES["a=b"], dtype=float)
    exact = float(I4(jnp.asarray(L @ L.T)))
    perp = np.cross(L[0], L[2])
    for eps, tol in ((1e-4, 1e-3), (1e-8, 1e-6)):
        Le = L.copy()
        Le[1] = L[0] + eps * perp
        # The integral moves by O(eps) (measured: slope ~ 1 in eps), so tol ~ 10 eps suffices.
        assert float(I4(jnp.asarray(Le @ Le.T))) == pytest.approx(exact, abs=tol)


@pytest.mark.slow
def test_relu_forms_are_nan_free_and_differentiable():
    rng = np.random.default_rng(9)
    C = random_cov(rng, 4)
    dI4, dJ3 = jax.jit(jax.jacfwd(relu_I4)), jax.jit(jax.jacfwd(relu_J3))
    for pattern in ([0, 1, 2, 3], [0, 0, 2, 3], [0, 1, 1, 3], [0, 0, 0, 0], [0, 1, 0, 1]):
        sub = C[jnp.ix_(jnp.array(pattern), jnp.array(pattern))]
        assert np.all(np.isfinite(np.asarray(dI4(sub))))
        assert np.all(np.isfinite(np.asarray(dJ3(sub[:3, :3]))))
    # jax.jacfwd against central differences at a generic point (h = 1e-6: error ~ h^2 + 1e-16 / h).
    grad = np.asarray(dI4(C))
    E = np.zeros((4, 4))
    E[0, 2] = E[2, 0] = 1.0
    fd = (float(I4(C + 1e-6 * E)) - float(I4(C - 1e-6 * E))) / 2e-6
    assert float(np.sum(grad * E)) == pytest.approx(fd, abs=1e-8)
