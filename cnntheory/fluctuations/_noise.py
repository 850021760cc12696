r"""Count moments, the noise of one SGD step (`D = Γ Cov(g) Γ^T`) and its skewness.

**Moments of linear forms of the counts, to any order.** The third cumulant of one image's
gradient needs sixth count moments; their `(P,)^6` tensor is too big to form, but only
contractions with a few vectors are ever needed. With `ñ` the pooled counts,

$$E\Big[\prod_{s=1}^k c_s\cdot ñ\Big] = \sum_{\tau} w_\tau(N, a_0) \prod_{T\in\tau} S_T,\qquad
S_T = \sum_p \alpha_p \prod_{s\in T} c_{s,p},$$

over the set partitions `tau` of the `k` slots. Two steps give it: given `rho` the slots
fall on patches (a partition `pi`, `N^{(|pi|)}` falling ways, the multinomial part), and
`rho = G / sum G` with independent `G_p ~ Gamma(alpha_p)` independent of `sum G`, so
`E prod_beta rho . w_beta = E prod_beta G . w_beta / a0^{(b)}` (rising factorial) and the
joint cumulants of linear forms of independent gammas are `(r - 1)! sum_p alpha_p prod w`.
Grouping the pairs `(pi, sigma)` by the coarse partition `tau` they make (`j_T` blocks of
`pi` inside the block `T` of `tau`),

$$w_\tau = \sum_{1 \le j_T \le |T|}\ \frac{N^{\underline b}}{a_0^{\overline b}}
\prod_{T\in\tau} S_2(|T|, j_T)\,(j_T - 1)!,\qquad b = \sum_T j_T,$$

`S_2` the Stirling numbers of the second kind (`/N^k` for mean pooling; the continuum keeps
`j_T = |T|`, `b = k`). Exact, `2^k` sums over atoms and `Bell(k)` products.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._problem import TeacherStudent
from .._typing import AnyArray
from .._validate import require

# --- count moments ---------------------------------------------------------------------


@functools.cache
def _set_partitions(k: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """All set partitions of `{0, ..., k-1}` (Bell(k) of them), blocks in order of first element."""

    def parts(items):
        if not items:
            yield ()
            return
        first, rest = items[0], items[1:]
        for sub in parts(rest):
            yield ((first,),) + sub  # `first` alone
            for i, block in enumerate(sub):  # `first` joins an existing block
                yield sub[:i] + ((first,) + block,) + sub[i + 1 :]

    return tuple(tuple(sorted(p, key=min)) for p in parts(tuple(range(k))))


def _dirichlet_tensor(alpha: Float[Array, " P"], b: int) -> Float[Array, ...]:
    """`E[rho_{c_1} ... rho_{c_b}]` as a `(P,)*b` tensor (rising factorials of `alpha`)."""
    P = alpha.shape[0]
    idx = np.indices((P,) * b)
    num = jnp.ones((P,) * b)
    for r in range(b):
        repeats = sum((idx[s] == idx[r]).astype(float) for s in range(r)) if r else 0.0
        num = num * (alpha[idx[r]] + repeats)
    a0 = jnp.sum(alpha)
    return num / jnp.prod(a0 + jnp.arange(b, dtype=a0.dtype))


def count_moment_tensor(mixture, order: int) -> Float[Array, ...]:
    r"""`E[ñ_{i_1} ... ñ_{i_k}]`, a `(P,)*k` tensor, `k = order` in 1..4.

    `ñ` are the pooled counts (`n` for sum pooling, `n / N` for mean pooling, `rho` in the
    continuum limit): the sum over set partitions of the module docstring. `order=2` is
    `mixture.moments`.
    """
    require(order in (1, 2, 3, 4), f"order must be 1, 2, 3 or 4, got {order!r}")
    alpha = mixture.alpha
    P = alpha.shape[0]
    N = mixture.num_patches
    if N is None:  # continuum: only the all-distinct partition survives N^(b) / N^k
        return _dirichlet_tensor(alpha, order)
    idx = np.indices((P,) * order)
    total = jnp.zeros((P,) * order)
    for pi in _set_partitions(order):
        b = len(pi)
        falling = math.prod(N - j for j in range(b))
        if falling == 0:
            continue
        same = np.ones((P,) * order, dtype=bool)
        for block in pi:
            for s in block[1:]:
                same &= idx[s] == idx[block[0]]
        rho = _dirichlet_tensor(alpha, b)[tuple(idx[block[0]] for block in pi)]
        total = total + falling * jnp.where(same, rho, 0.0)
    return total if mixture.pooling == "sum" else total / float(N) ** order


@functools.cache
def _stirling2(n: int, j: int) -> int:
    """Stirling number of the second kind: partitions of `n` items into `j` non-empty blocks."""
    if n == j:
        return 1
    if j == 0 or j > n:
        return 0
    return j * _stirling2(n - 1, j) + _stirling2(n - 1, j - 1)


@functools.cache
def _form_plan(k: int) -> tuple[np.ndarray, np.ndarray]:
    """For the partitions `tau` of `k` slots: their blocks as bit masks `(Bell(k), k)` (0-padded) and the
    integer coefficients `(Bell(k), k + 1)` of `N^(b) / a0^(b)` in `w_tau` (module docstring)."""
    parts = _set_partitions(k)
    masks = np.zeros((len(parts), k), dtype=np.int64)
    table = np.zeros((len(parts), k + 1))
    for i, tau in enumerate(parts):
        masks[i, : len(tau)] = [sum(1 << s for s in block) for block in tau]
        sizes = [len(block) for block in tau]
        for js in itertools.product(*(range(1, t + 1) for t in sizes)):
            table[i, sum(js)] += math.prod(
                _stirling2(t, j) * math.factorial(j - 1) for t, j in zip(sizes, js, strict=True)
            )
    return masks, table


def linear_form_moment(mixture, vectors: Float[AnyArray, "k P"]) -> Float[Array, ""]:
    r"""`E[prod_s c_s . ñ]` for the rows `c_s` of `vectors`, exactly, any order `k >= 1`.

    The moments of linear forms of the pooled counts (module docstring) without forming the
    `(P,)^k` moment tensor: `sum_tau w_tau prod_T S_T`. For `k <= 4` it is a contraction of
    `count_moment_tensor(mixture, k)`.
    """
    vectors = jnp.asarray(vectors, dtype=float)
    require(
        vectors.ndim == 2 and vectors.shape[0] >= 1 and vectors.shape[1] == mixture.alpha.shape[0],
        f"vectors must have shape (k, P) with k >= 1 and P = {mixture.alpha.shape[0]}, got {vectors.shape}",
    )
    k = vectors.shape[0]
    masks, table = _form_plan(k)
    bits = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(bool)  # subset -> its slots
    prods = jnp.prod(jnp.where(bits[:, :, None], vectors[None], 1.0), axis=1)  # (2^k, P)
    S = (prods @ mixture.alpha).at[0].set(1.0)  # S of the empty block (padding) is 1
    terms = jnp.prod(S[masks], axis=1)
    a0 = jnp.sum(mixture.alpha)
    rising = jnp.cumprod(jnp.concatenate([jnp.ones(1), a0 + jnp.arange(k, dtype=float)]))  # a0^(b), b = 0..k
    N = mixture.num_patches
    if N is None:  # continuum (mean pooling, N -> inf): only b = k survives N^(b) / N^k
        return terms @ jnp.asarray(table[:, k]) / rising[k]
    falling = np.cumprod(np.concatenate([[1.0], N - np.arange(k, dtype=float)]))
    w = jnp.asarray(table) @ (jnp.asarray(falling) / rising)
    scale = 1.0 if mixture.pooling == "sum" else float(N) ** k
    return terms @ w / scale


# --- the noise of one SGD step ----------------------------------------------------------


def drift_map(problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"]) -> Float[Array, "n P"]:
    r"""`Γ(y)`, `(n, P)`: the flow is `F(y) = Γ(y) r` with `r = C (a - b)`.

    One image with pooled counts `ñ` moves `y` by `lr Γ(y) ñ (ñ . e)`.
    """
    sig = problem.sigma
    L, P = m.shape
    dm = -(problem.kernel_lr_multiplier / problem.patch_dim) * (
        v[:, None, None] * sig.derivative(m)[:, :, None] * problem.gram[None, :, :]
    )
    dm = jnp.transpose(dm, (0, 2, 1)).reshape(L * P, P)  # rows (l, r), columns p
    dv = -problem.head_lr_multiplier * sig(m)
    return jnp.concatenate([dm, dv], axis=0)


def _psd_sqrt(X):
    """The symmetric square root of a covariance (eigenvalues clipped at 0; `Sigma = 0` is allowed)."""
    lam, U = jnp.linalg.eigh(0.5 * (X + X.T))
    return (U * jnp.sqrt(jnp.clip(lam, 0.0, None))) @ U.T


def _fourth(problem: TeacherStudent):
    return count_moment_tensor(problem.mixture, 4)


def residual_noise(
    problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"], fourth=None
) -> Float[Array, "P P"]:
    r"""`Cov(g)`, `g = ñ (ñ . e)`: the covariance of one image's residual, `(P, P)`.

    Uses the moment matrix of the mixture (`E[ñ ñ^T]`), i.e. fresh images (online SGD).
    `fourth` passes a precomputed `count_moment_tensor(mixture, 4)`.
    """
    fourth = _fourth(problem) if fourth is None else fourth
    e = problem.student_outputs(m, v) - problem.teacher_outputs()
    second = jnp.einsum("pqij,i,j->pq", fourth, e, e)
    mean = problem.mixture.moments @ e
    return second - jnp.outer(mean, mean)


def gradient_noise(problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"]) -> Float[Array, "n n"]:
    r"""`D(m, v) = Γ Cov(g) Γ^T`, `(n, n)`, `n = L P + L`: per-image covariance of the SGD step.

    One online-SGD step with batch `B` moves the flat state `(m.ravel(), v)` by
    `lr F(y) + lr xi` with `Cov(xi) = D / B` (module docstring). Needs a finite
    `patches_per_side` or the continuum limit (Dirichlet moments).
    """
    require(isinstance(problem, TeacherStudent), f"problem must be a TeacherStudent, got {type(problem).__name__}")
    m = jnp.asarray(m, dtype=float)
    v = jnp.asarray(v, dtype=float)
    problem.check_state(m, v)
    G = drift_map(problem, m, v)
    return G @ residual_noise(problem, m, v) @ G.T


# --- the skewness of the step noise -------------------------------------------------------

#: Noise directions whose variance is at least this fraction of the largest enter the skewness.
SKEW_DIRECTIONS = 0.1


def _step_skewness(problem, m, v, fourth, num_directions: int):
    """`(|skewness|, variance)` of one image's step along the `num_directions` leading eigenvectors of `D`."""
    G = drift_map(problem, m, v)
    lam, U = jnp.linalg.eigh(G @ residual_noise(problem, m, v, fourth) @ G.T)
    lam, U = lam[::-1][:num_directions], U[:, ::-1][:, :num_directions]
    e = problem.student_outputs(m, v) - problem.teacher_outputs()
    mixture = problem.mixture

    def along(u):  # s = (a . ñ)(e . ñ), a = Γ^T u: its first three moments need count moments 2, 4, 6
        a = G.T @ u
        m1 = linear_form_moment(mixture, jnp.stack([a, e]))
        m2 = linear_form_moment(mixture, jnp.stack([a, a, e, e]))
        m3 = linear_form_moment(mixture, jnp.stack([a, a, a, e, e, e]))
        return m3 - 3 * m1 * m2 + 2 * m1**3, m2 - m1**2

    k3, var = jax.vmap(along, in_axes=1)(U)
    var = jnp.clip(var, 0.0, None)
    skew = jnp.where(var > 0, jnp.abs(k3) / jnp.where(var > 0, var, 1.0) ** 1.5, 0.0)
    return skew, lam


def noise_skewness(
    problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"], num_directions: int = 3
) -> tuple[Float[Array, " r"], Float[Array, " r"]]:
    r"""Skewness of one image's SGD step along the leading noise directions: `(|gamma_1|, lambda)`.

    With `u` the eigenvectors of `D = gradient_noise(problem, m, v)` of its `r =
    num_directions` largest eigenvalues `lambda` (descending), `s_u = u . Γ g = (a . ñ)(e . ñ)`
    (`a = Γ^T u`, `e` the per-atom error) and `gamma_1 = kappa_3(s_u) / Var(s_u)^{3/2}`, exact
    from the count moments of orders 2, 4 and 6 (`linear_form_moment`). The mean of `B`
    images has skewness `gamma_1 / sqrt(B)`: the first non-Gaussian correction of the step noise.
    """
    require(isinstance(problem, TeacherStudent), f"problem must be a TeacherStudent, got {type(problem).__name__}")
    m = jnp.asarray(m, dtype=float)
    v = jnp.asarray(v, dtype=float)
    problem.check_state(m, v)
    n = m.size + v.size
    require(
        isinstance(num_directions, (int, np.integer)) and 1 <= num_directions <= n,
        f"num_directions must be an integer in 1..{n} (the state's size), got {num_directions!r}",
    )
    return _step_skewness(problem, m, v, _fourth(problem), int(num_directions))
