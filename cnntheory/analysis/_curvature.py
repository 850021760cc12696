r"""Curvature of the population loss in parameter space: Hessian, sharpness, landscapes.

Parameters are the kernels `K` (`(L, D)`) and the head `v` (`(L,)`); the loss depends on
`K` only through `m = K mu^T / D`:

$$\mathcal L(K, v) = \mathcal L_{\rm op}(K\mu^\top / D,\; v).$$

Its Hessian (`jax.hessian`, exact: no minibatch, unlike the power iteration usually run on minibatches) is
`(L D + L) x (L D + L)`. The part of `K` orthogonal to the atoms never changes the loss,
so its directions are exact zero modes; a state `(m, v)` is lifted to parameters by the
in-span kernels `K = m G^+ mu` (`kernels_from_order`), plus an optional fixed `K_perp`.

**Sharpness** is the top Hessian eigenvalue. With `metric="lr"` it is the top eigenvalue
of `Lambda^{1/2} H Lambda^{1/2}` (`Lambda = diag(eta_K, ..., eta_v, ...)`): gradient
descent with step `lr` is linearly stable at a minimum iff `lr * sharpness < 2`.

**Stability edge.** Gradient descent with the problem's multipliers is the map
`theta -> theta - lr Lambda grad L(theta)`. Near a state, a perturbation `delta` obeys
`delta -> (I - lr Lambda H) delta`; `Lambda H` is similar to `Lambda^{1/2} H Lambda^{1/2}`
(same eigenvalues `lambda_i`), so every mode contracts or stays iff `|1 - lr lambda_i| <= 1`,
that is iff

$$\mathrm{lr} < \mathrm{lr}_{\rm edge} = \frac{2}{\lambda_{\max}(\Lambda^{1/2} H \Lambda^{1/2})},$$

`stability_edge` (infinite when no eigenvalue is positive). Away from a minimum it is the
edge of the local quadratic model: a step far past it overshoots the curvature it sees.

A **landscape** is the loss on the plane `theta + a d_1 + b d_2` around a state, with
random directions normalised filter-wise (Li et al. 2018: each unit's slice of a direction
scaled to that unit's norm) or directions given.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._problem import TeacherStudent
from .._trajectory import Trajectory
from .._typing import AnyArray
from .._validate import require
from ._filters import kernels_from_order


def parameter_loss(problem: TeacherStudent, K: Float[AnyArray, "L D"], v: Float[AnyArray, " L"]) -> Float[Array, ""]:
    """The population loss as a function of the network parameters `(K, v)`."""
    return problem.loss(problem.mixture.overlaps(K), v)


def _flat_params(K, v):
    return jnp.concatenate([K.ravel(), v])


def _unflat_params(theta, L, D):
    return theta[: L * D].reshape(L, D), theta[L * D :]


def hessian(
    problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"], K_perp=None
) -> Float[Array, "n n"]:
    """Hessian of `parameter_loss` at the in-span lift of `(m, v)` (flat order `(vec K, v)`)."""
    L, D = m.shape[0], problem.patch_dim
    K = kernels_from_order(problem, m) + (0.0 if K_perp is None else K_perp)
    f = lambda theta: parameter_loss(problem, *_unflat_params(theta, L, D))
    return jax.hessian(f)(_flat_params(K, v))


def _metric(problem, L):
    D = problem.patch_dim
    return jnp.concatenate([jnp.full(L * D, problem.kernel_lr_multiplier), jnp.full(L, problem.head_lr_multiplier)])


@eqx.filter_jit
def _top_eigenvalues(problem, m, v, K_perp, scaled):
    def one(m, v):
        H = hessian(problem, m, v, K_perp)
        if scaled:
            s = jnp.sqrt(_metric(problem, m.shape[0]))
            H = s[:, None] * H * s[None, :]
        return jnp.linalg.eigvalsh(H)[-1]

    return jax.vmap(one)(m, v)


def sharpness(
    problem: TeacherStudent, traj: Trajectory, K_perp=None, *, metric: str = "euclidean"
) -> Float[Array, " T"]:
    """Top Hessian eigenvalue at every saved state of a single trajectory.

    `metric="euclidean"`: of `H`; `"lr"`: of `Lambda^{1/2} H Lambda^{1/2}` (module docstring).
    """
    require(metric in ("euclidean", "lr"), f"metric must be 'euclidean' or 'lr', got {metric!r}")
    require(traj.m.ndim == 3, f"sharpness takes one trajectory (m of shape (T, L, P)), got {traj.m.shape}")
    return _top_eigenvalues(problem, traj.m, traj.v, K_perp, metric == "lr")


def stability_edge(problem: TeacherStudent, m: Float[AnyArray, "L P"], v: Float[AnyArray, " L"], K_perp=None) -> float:
    """Largest stable gradient-descent step at `(m, v)`: `2 / lambda_max(Lambda^{1/2} H Lambda^{1/2})`.

    `lr` is the step of `cnntheory.simulate` (ODE time per step, with the problem's
    `eta_K`, `eta_v`); see the module docstring for the derivation.
    """
    m, v = jnp.asarray(m, dtype=float), jnp.asarray(v, dtype=float)
    require(m.ndim == 2 and v.shape == (m.shape[0],), f"need m (L, P) and v (L,), got shapes {m.shape}, {v.shape}")
    top = float(_top_eigenvalues(problem, m[None], v[None], K_perp, True)[0])
    return 2.0 / top if top > 0 else float("inf")


class Landscape(eqx.Module):
    """Loss on a plane: `loss[i, j]` at `theta + a[i] d1 + b[j] d2`; `directions` `(2, n)`."""

    a: Float[Array, " n"]
    b: Float[Array, " n"]
    loss: Float[Array, "n n"]
    directions: Float[Array, "2 N"]


def _filter_normalise(d, theta, L, D):
    dK, dv = _unflat_params(d, L, D)
    K, v = _unflat_params(theta, L, D)
    dK = dK * (
        jnp.linalg.norm(K, axis=1, keepdims=True) / jnp.maximum(jnp.linalg.norm(dK, axis=1, keepdims=True), 1e-300)
    )
    dv = dv * (jnp.linalg.norm(v) / jnp.maximum(jnp.linalg.norm(dv), 1e-300))
    return _flat_params(dK, dv)


def landscape(
    problem: TeacherStudent,
    m: Float[AnyArray, "L P"],
    v: Float[AnyArray, " L"],
    *,
    directions: Float[AnyArray, "2 N"] | None = None,
    key: PRNGKeyArray | None = None,
    extent: float = 1.0,
    n: int = 41,
    K_perp=None,
) -> Landscape:
    """The loss on a 2-D slice through the parameters of `(m, v)` (module docstring).

    `directions`: two flat parameter directions `(2, L D + L)` used as given; otherwise
    two Gaussian directions from `key`, filter-normalised. `a`, `b` span `[-extent, extent]`
    with `n` points each (odd `n` puts the state itself at the centre).
    """
    L, D = m.shape[0], problem.patch_dim
    theta = _flat_params(
        kernels_from_order(problem, jnp.asarray(m)) + (0.0 if K_perp is None else K_perp), jnp.asarray(v, dtype=float)
    )
    if directions is None:
        key = jax.random.PRNGKey(0) if key is None else key
        raw = jax.random.normal(key, (2, theta.size))
        directions = jnp.stack([_filter_normalise(d, theta, L, D) for d in raw])
    directions = jnp.asarray(directions, dtype=float)
    require(
        directions.shape == (2, theta.size),
        f"directions must have shape (2, L*D + L) = (2, {theta.size}), got {directions.shape}",
    )
    grid = jnp.linspace(-extent, extent, n)
    f = lambda a, b: parameter_loss(problem, *_unflat_params(theta + a * directions[0] + b * directions[1], L, D))
    loss = jax.vmap(lambda a: jax.vmap(lambda b: f(a, b))(grid))(grid)
    return Landscape(grid, grid, loss, directions)


def hessian_spectrum(problem: TeacherStudent, m, v, K_perp=None) -> np.ndarray:
    """All Hessian eigenvalues at `(m, v)`, decreasing."""
    return np.sort(np.linalg.eigvalsh(np.asarray(hessian(problem, jnp.asarray(m), jnp.asarray(v), K_perp))))[::-1]
