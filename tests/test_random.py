"""The image samplers (`cnntheory._random`) against scipy's distributions: Kolmogorov-Smirnov
tests of the gamma draws (both branches, and with several rejection rounds forced), the
Dirichlet moments and marginals, and categorical frequencies (chi-square).

Fixed keys make every test deterministic; the thresholds (p > 1e-3, 5 standard errors)
fail for a wrong distribution at these sample sizes (a 3% error in a gamma's scale gives
p ~ 1e-11 with 40 000 draws; `test_a_wrong_scale_is_detected`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import cnntheory._random as rnd

N = 40_000


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0, 2.5, 7.0])
def test_gamma_matches_scipy(alpha):
    g = np.exp(np.asarray(rnd.log_gamma(jax.random.key(1), alpha, (N,))))
    assert np.isfinite(g).all()
    assert stats.kstest(g, stats.gamma(alpha).cdf).pvalue > 1e-3


@pytest.mark.slow
def test_gamma_is_exact_over_several_rounds(monkeypatch):
    """One candidate per round: about 5% of elements need a second round, some a third;
    the result is still the first accepted candidate of each element's sequence."""
    monkeypatch.setattr(rnd, "TRIES", 1)
    for alpha in (1.0, 3.0):
        g = np.exp(np.asarray(rnd.log_gamma(jax.random.key(2), alpha, (N,))))
        assert stats.kstest(g, stats.gamma(alpha).cdf).pvalue > 1e-3


@pytest.mark.slow
def test_a_wrong_scale_is_detected():
    """The KS threshold has power: draws scaled by 1.03 fail it (p ~ 1e-11)."""
    g = 1.03 * np.exp(np.asarray(rnd.log_gamma(jax.random.key(1), 2.5, (N,))))
    assert stats.kstest(g, stats.gamma(2.5).cdf).pvalue < 1e-6


@pytest.mark.slow
def test_gamma_broadcasts_alpha():
    alpha = jnp.array([0.5, 4.0])
    g = np.exp(np.asarray(rnd.log_gamma(jax.random.key(3), alpha, (N, 2))))
    for j, a in enumerate(np.asarray(alpha)):
        assert stats.kstest(g[:, j], stats.gamma(a).cdf).pvalue > 1e-3


@pytest.mark.slow
def test_dirichlet_moments_and_marginals():
    alpha = np.array([0.5, 2.0, 3.5])
    rho = np.asarray(rnd.dirichlet(jax.random.key(4), jnp.asarray(alpha), N))
    np.testing.assert_allclose(rho.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    a0 = alpha.sum()
    mean = alpha / a0
    cov = (np.diag(mean) - np.outer(mean, mean)) / (a0 + 1)
    se = np.sqrt(np.diag(cov) / N)
    assert np.all(np.abs(rho.mean(axis=0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(rho.T), cov, rtol=0, atol=5 * np.sqrt(2 / N) * np.max(np.diag(cov)))
    for j, a in enumerate(alpha):
        assert stats.kstest(rho[:, j], stats.beta(a, a0 - a).cdf).pvalue > 1e-3


@pytest.mark.slow
def test_dirichlet_with_tiny_alpha_stays_finite():
    """Gamma(0.01) draws underflow a float64 often; in logs the Dirichlet stays a distribution."""
    rho = np.asarray(rnd.dirichlet(jax.random.key(5), jnp.array([0.01, 0.01, 0.02]), 2000))
    assert np.isfinite(rho).all()
    np.testing.assert_allclose(rho.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    # Mean of the Beta marginal 0.01 / 0.04 = 0.25 (standard error ~0.0097).
    assert abs(rho[:, 0].mean() - 0.25) < 5 * 0.0097


def test_categorical_frequencies():
    probs = jnp.array([[0.0, 0.3, 0.7], [0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    draws = np.asarray(rnd.categorical(jax.random.key(6), probs, (200, 100)))
    assert draws.shape == (3, 200, 100) and draws.min() >= 0 and draws.max() <= 2
    for row, p in zip(draws, np.asarray(probs), strict=True):
        counts = np.bincount(row.ravel(), minlength=3)
        assert np.all(counts[p == 0] == 0)
        live = p > 0
        if live.sum() > 1:
            assert stats.chisquare(counts[live], counts.sum() * p[live]).pvalue > 1e-3
