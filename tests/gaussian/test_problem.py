"""`GaussianTeacherStudent` (`cnntheory.gaussian._problem`): its error and flow against Monte Carlo
of the real network at finite D (the network, its loss and `jax.grad` of it: a code path
independent of the hand-written expectations), against Saad & Solla's closed-form symmetric
plateau for one patch (tests/helpers_gaussian.py), internal consistency (quadrature vs closed
forms, N = 1, pooling), and its argument checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_gaussian import plateau_height, symmetric_point

from cnntheory.gaussian import GaussianTeacherStudent, gaussian_network, kernels_from_overlaps


def random_state(rng, K, M, scale=0.6):
    """Random overlaps of real kernels: Q, R from a random (K + M)-dim Gram matrix."""
    A = rng.normal(size=(K + M, K + M)) * scale
    G = A @ A.T / (K + M) + 0.2 * np.eye(K + M)
    return G[:K, :K], G[:K, K:], G[K:, K:], rng.normal(size=K)


# (N, pooling, student, teacher, K, M, noise, train_head): odd/non-odd, sum/mean, closed/quadrature.
CASES = [
    (1, "sum", "scaled_erf", "scaled_erf", 2, 3, 0.0, False),
    (4, "sum", "scaled_erf", "scaled_erf", 2, 2, 0.3, True),
    (3, "mean", "relu", "relu", 2, 1, 0.0, True),
    (2, "sum", "tanh", "scaled_erf", 2, 2, 0.2, True),
    (3, "mean", "linear", "linear", 1, 2, 0.0, True),
]


def make(case, rng, lr=1.0):
    N, pooling, s, t, K, M, noise, head = case
    Q, R, T, v = random_state(rng, K, M)
    p = GaussianTeacherStudent(
        N,
        rng.normal(size=M),
        T,
        student_activation=s,
        teacher_activation=t,
        lr=lr,
        noise_std=noise,
        train_head=head,
        pooling=pooling,
        quadrature_points=20,
    )
    return p, jnp.asarray(Q), jnp.asarray(R), jnp.asarray(v)


def _labels(p, Kstar, x, key):
    y = gaussian_network(Kstar, p.teacher_head, x, p.teacher_activation, p.pool_constant)
    return y + p.noise_std * jax.random.normal(key)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_error_matches_monte_carlo(case):
    rng = np.random.default_rng(1)
    p, Q, R, v = make(case, rng)
    dim, n = 40, 200_000
    Kstar, K = kernels_from_overlaps(p.teacher_overlaps, Q, R, dim, jax.random.PRNGKey(0))
    # The fields K x / sqrt(D) are exactly Gaussian at any D, so finite D is exact here.
    x = jax.random.normal(jax.random.PRNGKey(1), (n, p.num_patches, dim))
    f = jax.vmap(lambda xi: gaussian_network(K, v, xi, p.student_activation, p.pool_constant))(x)
    y = jax.vmap(lambda xi: gaussian_network(Kstar, p.teacher_head, xi, p.teacher_activation, p.pool_constant))(x)
    sq = 0.5 * np.asarray(f - y) ** 2
    # 5 standard errors of the sample mean.
    assert abs(float(p.error(Q, R, v)) - sq.mean()) < 5 * sq.std() / np.sqrt(n)


@eqx.filter_jit  # n, dim (Python ints) are static
def _one_step_changes(p, K, Kstar, v, key, n, dim):
    """D x the change of (Q, R, v) after one SGD step from (K, v), for n fresh images."""

    def loss(K, v, x, y):
        return 0.5 * (gaussian_network(K, v, x, p.student_activation, p.pool_constant) - y) ** 2

    def one(key):
        kx, kn = jax.random.split(key)
        x = jax.random.normal(kx, (p.num_patches, dim))
        gK, gv = jax.grad(loss, argnums=(0, 1))(K, v, x, _labels(p, Kstar, x, kn))
        K1 = K - p.lr * gK
        v1 = v - p.lr / dim * gv if p.train_head else v
        dQ = (K1 @ K1.T - K @ K.T) / dim * dim
        dR = (K1 - K) @ Kstar.T / dim * dim
        return dQ, dR, (v1 - v) * dim

    return jax.lax.map(one, jax.random.split(key, n), batch_size=2000)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_rhs_matches_monte_carlo_one_step(case):
    """`rhs` = D E[one-step change] as D -> infinity, with lr = 1 so that the eta^2 terms
    are as large as the first-order ones. At D = 400 the one-step change differs from its
    limit by O(1/D) (the in-span part of x_i . x_j / D), well below the tolerance."""
    rng = np.random.default_rng(2)
    p, Q, R, v = make(case, rng, lr=0.8)
    dim, n = 400, 40_000
    Kstar, K = kernels_from_overlaps(p.teacher_overlaps, Q, R, dim, jax.random.PRNGKey(3))
    samples = _one_step_changes(p, K, Kstar, v, jax.random.PRNGKey(4), n, dim)
    for name, theory, s in zip(("dQ", "dR", "dv"), p.rhs(Q, R, v), samples, strict=True):
        s = np.asarray(s)
        mean, se = s.mean(0), s.std(0) / np.sqrt(n)
        # 5 standard errors per entry, plus the O(1/D) finite-size bias (size |theory| / D * 10).
        tol = 5 * se + 10 * np.abs(np.asarray(theory)) / dim + 1e-12
        assert np.all(np.abs(np.asarray(theory) - mean) < tol), (name, np.asarray(theory), mean, se)


@pytest.mark.slow
def test_quadrature_rhs_equals_closed_form_rhs():
    rng = np.random.default_rng(5)
    Q, R, T, v = random_state(rng, 2, 2, scale=0.5)
    kw = dict(lr=0.7, noise_std=0.1, train_head=True)
    closed = GaussianTeacherStudent(3, [1.0, -0.5], T, **kw)
    quad = GaussianTeacherStudent(3, [1.0, -0.5], T, **kw, method="quadrature", quadrature_points=24)
    # Analytic integrands, variances O(1): the 24-point rule is converged to ~1e-7 (measured).
    for a, b in zip(closed.rhs(Q, R, v), quad.rhs(Q, R, v), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert float(closed.error(Q, R, v)) == pytest.approx(float(quad.error(Q, R, v)), abs=1e-9)


@pytest.mark.slow
def test_one_patch_is_the_committee_machine_and_odd_patches_rescale_time():
    """N = 1: sum and mean pooling coincide. Odd activations, no noise, small eta: the
    N-patch first-order flow is N c^2 times the committee flow (the eta^2 part differs)."""
    rng = np.random.default_rng(6)
    Q, R, T, v = random_state(rng, 3, 2)
    make = lambda N, pooling, lr: GaussianTeacherStudent(N, [0.8, 1.2], T, lr=lr, pooling=pooling, train_head=True)
    for a, b in zip(make(1, "sum", 0.5).rhs(Q, R, v), make(1, "mean", 0.5).rhs(Q, R, v), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    eta = 1e-7
    one = make(1, "sum", eta).rhs(Q, R, v)
    for N, pooling in ((4, "sum"), (4, "mean")):
        c = 1.0 if pooling == "sum" else 1 / N
        many = make(N, pooling, eta).rhs(Q, R, v)
        for a, b in zip(one, many, strict=True):
            # The eta^2 part is a relative 1e-7 of the first-order part.
            np.testing.assert_allclose(np.asarray(b), N * c**2 * np.asarray(a), rtol=1e-5, atol=1e-18)


def test_other_patches_act_as_output_noise():
    """Odd activations: the second-order part of dQ for N patches (sum pooling) equals the
    committee's with extra noise variance (N - 1) E h^2 = 2 (N - 1) eps_1 and factor N."""
    rng = np.random.default_rng(8)
    Q, R, T, v = random_state(rng, 2, 2)
    N, eta = 5, 0.9
    eps1 = float(GaussianTeacherStudent(1, [1.0, 1.0], T, lr=eta).error(Q, R, v))
    many = GaussianTeacherStudent(N, [1.0, 1.0], T, lr=eta)
    noisy = GaussianTeacherStudent(1, [1.0, 1.0], T, lr=eta, noise_std=np.sqrt(2 * (N - 1) * eps1))
    # Second-order part = dQ minus its first-order part, taken from a tiny-eta committee run
    # (the first-order part of the N-patch flow is N times the committee's, odd activations).
    tiny = GaussianTeacherStudent(1, [1.0, 1.0], T, lr=1e-9)
    first_order = np.asarray(tiny.rhs(Q, R, v)[0]) / 1e-9 * eta
    second_many = np.asarray(many.rhs(Q, R, v)[0]) - N * first_order
    second_noisy = np.asarray(noisy.rhs(Q, R, v)[0]) - first_order
    np.testing.assert_allclose(second_many, N * second_noisy, rtol=1e-6, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("K", [2, 3, 4])
def test_symmetric_fixed_point_and_height(K):
    eta = 1e-8  # the small-eta limit: the first-order flow
    p = GaussianTeacherStudent(1, np.ones(K), np.eye(K), lr=eta)
    Q, R = symmetric_point(K)
    v = jnp.ones(K)
    assert float(p.error(Q, R, v)) == pytest.approx(plateau_height(K), rel=1e-12)
    dQ, dR, _ = p.rhs(Q, R, v)
    # A fixed point of the first-order flow: the residual is the eta^2 part, ~eta relative.
    assert float(jnp.max(jnp.abs(dQ))) / eta < 1e-6 and float(jnp.max(jnp.abs(dR))) / eta < 1e-12


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_patches=0), "num_patches"),
        (dict(pooling="max"), "pooling"),
        (dict(teacher_overlaps=[[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
        (dict(teacher_overlaps=[[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
        (dict(teacher_overlaps=np.eye(3)), "shape"),
        (dict(lr=0.0), "lr"),
        (dict(noise_std=-1.0), "noise_std"),
        (dict(student_activation="nope"), "unknown activation"),
    ],
)
def test_bad_input_raises(kwargs, match):
    base = dict(num_patches=1, teacher_head=[1.0, 1.0], teacher_overlaps=np.eye(2))
    with pytest.raises(ValueError, match=match):
        GaussianTeacherStudent(**{**base, **kwargs})
