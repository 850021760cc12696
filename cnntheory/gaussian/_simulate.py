r"""Simulated online SGD of the convolutional network on Gaussian-patch images, finite `D`.

The network on an image of `N` patches `x_i in R^D` (rows of `patches`):
`f = c sum_l v_l sum_i g(K_l . x_i / sqrt D)` (`c = 1` sum, `1/N` mean pooling) -- the
`1/sqrt(D)` pre-activation of the Gaussian model, not the `1/D` of `cnntheory.simulate`,
which is why this module has its own small `gaussian_network`. Online SGD on `1/2 (f - y)^2`, one
fresh image per step, `K <- K - eta grad_K`, `v <- v - (eta / D) grad_v` (if trained), time
`alpha = step / D`. Teacher and student kernels are built so that `T`, `Q(0)`, `R(0)` hold
exactly at `alpha = 0`; the measured order parameters then converge to the ODE solution
as `D -> infinity`, with fluctuations `O(D^{-1/2})`.

Modes:

- `"online"` (above);
- `"fullbatch"`: a fixed training set of `num_train` images `X^mu` (drawn once per seed) with
  teacher labels `y^mu` (plus `sigma xi^mu` if `noise_std > 0`), full-batch gradient descent
  on the empirical loss `L = 1/(2 num_train) sum_mu (f(X^mu) - y^mu)^2`, with the online
  conventions: `K <- K - eta grad_K L`, `v <- v - (eta / D) grad_v L`, time `alpha = step / D`.
  Each step is an online step with the per-image gradient replaced by its training-set
  average. As `num_train -> infinity` (at fixed `D`) the average becomes the population
  gradient, which depends on `K` only through `(Q, R, v)`: the run then follows the
  **gradient flow** of the population error, i.e. the first-order (`eta`) part of the ODE;
  the `eta^2` terms of the online ODE come from the per-image gradient noise, whose
  contribution is suppressed by `1 / num_train` here (to compare, solve the ODE with `lr`
  scaled by `s -> 0` up to `alpha / s`, as the tests do). At finite `num_train` the
  empirical gradient deviates from the population one by `O(num_train^{-1/2})`, and the
  run over-fits the training set (`train_loss` below `error`).
- `"population"`: the ODE itself (`cnntheory.gaussian.solve`) in the same format.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._activations import get_activation
from .._deprecate import renamed_attribute, renamed_keywords
from .._keys import as_key
from .._trajectory import Status, out_of_bounds
from .._typing import AnyArray
from .._validate import require, require_shape
from ._problem import GaussianTeacherStudent, require_realisable
from ._solve import solve


class GaussianSimulation(eqx.Module):
    """Recorded simulated training, leading seed axis `S` (conventions of `cnntheory.simulate.Simulation`).

    - `t`: `(T,)` times `alpha = step / D` of the records.
    - `Q`: `(S, T, K, K)`, `R`: `(S, T, K, M)`, `v`: `(S, T, K)` measured order parameters.
    - `error`: `(S, T)` the exact generalisation error `problem.error` at the measured state
      (comparable with `GaussianTrajectory.error`; `loss` is the same array).
    - `train_loss`: `(S, T)` online: `1/2 (f - y)^2` on the next image (noisy, one sample);
      fullbatch: the empirical loss `1/(2 num_train) sum_mu (f - y)^2` on the training set.
    - `status`: `(S,)` `Status` codes: `SUCCESS` (0) finished, `DIVERGED` (3) the run's error
      became non-finite or huge (lower `lr`); `message`, `mode`, `dim`, `steps`, `record_every`,
      `num_train` (fullbatch; 0 otherwise; `n_train` is its deprecated old name).
    """

    t: Float[Array, " T"]
    Q: Float[Array, "S T K K"]
    R: Float[Array, "S T K M"]
    v: Float[Array, "S T K"]
    error: Float[Array, "S T"]
    train_loss: Float[Array, "S T"]
    status: Int[Array, " S"]
    message: str = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    record_every: int = eqx.field(static=True)
    num_train: int = eqx.field(static=True, default=0)

    n_train = renamed_attribute("n_train", "num_train")

    @property
    def loss(self):
        return self.error


def gaussian_network(
    K: Float[Array, "L D"], v: Float[Array, " L"], patches: Float[Array, "N D"], activation, pooling_constant
) -> Float[Array, ""]:
    """`c sum_l v_l sum_i g(K_l . x_i / sqrt D)` for one image of patches `(N, D)`."""
    g = get_activation(activation)
    fields = patches @ K.T / jnp.sqrt(K.shape[-1])
    return pooling_constant * jnp.sum(g.fn(fields) @ v)


def kernels_from_overlaps(T, Q0, R0, dim: int, key):
    """Teacher `K*` `(M, D)` and student `K` `(K, D)` with `K* K*^T / D = T`, `K K^T / D = Q0`,
    `K K*^T / D = R0` exactly, in a random orthonormal frame."""
    M, L = T.shape[0], Q0.shape[0]
    require(dim >= M + L, f"dim must be >= {M + L} (teachers + students), got {dim}")
    require_realisable(T, Q0, R0)
    frame, _ = jnp.linalg.qr(jax.random.normal(key, (dim, M + L)))
    U, V = frame[:, :M].T, frame[:, M:].T
    Lt = jnp.linalg.cholesky(T + 1e-300 * jnp.eye(M))
    A = jnp.linalg.solve(Lt, R0.T).T  # A Lt^T = R0
    rest = Q0 - A @ A.T
    w, vecs = jnp.linalg.eigh(rest)
    B = vecs * jnp.sqrt(jnp.maximum(w, 0.0))
    scale = jnp.sqrt(dim)
    return scale * Lt @ U, scale * (A @ U + B @ V)


def _step_fn(problem: GaussianTeacherStudent, Kstar, dim):
    g = get_activation(problem.student_activation)
    gs = get_activation(problem.teacher_activation)
    c, eta, sigma = problem.pool_constant, problem.lr, problem.noise_std
    N, root = problem.num_patches, jnp.sqrt(dim)

    def step(carry, key):
        K, v = carry
        kx, kn = jax.random.split(key)
        x = jax.random.normal(kx, (N, dim))
        lam, nu = x @ K.T / root, x @ Kstar.T / root
        y = c * jnp.sum(gs.fn(nu) @ problem.teacher_head) + sigma * jax.random.normal(kn)
        delta = c * jnp.sum(g.fn(lam) @ v) - y
        grad_K = delta * c * v[:, None] * (g.derivative(lam).T @ x) / root
        K = K - eta * grad_K
        if problem.train_head:
            v = v - (eta / dim) * delta * c * jnp.sum(g.fn(lam), axis=0)
        return (K, v), 0.5 * delta**2

    return step


def _order(K, Kstar, v, dim):
    return K @ K.T / dim, K @ Kstar.T / dim, v


@eqx.filter_jit
def _run(problem, Kstar, K0, v0, key, num_records, record_every):
    dim = K0.shape[-1]
    step = _step_fn(problem, Kstar, dim)

    def record(carry, key):
        carry, losses = jax.lax.scan(step, carry, jax.random.split(key, record_every))
        return carry, (_order(carry[0], Kstar, carry[1], dim), losses[-1])

    _, (orders, losses) = jax.lax.scan(record, (K0, v0), jax.random.split(key, num_records))
    return orders, losses


def teacher_labels(
    problem: GaussianTeacherStudent, Kstar: Float[Array, "M D"], X: Float[Array, "P N D"], key
) -> Float[Array, " P"]:
    """Labels `c sum_m v*_m sum_i g*(nu_mi) + sigma xi` of the images `X` `(P, N, D)`."""
    gs = get_activation(problem.teacher_activation)
    nu = X @ Kstar.T / jnp.sqrt(X.shape[-1])  # (P, N, M)
    clean = problem.pool_constant * jnp.sum(gs.fn(nu) @ problem.teacher_head, axis=-1)
    return clean + problem.noise_std * jax.random.normal(key, clean.shape)


def fullbatch_step(
    problem: GaussianTeacherStudent,
    K: Float[Array, "L D"],
    v: Float[Array, " L"],
    X: Float[Array, "P N D"],
    y: Float[Array, " P"],
):
    """One full-batch gradient step on `1/(2P) sum_mu (f - y)^2`; returns `(K, v, loss)` with
    the loss of the state before the step. The gradient is written out (tested against `jax.grad`):
    `grad_{K_l} = (c v_l / (P sqrt D)) sum_mu Delta^mu sum_i g'(lambda^mu_li) x^mu_i`,
    `grad_{v_l} = (c / P) sum_mu Delta^mu sum_i g(lambda^mu_li)`."""
    g = get_activation(problem.student_activation)
    dim = X.shape[-1]
    c, eta, P = problem.pool_constant, problem.lr, X.shape[0]
    lam = X @ K.T / jnp.sqrt(dim)  # (P, N, L)
    delta = c * jnp.sum(g.fn(lam) @ v, axis=-1) - y  # (P,)
    weights = delta[:, None, None] * g.derivative(lam)  # (P, N, L)
    grad_K = c * v[:, None] * jnp.einsum("pnl,pnd->ld", weights, X) / (P * jnp.sqrt(dim))
    K_new = K - eta * grad_K
    if problem.train_head:
        v = v - (eta / dim) * c * jnp.sum(delta[:, None] * jnp.sum(g.fn(lam), axis=1), axis=0) / P
    return K_new, v, 0.5 * jnp.mean(delta**2)


@eqx.filter_jit
def _run_fullbatch(problem, Kstar, K0, v0, X, y, num_records, record_every):
    dim = K0.shape[-1]

    def step(carry, _):
        K, v, _ = fullbatch_step(problem, carry[0], carry[1], X, y)
        return (K, v), None

    def record(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=record_every)
        loss = fullbatch_step(problem, carry[0], carry[1], X, y)[2]
        return carry, (_order(carry[0], Kstar, carry[1], dim), loss)

    _, (orders, losses) = jax.lax.scan(record, (K0, v0), None, length=num_records)
    return orders, losses, fullbatch_step(problem, K0, v0, X, y)[2]


@renamed_keywords(seeds="num_seeds", n_train="num_train")
def simulate(
    problem: GaussianTeacherStudent,
    Q0: Float[AnyArray, "K K"],
    R0: Float[AnyArray, "K M"],
    v0: Float[AnyArray, " K"],
    *,
    dim: int,
    t1: float,
    num_records: int = 50,
    num_seeds: int = 1,
    key: int | PRNGKeyArray = 0,
    mode: str = "online",
    num_train: int | None = None,
) -> GaussianSimulation:
    """Train the network at dimension `dim` up to `alpha = t1`, `num_seeds` runs (module docstring).

    The runs draw from `key` (a JAX key, or an int seed).

    Records `num_records + 1` states at `alpha = 0, t1 / num_records, ...` (rounded to whole
    steps). `mode="online"`: online SGD; `mode="fullbatch"`: gradient descent on a fixed
    training set of `num_train` images (required there); `mode="population"`: the ODE
    solution in the same format (one "seed").
    """
    require(
        mode in ("online", "fullbatch", "population"),
        f"mode must be 'online', 'fullbatch' or 'population', got {mode!r}",
    )
    if mode == "fullbatch":
        require(
            isinstance(num_train, (int, np.integer)) and not isinstance(num_train, bool) and num_train >= 1,
            f"num_train must be a positive integer (the training-set size) for mode='fullbatch', got {num_train!r}",
        )
    else:
        require(
            num_train is None,
            f"num_train is only used by mode='fullbatch'; got num_train={num_train!r} with mode={mode!r}",
        )
    Q0, R0, v0 = (jnp.asarray(x, dtype=jnp.float64) for x in (Q0, R0, v0))
    L, M = Q0.shape[0], problem.num_teachers
    require_shape("R0", R0, (L, M))
    require_shape("v0", v0, (L,))
    require_realisable(problem.teacher_overlaps, Q0, R0)
    require(
        int(dim) >= 1 and float(t1) > 0 and num_records >= 1 and num_seeds >= 1,
        "dim, t1, num_records and num_seeds must be positive",
    )
    if mode == "population":
        ts = jnp.linspace(0.0, float(t1), num_records + 1)
        tr = solve(problem, Q0, R0, v0, t1, ts=ts)
        return GaussianSimulation(
            ts,
            tr.Q[None],
            tr.R[None],
            tr.v[None],
            tr.error[None],
            tr.error[None],
            tr.status[None],
            tr.message,
            mode,
            int(dim),
            0,
            0,
        )
    key = as_key(key)
    record_every = max(1, int(round(float(t1) * dim / num_records)))
    steps = record_every * num_records
    t = jnp.arange(num_records + 1) * record_every / dim

    def one(k):
        k_init, k_run = jax.random.split(k)
        Kstar, K0 = kernels_from_overlaps(problem.teacher_overlaps, Q0, R0, int(dim), k_init)
        if mode == "fullbatch":
            assert num_train is not None  # checked above
            k_data, k_noise = jax.random.split(k_run)
            X = jax.random.normal(k_data, (int(num_train), problem.num_patches, int(dim)))
            y = teacher_labels(problem, Kstar, X, k_noise)
            (Q, R, v), losses, loss0 = _run_fullbatch(problem, Kstar, K0, v0, X, y, num_records, record_every)
        else:
            (Q, R, v), losses = _run(problem, Kstar, K0, v0, k_run, num_records, record_every)
            loss0 = jnp.nan  # online: the loss of a sample not yet drawn
        Q = jnp.concatenate([(K0 @ K0.T / dim)[None], Q])
        R = jnp.concatenate([(K0 @ Kstar.T / dim)[None], R])
        v = jnp.concatenate([v0[None], v])
        return Q, R, v, jnp.concatenate([jnp.full((1,), loss0), losses])

    outs = [one(k) for k in jax.random.split(key, num_seeds)]
    Q, R, v, train = (jnp.stack(x) for x in zip(*outs, strict=True))
    error = jax.jit(jax.vmap(jax.vmap(problem.error)))(Q, R, v)
    bad = jnp.any(out_of_bounds(jnp.abs(error)), axis=1)
    status = jnp.where(bad, Status.DIVERGED, Status.SUCCESS)
    n_bad = int(bad.sum())
    message = "all runs finished" if n_bad == 0 else f"{n_bad} of {num_seeds} runs diverged: reduce lr"
    return GaussianSimulation(
        t, Q, R, v, error, train, status, message, mode, int(dim), steps, record_every, int(num_train or 0)
    )
