r"""Fixed points of the Gaussian-patch flow and their stability.

The free coordinates are the upper triangle of `Q`, all of `R` and (if the head is trained)
`v`: the flow keeps `Q` symmetric, so perturbing its two triangles separately would only add
spurious directions. `find_fixed_point` polishes a start `(Q, R, v)` into a root of `rhs` with
scipy's hybrid Powell method and the exact `jax.jacfwd` Jacobian; `reduced_flow_jacobian` is that
Jacobian, whose eigenvalues classify the point (the plateau of the committee machine is a
saddle whose unstable subspace is the `(K - 1)^2` symmetry-breaking directions; its
eigenvalue is the escape rate). Identical students (`Q_ii = Q_ij` exactly) form an invariant
manifold that holds, for `eta > 0`, a second symmetric point with more unstable directions:
start a search with `Q_ii > Q_ij` to find the plateau's saddle.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jaxtyping import Array, Float

from .._validate import require
from ..analysis._fixed_points import _classify
from ._problem import GaussianTeacherStudent


class GaussianFixedPoint(eqx.Module):
    """A stationary point: `Q`, `R`, `v`, its `error`, the Jacobian `eigenvalues` (sorted by
    decreasing real part), `kind` (`"stable"`, `"marginal"`, `"saddle"`, `"unstable"`) and
    `residual = max |F|`, `num_unstable` (the Morse index: eigenvalues with real part above `eig_tol`)."""

    Q: Float[Array, "K K"]
    R: Float[Array, "K M"]
    v: Float[Array, " K"]
    error: float
    eigenvalues: Array
    kind: str
    residual: float
    num_unstable: int


def _packing(problem, K):
    M = problem.num_teachers
    iu = np.triu_indices(K)

    def pack(Q, R, v):
        parts = [Q[iu], R.ravel()] + ([v] if problem.train_head else [])
        return jnp.concatenate(parts)

    def unpack(y, v_fixed):
        nq = len(iu[0])
        upper = jnp.zeros((K, K)).at[iu].set(y[:nq])
        Q = upper + upper.T - jnp.diag(jnp.diag(upper))
        R = y[nq : nq + K * M].reshape(K, M)
        v = y[nq + K * M :] if problem.train_head else v_fixed
        return Q, R, v

    return pack, unpack


def reduced_flow_jacobian(problem: GaussianTeacherStudent, Q, R, v) -> Float[Array, "n n"]:
    """The Jacobian of the flow in the free coordinates `(triu Q, vec R[, v])`.

    "Reduced": `Q` is symmetric, so only its upper triangle is a coordinate, and `v` is one
    only when the head is trained (`cnntheory.analysis.flow_jacobian` is the Jacobian of
    the Dirac-mixture flow in all of `(vec m, v)`).
    """
    K = Q.shape[0]
    pack, unpack = _packing(problem, K)
    v = jnp.asarray(v, dtype=jnp.float64)
    return jax.jacfwd(lambda y: pack(*problem.rhs(*unpack(y, v))))(pack(jnp.asarray(Q), jnp.asarray(R), v))


def find_fixed_point(
    problem: GaussianTeacherStudent, Q, R, v, *, tol: float = 1e-10, eig_tol: float = 1e-9
) -> GaussianFixedPoint:
    """Polish `(Q, R, v)` into a fixed point of `problem.rhs`; raises `ValueError` if the
    residual stays above `tol` (start closer, or the flow has no fixed point nearby)."""
    Q, R, v = (jnp.asarray(x, dtype=jnp.float64) for x in (Q, R, v))
    K = Q.shape[0]
    pack, unpack = _packing(problem, K)
    field = jax.jit(lambda y: pack(*problem.rhs(*unpack(y, v))))
    jac = jax.jit(jax.jacfwd(lambda y: pack(*problem.rhs(*unpack(y, v)))))
    sol = scipy.optimize.root(
        lambda y: np.asarray(field(y)),
        np.asarray(pack(Q, R, v)),
        jac=lambda y: np.asarray(jac(y)),
        method="hybr",
        tol=1e-14,
    )
    y = jnp.asarray(sol.x)
    residual = float(jnp.max(jnp.abs(field(y))))
    require(
        residual < tol,
        f"no fixed point found from this start (residual {residual:.2e} > tol={tol:g}): start closer to one",
    )
    eig = np.linalg.eigvals(np.asarray(jac(y)))
    eig = eig[np.argsort(-eig.real)]
    Qf, Rf, vf = unpack(y, v)
    unstable = int(np.sum(eig.real > eig_tol))
    return GaussianFixedPoint(
        Qf, Rf, vf, float(problem.error(Qf, Rf, vf)), jnp.asarray(eig), _classify(eig, eig_tol), residual, unstable
    )
