"""Curvature: the Hessian against finite differences, and gradient descent's stability edge
`2 / lambda_max(Lambda^{1/2} H Lambda^{1/2})`.

Checked against gradient descent itself, written here with `jax.grad` of the parameter
loss (not the Hessian code): at a global minimum, a small perturbation decays or stays for
a step just below the edge and grows geometrically just above it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_checks import raises_unchecked
from helpers_problems import SEED_M0, SEED_V0

import cnntheory as ct
from cnntheory import analysis as an
from cnntheory.analysis import kernels_from_order, parameter_loss, stability_edge


def _realizable(seed):
    """A teacher the student can match: same activation, so `m = m*`, `v = v*` has zero loss."""
    rng = np.random.default_rng(seed)
    mixture = ct.PatchMixture(ct.shape_atoms(5, rng.uniform(0.2, 0.8)), tuple(rng.uniform(0.5, 3.0, 2)), None, "mean")
    head = rng.normal(size=2) + np.array([1.0, -1.0])
    problem = ct.TeacherStudent(
        mixture,
        head,
        teacher_activation="tanh",
        student_activation="tanh",
        kernel_lr_multiplier=25.0,
        head_lr_multiplier=1.0,
    )
    return problem, problem.teacher_overlaps, jnp.asarray(head)


def _gd_distance(problem, m, v, lr, steps=200, size=1e-8, seed=0):
    """Distance (metric `Lambda^{-1}`) from the minimum after `steps` GD steps from a random perturbation of size `size`."""
    K0 = kernels_from_order(problem, m)
    dK, dv = (
        jax.random.normal(jax.random.key(seed), (2, *K0.shape))[0],
        jax.random.normal(jax.random.key(seed + 1), v.shape),
    )
    # Distances in the metric Lambda^{-1}, where the linearised map I - lr Lambda^{1/2} H Lambda^{1/2}
    # is symmetric, so below the edge the norm cannot grow (in the Euclidean norm the oblique
    # projection onto the zero modes may lengthen a perturbation by a few per cent).
    norm = lambda K, w: jnp.sqrt(
        jnp.sum(K**2) / problem.kernel_lr_multiplier + jnp.sum(w**2) / problem.head_lr_multiplier
    )
    scale = size / norm(dK, dv)
    grad = jax.jit(jax.grad(lambda K, v: parameter_loss(problem, K, v), argnums=(0, 1)))
    K, w = K0 + scale * dK, v + scale * dv
    for _ in range(steps):
        gK, gv = grad(K, w)
        K, w = K - lr * problem.kernel_lr_multiplier * gK, w - lr * problem.head_lr_multiplier * gv
    return float(norm(K - K0, w - v)) / size


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_descent_is_stable_just_below_the_edge_and_not_above(seed):
    problem, m, v = _realizable(seed)
    assert float(problem.loss(m, v)) < 1e-28  # a global minimum
    edge = stability_edge(problem, m, v)
    assert np.isfinite(edge) and edge > 0
    # Below: every mode's factor is |1 - 0.95 lr_edge lambda| <= 0.9, zero modes keep their size,
    # so the perturbation cannot grow (1.01: round-off on a 1e-8 perturbation).
    assert _gd_distance(problem, m, v, 0.95 * edge) < 1.01
    # Above: the top mode grows by |1 - 2.1| = 1.1 per step, 1.1^200 ~ 2e8, times its share
    # of a random direction (~1/sqrt(52)): far past 1e4.
    grown = _gd_distance(problem, m, v, 1.05 * edge)
    assert not np.isfinite(grown) or grown > 1e4


@pytest.mark.slow
def test_edge_of_the_shape_counting_start_and_bad_input():
    problem = ct.shape_counting(0.8, (1.0, 1.0), "relu", 4)
    m0, v0 = jnp.asarray(SEED_M0), jnp.asarray(SEED_V0)
    edge = stability_edge(problem, m0, v0)
    # The same number as the lr-metric sharpness of a one-point trajectory (independent route:
    # eigenvalues of Lambda H, not symmetrised, by numpy).
    from cnntheory.analysis import hessian

    H = np.asarray(hessian(problem, m0, v0))
    lam = np.concatenate([np.full(2 * problem.patch_dim, 25.0), np.ones(2)])
    top = np.max(np.linalg.eigvals(lam[:, None] * H).real)
    np.testing.assert_allclose(edge, 2.0 / top, rtol=1e-10)  # two eigen-solvers on a 52 x 52 matrix
    with raises_unchecked(ValueError, match="need m"):
        stability_edge(problem, m0.ravel(), v0)


@pytest.mark.slow
def test_hessian_matches_finite_differences_and_landscape_centre():
    problem = ct.shape_counting(0.8, (2.0, 1.0), "tanh", k=3)
    m, v = jnp.array([[0.3, -0.2], [0.1, 0.5]]), jnp.array([0.7, -0.4])
    H = np.asarray(an.hessian(problem, m, v))
    K = np.asarray(an.kernels_from_order(problem, m))
    np.testing.assert_allclose(K @ np.asarray(problem.mixture.atoms).T / problem.patch_dim, m, atol=1e-12)
    theta = np.concatenate([K.ravel(), v])
    L, D = 2, problem.patch_dim
    f = lambda th: float(an.parameter_loss(problem, jnp.asarray(th[: L * D]).reshape(L, D), jnp.asarray(th[L * D :])))
    h = 1e-4
    rng = np.random.default_rng(0)
    for _ in range(4):
        i, j = rng.integers(theta.size, size=2)
        ei, ej = np.eye(theta.size)[i] * h, np.eye(theta.size)[j] * h
        fd = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej) + f(theta - ei - ej)) / (4 * h * h)
        assert abs(H[i, j] - fd) < 1e-6
    ls = an.landscape(problem, m, v, key=jax.random.PRNGKey(1), n=5, extent=0.5)
    assert np.isclose(float(ls.loss[2, 2]), float(problem.loss(m, v)), rtol=1e-13, atol=0)
    traj = ct.solve(problem, m, v, 5.0, ts=np.linspace(0, 5, 6))
    sharp = np.asarray(an.sharpness(problem, traj))
    assert np.isclose(sharp[0], np.linalg.eigvalsh(H)[-1])
