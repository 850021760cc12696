"""The linear-CNN theory (`cnntheory.energy._theory`: `ExactLinearCNN`, `theorem_profile` and its
limits) against real GD (`train_linear_cnn`, every step, one seed and the mean over 600 seeds),
against its own limits (early steps, whitening, the geometric series, eta -> 0 at fixed
eta t), and the factor 2 of the mean-of-squares loss."""

import numpy as np
import pytest

import cnntheory.energy as E

K, k = 4, 3  # filters, patch side (the `data` fixture of tests/energy/conftest.py pools 3 x 3 patches)


@pytest.mark.slow
@pytest.mark.parametrize("true_labels", [False, True])
def test_exact_formula_is_the_gd_trajectory_at_every_step(data, true_labels):
    images, labels, pooled, _ = data
    eta = 0.05  # 2 eta K alpha_max ~ 1.1: a large, oscillating step is still exact
    run = E.train_linear_cnn(
        images, labels if true_labels else None, k=k, num_filters=K, lr=eta, steps=60, num_seeds=2, init_std=0.1
    )
    for s in range(2):
        exact = E.ExactLinearCNN(pooled, run.labels[s], K)
        assert 2 * eta * K * exact.alphas.max() > 1
        predicted = exact.filters(run.steps, eta, run.initial[s])
        # per PCA component, every step; round-off of 60 float64 steps is ~1e-12 on O(1) filters
        np.testing.assert_allclose(predicted, run.filters[s], rtol=0, atol=1e-10)


@pytest.mark.slow
def test_the_factor_two_belongs_to_the_mean_of_squares(data):
    # with L = mean (yhat - y)^2 the rate is 2 eta K alpha; the 1/2-MSE rate eta K alpha misses by O(1)
    images, _, pooled, _ = data
    run = E.train_linear_cnn(
        images, None, k=k, num_filters=K, lr=0.01, steps=20, num_seeds=1, init_std=0.0, record_every=20
    )
    exact = E.ExactLinearCNN(pooled, run.labels[0], K)
    right = exact.delta(20, 0.01)
    half = exact.delta(20, 0.005) * 2  # eta -> eta/2 in g and g/(K alpha) = the 1/2-MSE formula
    learned = run.filters[0, -1, 0]
    assert np.abs(right - learned).max() < 1e-12
    assert np.abs(half - learned).max() > 1e-2 * np.abs(learned).max()


@pytest.mark.slow
def test_mean_over_seeds_matches_the_expected_profile(data):
    images, _, pooled, pca = data
    eta, steps, seeds = 0.02, 40, 600
    run = E.train_linear_cnn(
        images, None, k=k, num_filters=K, lr=eta, steps=steps, num_seeds=seeds, init_std=0.05, record_every=20
    )
    # energy of the learned part W(t) - W(0): |Delta . u_i|, a folded Gaussian per seed
    energies = E.energy_profile(run.filters, pca.basis, run.initial[:, None])  # (S, T, D)
    exact = E.ExactLinearCNN(pooled, np.zeros(len(images)), K)
    expected = exact.expected_energy(run.steps, eta, pca.basis, label_std=1.0, init_std=0.05)
    mean, sem = energies.mean(axis=0), energies.std(axis=0) / np.sqrt(seeds)
    z = (mean[1:] - expected[1:]) / sem[1:]
    assert np.all(np.abs(z) < 4.5), z  # 54 components: a 4.5-sigma band fails with probability ~4e-4
    # and the folded-Gaussian spread: std / mean = sqrt(pi/2 - 1) ~ 0.755
    np.testing.assert_allclose(energies.std(axis=0)[1:] / mean[1:], np.sqrt(np.pi / 2 - 1), rtol=0.15)


def test_theorem_limits():
    lam = np.array([2.0, 1.0, 0.5, 0.1])
    eta = 0.1
    # small t: proportional to lambda; large t: whitening 1 / (eta lambda)
    np.testing.assert_allclose(
        E.theorem_profile(lam, 1, eta), E.early_limit(lam, 1), rtol=1e-14
    )  # one step: exactly lambda
    early = E.theorem_profile(lam, 10, 1e-6)  # t eta lambda^2 <= 4e-5
    np.testing.assert_allclose(early / E.early_limit(lam, 10), 1, rtol=1e-4)
    late = E.theorem_profile(lam, 1e6, eta)
    np.testing.assert_allclose(late, E.whitening_limit(lam, eta), rtol=1e-10)
    # integer t: the closed form is the sum of the geometric series sum_{s<t} (1 - eta lambda^2)^s
    t = 7
    series = sum((1 - eta * lam**2) ** s for s in range(t)) * lam
    np.testing.assert_allclose(E.theorem_profile(lam, t, eta), series, rtol=1e-13)
    # eta -> 0 at fixed tau = eta t: the flow form
    tau = 3.0
    for eta_small in (1e-4, 1e-5):
        np.testing.assert_allclose(
            eta_small * E.theorem_profile(lam, tau / eta_small, eta_small),
            E.flow_profile(lam, tau),
            rtol=20 * eta_small,
        )
    with pytest.raises(ValueError, match="diverges"):
        E.theorem_profile(lam, 3, eta=1.0)


def test_delta_std_is_the_spread_of_brute_force_gd(data):
    # Delta(t) is linear in the labels y and the mean initial filter wbar0: iterate the GD map on
    # the matrices, Delta_t = B_t y + C_t wbar0, with
    #   B_{t+1} = B_t - 2 eta (K A B_t - P^T / N),  C_{t+1} = C_t - 2 eta K A (I + C_t),
    # then Var(u . Delta) = s_y^2 |B^T u|^2 + (s_w^2 / K) |C^T u|^2 (wbar0 ~ N(0, s_w^2 / K)).
    _, _, pooled, pca = data
    N, D = pooled.shape
    eta, label_std, init_std = 0.05, 0.7, 0.2
    A = pooled.T @ pooled / N
    B, C = np.zeros((D, N)), np.zeros((D, D))
    steps, ref = [0, 1, 5, 30], []
    rng = np.random.default_rng(12)
    other = np.linalg.qr(rng.standard_normal((D, D)))[0]  # any orthonormal basis, not only the PCA's
    for t in range(31):
        if t in steps:
            ref.append([label_std**2 * np.sum((u.T @ B) ** 2, axis=1) + init_std**2 / K * np.sum((u.T @ C) ** 2, axis=1)
                        for u in (pca.basis, other)])  # fmt: skip
        B, C = B - 2 * eta * (K * A @ B - pooled.T / N), C - 2 * eta * K * A @ (np.eye(D) + C)
    ref = np.sqrt(np.array(ref))  # (T, basis, D)
    exact = E.ExactLinearCNN(pooled, np.zeros(N), K)
    for b, basis in enumerate((pca.basis, other)):
        got = exact.delta_std(np.array(steps), eta, basis, label_std=label_std, init_std=init_std)
        assert got.shape == (len(steps), D)
        np.testing.assert_array_equal(got[0], 0.0)
        # 30 float64 GD steps against the eigen-decomposed closed form: round-off only
        np.testing.assert_allclose(got, ref[:, b], rtol=1e-9, atol=1e-14)
    # and the expected energy is the folded-Gaussian mean sqrt(2 / pi) sigma
    np.testing.assert_allclose(
        exact.expected_energy(7, eta, pca.basis, label_std, init_std),
        np.sqrt(2 / np.pi) * exact.delta_std(7, eta, pca.basis, label_std, init_std),
        rtol=1e-15,
    )
