"""`gradient_flow` (`cnntheory.energy._flow`, diffrax) against the exact solution of the linear
CNN's gradient flow (`ExactLinearCNN.flow_delta`), and the discrete closed form of GD tending to
that flow at first order in eta."""

import numpy as np

import cnntheory.energy as E

K = 4  # filters


def test_gradient_flow_matches_the_analytic_flow_and_the_eta_to_zero_limit(data):
    images, labels, pooled, _ = data
    rng = np.random.default_rng(0)
    y = rng.standard_normal(len(images))
    w0 = 0.1 * rng.standard_normal((K, pooled.shape[1]))
    exact = E.ExactLinearCNN(pooled, y, K)
    taus = np.array([0.0, 0.5, 2.0, 8.0])
    flow = E.gradient_flow(pooled, y, w0, taus, rtol=1e-11, atol=1e-13)
    analytic = w0 + exact.flow_delta(taus, w0.mean(axis=0))[:, None]
    np.testing.assert_allclose(flow, analytic, rtol=0, atol=1e-8)
    # discrete closed form at t = tau / eta -> the flow, with error O(eta)
    errors = []
    for eta in (0.02, 0.01, 0.005):
        steps = np.round(taus / eta)
        errors.append(np.abs(exact.filters(steps, eta, w0) - analytic).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.05)  # first order in eta
