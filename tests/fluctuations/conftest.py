"""Problems and an independent online-SGD reference shared by the tests of `cnntheory.fluctuations`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnntheory as ct


def make_random_problem(seed, P=3, L=2, M=2, pooling="sum", activation="softplus", k=3, teacher="tanh", scale=0.5):
    """A random Gram matrix, teacher head and teacher (tanh: the labels are generic)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, P + 2))
    gram = X @ X.T / (P + 2)
    gram = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    mixture = ct.PatchMixture(ct.atoms_from_gram(gram, k, key=seed), rng.uniform(0.5, 2.0, P), M, pooling)
    problem = ct.TeacherStudent(
        mixture,
        rng.standard_normal(P),
        teacher_activation=teacher,
        student_activation=activation,
        kernel_lr_multiplier=float(k * k),
        head_lr_multiplier=1.0,
    )
    m0 = scale * rng.standard_normal((L, P))
    v0 = scale * rng.standard_normal(L)
    return problem, jnp.asarray(m0), jnp.asarray(v0)


@pytest.fixture(scope="session")
def random_problem():
    return make_random_problem


@pytest.fixture(scope="session")
def shape_problem():
    def make(activation="softplus", v=0.3):
        problem = ct.shape_counting(0.8, (1.0, 1.0), activation, 4, "mean")
        return problem, jnp.array([[0.3, 0.25], [0.2, 0.28]]), jnp.array([v, -v])

    return make


@pytest.fixture(scope="session")
def stiff_problem():
    """The stiff problem of issue 21's kind: P = 4 atoms, 2x2 patches of side 3, mean pooling, L = 3,
    softplus teacher, eta_K = 9, eta_v = 1; stability edge lr ~ 1.05 along the path (softplus student)."""

    def make(activation="softplus", seed=5):
        return make_random_problem(seed, P=4, L=3, M=2, pooling="mean", activation=activation, teacher="softplus")

    return make


@eqx.filter_jit
def _sgd_step(problem, teacher_K, K, v, x, lr):
    """One online-SGD step of every seed on its batch `x` `(S, B, N, D)` of patches."""
    D = x.shape[-1]
    scale = 1.0 if problem.mixture.pooling == "sum" else 1.0 / x.shape[-2]

    def output(K, v, x, act):  # x (B, N, D) -> (B,)
        return scale * jnp.sum(act(jnp.einsum("ld,bnd->bln", K, x) / D), -1) @ v

    def loss(K, v, x):
        y = output(teacher_K, problem.teacher_head, x, problem.phi.fn)
        return 0.5 * jnp.mean((output(K, v, x, problem.sigma.fn) - y) ** 2)

    gK, gv = jax.vmap(jax.grad(loss, argnums=(0, 1)))(K, v, x)
    return K - lr * problem.kernel_lr_multiplier * gK, v - lr * problem.head_lr_multiplier * gv


def _independent_sgd(problem, m0, v0, *, lr, batch_size, steps, record_every, num_seeds, seed):
    """Online SGD written from the definitions, independent of the theory and of `simulate`.

    Images are drawn with numpy (rho ~ Dirichlet(alpha), every patch an atom drawn from rho),
    the kernels `K (L, D)` and head `v` are trained by `jax.grad` of the batch's mean squared
    error of the real pooled CNN output, and the order parameters are read off as
    `K atoms^T / D`. Returns `(S, R, n)` flat states at the records `k = record_every, 2 record_every, ...`.
    """
    mixture = problem.mixture
    atoms = np.asarray(mixture.atoms)
    P, D = atoms.shape
    N = mixture.num_patches
    rng = np.random.default_rng(seed)
    ginv = np.linalg.inv(np.asarray(problem.gram))
    teacher_K = jnp.asarray(np.asarray(problem.teacher_overlaps) @ ginv @ atoms)  # K* atoms^T / D = m*
    K0 = np.asarray(m0) @ ginv @ atoms  # K0 atoms^T / D = m0
    K = jnp.broadcast_to(jnp.asarray(K0), (num_seeds,) + K0.shape)
    v = jnp.broadcast_to(jnp.asarray(v0), (num_seeds, v0.shape[0]))
    out = []
    for k in range(1, steps + 1):
        rho = rng.dirichlet(np.asarray(mixture.alpha), size=(num_seeds, batch_size))
        u = rng.random((num_seeds, batch_size, N, 1))
        idx = np.minimum((u > np.cumsum(rho, -1)[:, :, None, :]).sum(-1), P - 1)  # the atom of every patch
        K, v = _sgd_step(problem, teacher_K, K, v, jnp.asarray(atoms[idx]), jnp.asarray(lr))
        if k % record_every == 0:
            m = K @ jnp.asarray(atoms).T / D
            out.append(np.concatenate([np.asarray(m).reshape(num_seeds, -1), np.asarray(v)], axis=1))
    return np.stack(out, axis=1)


@pytest.fixture(scope="session")
def independent_sgd():
    return _independent_sgd
