r"""Fixed points of the Gaussian-patch flow and their stability.

The free coordinates are the upper triangle of `Q`, all of `R` and (if the head is trained)
`v`: the flow keeps `Q` symmetric, so perturbing its two triangles separately would only add
spurious directions. `find_fixed_point` polishes a start `(Q, R, v)` into a root of `rhs` with
scipy's hybrid Powell method and the exact `jax.jacfwd` Jacobian; `reduced_flow_jacobian` is that
Jacobian, whose eigenvalues classify the point (the plateau of the committee machine is a
saddle whose unstable subspace is the `(K - 1)^2` symmetry-breaking directions; its
eigenvalue is the escape rate). Identical students (`Q_ii = Q_ij` exactly) form an invariant
manifold that holds, for `eta > 0`, a second symmetric point with more unstable directions
(for `K = M = 3`, unit heads, `T = I`: Morse index 9 against the plateau's 4).

Which point a search found is in `GaussianFixedPoint.point` (see `fixed_point_kind`), with its
Morse index `morse_index`. A start only just off the identical-student manifold can still land
on it: at `K = 3`, `eta = 0.5`, `Q = 1/5 + 0.01 I` finds the identical-student point. To find the
plateau's saddle start on the symmetric manifold with a clear gap, e.g. Saad & Solla's
`eta -> 0` plateau `Q_ij = 1/(2K - 1)`, `R = 1/sqrt(K (2K - 1))` with `Q_ii = Q_ij + 0.1`, and
check that `point` is `"symmetric"`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jaxtyping import Array, Float

from .._typing import AnyArray
from .._validate import require
from ..analysis._fixed_points import _classify
from ._problem import GaussianTeacherStudent


class GaussianFixedPoint(eqx.Module):
    """A stationary point: `Q`, `R`, `v`, its `error`, the Jacobian `eigenvalues` (sorted by
    decreasing real part), `kind` (`"stable"`, `"marginal"`, `"saddle"`, `"unstable"`) and
    `residual = max |F|`, `num_unstable` (the Morse index, also `morse_index`: eigenvalues with
    real part above `eig_tol`), and `point`, which point it is (`fixed_point_kind`)."""

    Q: Float[Array, "K K"]
    R: Float[Array, "K M"]
    v: Float[Array, " K"]
    error: float
    eigenvalues: Array
    kind: str
    residual: float
    num_unstable: int
    point: str = "unclassified"

    @property
    def morse_index(self) -> int:
        """The number of unstable directions (`num_unstable`)."""
        return self.num_unstable


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


def fixed_point_kind(
    problem: GaussianTeacherStudent, Q: Float[AnyArray, "K K"], R: Float[AnyArray, "K M"], v: Float[AnyArray, " K"]
) -> str:
    r"""Which point `(Q, R, v)` is, judged to `1e-6` of the overlaps' scale:

    - `"unrealisable"`: `[[Q, R], [R^T, T]]` is not positive semi-definite (no kernels have
      these overlaps; a root of the formulas, not of the network);
    - `"identical-student"`: every student the same vector (`Q_ij = Q_ii` for all `i, j`, equal
      rows of `R` and equal heads), the invariant manifold of identical students;
    - `"symmetric"`: the students are interchangeable but distinct (one `Q_ii`, one `Q_ij < Q_ii`,
      equal rows of `R`, equal heads): the unspecialised plateau of Saad & Solla;
    - `"specialised"`: each student's largest `|R_ln|` is with a different teacher;
    - `"partially specialised"`: anything else.

    A single student (`K = 1`) is `"specialised"` (to the teacher it overlaps most).
    """
    Q, R, v = (np.asarray(x, dtype=np.float64) for x in (Q, R, v))
    T = np.asarray(problem.teacher_overlaps)
    C = np.block([[Q, R], [R.T, T]])
    scale = max(1.0, float(np.max(np.abs(C))))
    if float(np.linalg.eigvalsh(C).min()) < -1e-10 * scale:
        return "unrealisable"
    tol = 1e-6 * scale
    K = Q.shape[0]
    same_rows = np.ptp(R, axis=0).max() <= tol and np.ptp(v) <= tol * max(1.0, float(np.max(np.abs(v))))
    off = Q[~np.eye(K, dtype=bool)]
    if K > 1 and same_rows and np.ptp(Q) <= tol:
        return "identical-student"
    if K > 1 and same_rows and np.ptp(np.diag(Q)) <= tol and np.ptp(off) <= tol:
        return "symmetric"
    best = np.argmax(np.abs(R), axis=1)
    if K <= R.shape[1] and len(set(best.tolist())) == K:
        return "specialised"
    return "partially specialised"


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


def _packed(problem, y, v):
    pack, unpack = _packing(problem, v.shape[0])
    return pack(*problem.rhs(*unpack(y, v)))


# Module-level programs: compiled once per problem structure and shape (the learning rate is
# an array leaf), not once per search.
_packed_field = eqx.filter_jit(_packed)
_packed_jacobian = eqx.filter_jit(jax.jacfwd(_packed, argnums=1))


def find_fixed_point(
    problem: GaussianTeacherStudent, Q, R, v, *, tol: float = 1e-10, eig_tol: float = 1e-9
) -> GaussianFixedPoint:
    """Polish `(Q, R, v)` into a fixed point of `problem.rhs`; raises `ValueError` if the
    residual stays above `tol` (start closer, or the flow has no fixed point nearby).

    The result says which point it found (`point`, e.g. `"symmetric"` or `"identical-student"`)
    and its Morse index (`morse_index`): a search near the plateau can land on the
    identical-student point instead (module docstring)."""
    Q, R, v = (jnp.asarray(x, dtype=jnp.float64) for x in (Q, R, v))
    K = Q.shape[0]
    pack, unpack = _packing(problem, K)
    field = lambda y: _packed_field(problem, jnp.asarray(y), v)
    jac = lambda y: _packed_jacobian(problem, jnp.asarray(y), v)
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
        Qf,
        Rf,
        vf,
        float(problem.error(Qf, Rf, vf)),
        jnp.asarray(eig),
        _classify(eig, eig_tol),
        residual,
        unstable,
        fixed_point_kind(problem, Qf, Rf, vf),
    )
