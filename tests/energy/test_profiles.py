"""Energy profiles, the Pearson comparison and the fit of the step count `t`
(`cnntheory.energy._profiles`): the profile against explicit loops over filters and
components, Pearson against `numpy.corrcoef`, and `fit_steps` recovering a `t` planted in the
theorem's profile, with and without noise; argument checks."""

import numpy as np
import pytest

import cnntheory.energy as E


def test_energy_profile_against_loops():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    w, w0 = rng.standard_normal((5, 12)), rng.standard_normal((5, 12))
    ref = np.array([np.sqrt(np.mean([(w[k] @ basis[:, i]) ** 2 for k in range(5)])) for i in range(12)])
    np.testing.assert_allclose(E.energy_profile(w, basis), ref, rtol=1e-13)
    ref0 = np.array([np.sqrt(np.mean([((w[k] - w0[k]) @ basis[:, i]) ** 2 for k in range(5)])) for i in range(12)])
    np.testing.assert_allclose(E.energy_profile(w, basis, initial=w0), ref0, rtol=1e-13)
    # conv weights (K, C, k, k) flatten in (channel, row, col) order
    np.testing.assert_allclose(E.energy_profile(w.reshape(5, 3, 2, 2), basis), ref, rtol=1e-13)
    # orthonormal basis: the total energy is the mean squared filter norm
    np.testing.assert_allclose(np.sum(E.energy_profile(w, basis) ** 2), np.mean(np.sum(w**2, axis=1)), rtol=1e-13)
    with pytest.raises(ValueError, match="filters must have shape"):
        E.energy_profile(rng.standard_normal((5, 7)), basis)


def test_pearson_is_numpy_corrcoef_and_scale_free():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(20), rng.standard_normal(20)
    np.testing.assert_allclose(E.pearson(a, b), np.corrcoef(a, b)[0, 1], rtol=1e-13)
    np.testing.assert_allclose(E.pearson(3 * a + 1, b), E.pearson(a, b), rtol=1e-13)


@pytest.mark.parametrize("t_true", [3.0, 40.0, 700.0])
def test_fit_steps_recovers_a_planted_t(t_true):
    lam = np.geomspace(1.0, 0.02, 27)
    eta = 0.5
    profile = 2.7 * E.theorem_profile(lam, t_true, eta)
    fit = E.fit_steps(profile, lam, eta)
    np.testing.assert_allclose(fit.t, t_true, rtol=1e-4)
    assert fit.correlation > 1 - 1e-12
    np.testing.assert_allclose(fit.profile, E.normalise(profile), rtol=1e-6)


def test_fit_steps_with_noise_stays_close():
    lam = np.geomspace(1.0, 0.02, 27)
    profile = E.theorem_profile(lam, 100.0, 0.5)
    noisy = profile * (1 + 0.05 * np.random.default_rng(2).standard_normal(27))
    fit = E.fit_steps(noisy, lam, 0.5)
    assert 0.5 < fit.t / 100.0 < 2.0 and fit.correlation > 0.95


def test_fit_steps_bad_input():
    lam = np.geomspace(1.0, 0.1, 5)
    with pytest.raises(ValueError, match="eta"):
        E.fit_steps(lam, lam, eta=2.0)
    with pytest.raises(ValueError, match="not constant"):
        E.fit_steps(np.ones(5), lam, eta=0.1)
    with pytest.raises(ValueError, match="one length"):
        E.fit_steps(lam[:4], lam, eta=0.1)
