"""`find_fixed_point` and `reduced_flow_jacobian` (`cnntheory.gaussian._fixed_points`) against Saad & Solla's
symmetric plateau of the soft committee machine (closed form in tests/helpers_gaussian.py): the
fixed point found next to the symmetric point tends to their plateau error as eta -> 0, with an
O(eta) shift, and the Jacobian has the size of the free coordinates (upper triangle of Q, then R).
The search says which point it found (identical-student, symmetric, specialised) and its Morse
index, checked against finite differences of the flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_gaussian import near_symmetric_point, plateau_height, symmetric_point

from cnntheory.gaussian import GaussianTeacherStudent, find_fixed_point, reduced_flow_jacobian
from cnntheory.gaussian._fixed_points import fixed_point_kind


@pytest.mark.slow
def test_fixed_point_tends_to_saad_solla_as_eta_vanishes():
    K = 3
    errs = []
    for eta in (1e-2, 1e-3):
        p = GaussianTeacherStudent(1, np.ones(K), np.eye(K), lr=eta)
        fp = find_fixed_point(p, *near_symmetric_point(K))
        errs.append(abs(fp.error / plateau_height(K) - 1))
        J = np.asarray(reduced_flow_jacobian(p, fp.Q, fp.R, fp.v))
        assert J.shape == (K * (K + 1) // 2 + K * K,) * 2
    # The shift is O(eta): ten times smaller eta, about ten times smaller shift.
    assert errs[1] < 0.15 * errs[0] and errs[1] < 2e-3


def _finite_difference_morse_index(p, fp, h=1e-6):
    """Unstable directions of the flow at `fp`, by central differences in the free coordinates
    (upper triangle of Q, then R), independent of the package's `jax.jacfwd` Jacobian."""
    K = fp.Q.shape[0]
    iu = np.triu_indices(K)
    rhs = jax.jit(lambda Q, R, v: p.rhs(Q, R, v))

    def field(y):
        upper = np.zeros((K, K))
        upper[iu] = y[: len(iu[0])]
        Q = upper + upper.T - np.diag(np.diag(upper))
        dQ, dR, _ = rhs(jnp.asarray(Q), jnp.asarray(y[len(iu[0]) :].reshape(K, -1)), fp.v)
        return np.concatenate([np.asarray(dQ)[iu], np.asarray(dR).ravel()])

    y0 = np.concatenate([np.asarray(fp.Q)[iu], np.asarray(fp.R).ravel()])
    J = np.stack([(field(y0 + h * e) - field(y0 - h * e)) / (2 * h) for e in np.eye(y0.size)], axis=1)
    return int(np.sum(np.linalg.eigvals(J).real > 1e-6))


@pytest.mark.slow
@pytest.mark.parametrize("eta", [0.1, 0.5])
def test_which_point_the_search_found(eta):
    """K = 3 at eta = 0.1 and 0.5: a start just off the identical-student manifold lands on the
    identical-student point (Morse index 9) and says so; the advised start (a gap of 0.1) finds the
    plateau's symmetric saddle, Morse index (K - 1)^2 = 4; the specialised point is stable."""
    K = 3
    p = GaussianTeacherStudent(1, np.ones(K), np.eye(K), lr=eta)
    Qs, Rs = symmetric_point(K)
    near = find_fixed_point(p, Qs + 0.01 * jnp.eye(K), Rs, jnp.ones(K))
    assert near.point == "identical-student" and near.morse_index == near.num_unstable == 9
    np.testing.assert_allclose(np.asarray(near.Q), float(near.Q[0, 0]), rtol=1e-8)  # all entries equal
    advised = find_fixed_point(p, Qs + 0.1 * jnp.eye(K), Rs, jnp.ones(K))
    assert advised.point == "symmetric" and advised.morse_index == (K - 1) ** 2 and advised.kind == "saddle"
    assert float(advised.Q[0, 0] - advised.Q[0, 1]) > 0.01  # distinct students
    assert advised.error < near.error  # the plateau lies below the identical-student point
    assert _finite_difference_morse_index(p, advised) == 4
    assert _finite_difference_morse_index(p, near) == 9
    spec = find_fixed_point(p, 0.9 * jnp.eye(K), 0.9 * jnp.eye(K), jnp.ones(K))
    assert spec.point == "specialised" and spec.morse_index == 0 and abs(spec.error) < 1e-12


def test_fixed_point_kind_on_constructed_points():
    p = GaussianTeacherStudent(1, np.ones(2), np.eye(2))
    ones = jnp.ones(2)
    assert fixed_point_kind(p, jnp.full((2, 2), 0.3), jnp.full((2, 2), 0.35), ones) == "identical-student"
    assert fixed_point_kind(p, jnp.array([[0.5, 0.2], [0.2, 0.5]]), jnp.full((2, 2), 0.4), ones) == "symmetric"
    assert fixed_point_kind(p, jnp.eye(2), jnp.eye(2), ones) == "specialised"
    assert fixed_point_kind(p, jnp.eye(2), jnp.array([[0.6, 0.0], [0.5, 0.1]]), ones) == "partially specialised"
    # Overlaps no kernels have (R above sqrt(Q T)).
    assert fixed_point_kind(p, 0.1 * jnp.eye(2), jnp.eye(2), ones) == "unrealisable"
    assert fixed_point_kind(p, jnp.array([[0.5, 0.2], [0.2, 0.5]]), jnp.full((2, 2), 0.4), jnp.array([1.0, 0.5])) == (
        "partially specialised"
    )
