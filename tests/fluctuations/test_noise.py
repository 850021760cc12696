"""`cnntheory.fluctuations` count moments and gradient noise, against independent references.

Count moments against exact enumeration of Dirichlet-multinomial compositions; the gradient
noise `D` against exact enumeration of all patch configurations through a real strided
convolution (jax.grad of each image's loss), and against Monte Carlo through the sampler.
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_bruteforce import cnn_output, enumerate_images
from scipy.special import gammaln

import cnntheory as ct
from cnntheory import fluctuations as fl
from cnntheory import simulate as sim
from cnntheory._problem import flatten_state


def per_image_steps(problem, K, v, images, pool_scale):
    """`(m, v)` step direction of every image: `-(eta_K grad_K, eta_v grad_v)` of its loss, projected."""
    return _per_image_steps(problem, sim.teacher_kernels(problem), K, v, images, pool_scale)


@eqx.filter_jit
def _per_image_steps(problem, teacher, K, v, images, pool_scale):
    # Each image's loss 1/2 (f_i - y_i)^2 has gradient (f_i - y_i) grad f_i; the Jacobian of
    # the batch output f (S,) in K (L D directions) is forward-mode through the batched conv.
    f = lambda K, v: cnn_output(K, v, images, problem.sigma.fn, pool_scale)
    y = cnn_output(teacher, problem.teacher_head, images, problem.phi.fn, pool_scale)
    dfK, dfv = jax.jacfwd(f, argnums=(0, 1))(K, v)  # (S, L, D), (S, L)
    err = f(K, v) - y
    gK, gv = err[:, None, None] * dfK, err[:, None] * dfv
    atoms = problem.mixture.atoms
    dm = -problem.kernel_lr_multiplier * gK @ atoms.T / problem.patch_dim
    dv = -problem.head_lr_multiplier * gv
    return jax.vmap(flatten_state)(dm, dv)


# --- count moments -------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_count_moments_match_enumeration_of_compositions(pooling):
    alpha = np.array([0.7, 1.3, 2.0])
    M, P = 2, 3
    N = M * M
    mixture = ct.PatchMixture(ct.atoms_from_gram(np.eye(P), 3), alpha, M, pooling)
    E = {k: np.zeros((P,) * k) for k in (1, 2, 3, 4)}
    for n in itertools.product(range(N + 1), repeat=P):
        if sum(n) != N:
            continue
        n = np.array(n)
        # Dirichlet-multinomial pmf of the composition n
        logp = (
            gammaln(N + 1)
            - gammaln(n + 1).sum()
            + gammaln(alpha.sum())
            - gammaln(N + alpha.sum())
            + (gammaln(n + alpha) - gammaln(alpha)).sum()
        )
        nt = n if pooling == "sum" else n / N
        outer = np.ones(())
        for k in (1, 2, 3, 4):
            outer = np.multiply.outer(outer, nt)
            E[k] += np.exp(logp) * outer
    for k in (1, 2, 3, 4):
        scale = np.abs(E[k]).max()
        # exact sums of ~15 terms: round-off only
        np.testing.assert_allclose(fl.count_moment_tensor(mixture, k), E[k], rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(fl.count_moment_tensor(mixture, 2), mixture.moments, rtol=1e-14, atol=0)


def test_continuum_moments_are_the_limit_of_mean_pooling():
    alpha = jnp.array([1.0, 2.0])
    atoms = ct.atoms_from_gram(np.eye(2), 3)
    cont = fl.count_moment_tensor(ct.PatchMixture(atoms, alpha, None, "mean"), 4)
    big = fl.count_moment_tensor(ct.PatchMixture(atoms, alpha, 200, "mean"), 4)
    # corrections are O(1/N) with N = 40000 patches
    np.testing.assert_allclose(big, cont, rtol=1e-3)
    # and they are the Dirichlet fourth moments, checked by Monte Carlo (1e6 draws: 0.5% SE)
    rho = np.random.default_rng(0).dirichlet(np.asarray(alpha), 1_000_000)
    mc = np.einsum("si,sj,sk,sl->ijkl", rho, rho, rho, rho, optimize=True) / rho.shape[0]
    np.testing.assert_allclose(cont, mc, rtol=0.02)


# --- gradient noise ------------------------------------------------------------------------


def test_drift_map_reproduces_the_flow(random_problem):
    problem, m, v = random_problem(1, P=4, L=3)
    F = flatten_state(*problem.rhs(m, v))
    np.testing.assert_allclose(fl.drift_map(problem, m, v) @ problem.residual(m, v), F, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("pooling,M,P,seed", [("sum", 2, 3, 0), ("mean", 2, 3, 1), ("mean", 3, 2, 2)])
def test_gradient_noise_matches_exact_enumeration_through_the_convolution(random_problem, pooling, M, P, seed):
    problem, m, v = random_problem(seed, P=P, L=2, M=M, pooling=pooling)
    K = sim.init_kernels(problem, m, jax.random.key(seed))
    images, probs = enumerate_images(problem.mixture.atoms, problem.mixture.alpha, M)
    steps = per_image_steps(problem, K, v, images, 1.0 if pooling == "sum" else 1.0 / (M * M))
    mean = probs @ steps
    cov = (steps - mean).T @ (probs[:, None] * (steps - mean))
    # the mean step is the population flow
    np.testing.assert_allclose(mean, flatten_state(*problem.rhs(m, v)), rtol=1e-10, atol=1e-12)
    D = fl.gradient_noise(problem, m, v)
    # exact sums over P^N configurations vs closed form: round-off (conv in float64)
    np.testing.assert_allclose(D, cov, rtol=1e-9, atol=1e-12 * np.abs(cov).max())


def test_gradient_noise_matches_monte_carlo_through_the_sampler(random_problem):
    problem, m, v = random_problem(3, P=3, L=2, M=4, pooling="mean")
    K = sim.init_kernels(problem, m, jax.random.key(0))
    chunks = []
    for key in jax.random.split(jax.random.key(1), 4):  # 4 x 10000 images (one call at 40000 exhausts memory)
        images, _ = problem.mixture.sample(key, 10000)
        chunks.append(per_image_steps(problem, K, v, images, 1.0 / 16))
    steps = jnp.concatenate(chunks)
    S = steps.shape[0]
    cov = np.cov(np.asarray(steps).T)
    D = np.asarray(fl.gradient_noise(problem, m, v))
    # entrywise standard error of a sample covariance: sqrt(Var(x_i x_j) / S); 5 SE (+ tiny floor)
    x = np.asarray(steps) - np.asarray(steps).mean(axis=0)
    se = np.sqrt(np.var(x[:, :, None] * x[:, None, :], axis=0) / S)
    assert np.all(np.abs(D - cov) <= 5 * se + 1e-12), np.max(np.abs(D - cov) / (se + 1e-300))


# --- moments of linear forms and the skewness of the step noise -----------------------------


@pytest.mark.parametrize("M,pooling", [(2, "sum"), (3, "mean"), (None, "mean")])
def test_linear_form_moments_are_contractions_of_the_count_tensors(M, pooling):
    mixture = ct.PatchMixture(ct.atoms_from_gram(np.eye(3), 3), np.array([0.7, 1.3, 2.0]), M, pooling)
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 4):
        c = rng.standard_normal((k, 3))
        ref = fl.count_moment_tensor(mixture, k)
        for s in range(k):
            ref = jnp.tensordot(ref, c[s], axes=([0], [0]))
        # two exact sums of a few dozen terms: round-off
        np.testing.assert_allclose(fl.linear_form_moment(mixture, c), ref, rtol=1e-12, atol=1e-14)


def test_noise_skewness_matches_monte_carlo_over_sampled_counts(random_problem):
    """Sixth-order moments: the skewness of one image's step along the leading noise directions against
    200000 numpy Dirichlet-multinomial images (SE of a sample skewness ~ sqrt(6 / S) ~ 0.6%, heavier tails: 2%)."""
    from scipy import stats

    problem, m, v = random_problem(1, P=3, L=2, M=2, pooling="sum")
    skew, lam = fl.noise_skewness(problem, m, v)
    l, U = np.linalg.eigh(np.asarray(fl.gradient_noise(problem, m, v)))
    np.testing.assert_allclose(lam, l[::-1][:3], rtol=1e-10)
    G = np.asarray(fl.drift_map(problem, m, v))
    e = np.asarray(problem.student_outputs(m, v) - problem.teacher_outputs())
    rng = np.random.default_rng(0)
    rho = rng.dirichlet(np.asarray(problem.mixture.alpha), 200_000)
    n = np.stack([rng.multinomial(4, r) for r in rho]).astype(float)
    for i in range(3):
        s = (n @ (G.T @ U[:, -1 - i])) * (n @ e)
        assert abs(float(skew[i]) - abs(stats.skew(s))) < 0.03 * abs(stats.skew(s)) + 0.01
