"""Count moments to fourth order and the noise of one SGD step (`D = Γ Cov(g) Γ^T`)."""

from __future__ import annotations

import functools
import math

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
